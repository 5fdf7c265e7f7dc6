/**
 * Terminal output for people: colour only on a terminal (never with NO_COLOR, TERM=dumb, or when
 * the output is a pipe or a file), and a progress line on stderr for anything that waits, drawn
 * only when stderr is a terminal so that logs and pipes never see it.
 */
import type { Writable } from 'node:stream';

/** A stream that may be a terminal. */
type MaybeTty = Writable & { isTTY?: boolean };

/**
 * True when colour should be used on `stream` (https://no-color.org: NO_COLOR set to anything
 * non-empty turns it off).
 */
export function useColor(
  stream: MaybeTty,
  env: Readonly<Record<string, string | undefined>>,
): boolean {
  if (env['NO_COLOR'] !== undefined && env['NO_COLOR'] !== '') return false;
  if (env['TERM'] === 'dumb') return false;
  return stream.isTTY === true;
}

/** ANSI styles, or identity functions when colour is off. */
export interface Styles {
  readonly green: (s: string) => string;
  readonly yellow: (s: string) => string;
  readonly red: (s: string) => string;
  readonly bold: (s: string) => string;
  readonly dim: (s: string) => string;
}

/** Styles for colour on or off. */
export function styles(color: boolean): Styles {
  const sgr =
    (open: number, close: number) =>
    (s: string): string =>
      color ? `\u001b[${open}m${s}\u001b[${close}m` : s;
  return {
    green: sgr(32, 39),
    yellow: sgr(33, 39),
    red: sgr(31, 39),
    bold: sgr(1, 22),
    dim: sgr(2, 22),
  };
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/**
 * A one-line spinner with a message ("checking the CA…"), redrawn in place on a terminal; a no-op
 * elsewhere.
 */
export class ProgressLine {
  readonly #stream: MaybeTty;
  readonly #enabled: boolean;
  #text = '';
  #frame = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(stream: MaybeTty, env: Readonly<Record<string, string | undefined>>) {
    this.#stream = stream;
    this.#enabled = stream.isTTY === true && env['TERM'] !== 'dumb';
  }

  /** Shows `text` as what is being waited for now. */
  update(text: string): void {
    if (!this.#enabled) return;
    this.#text = text;
    this.#draw();
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#draw(), 100);
      this.#timer.unref();
    }
  }

  /** Removes the line. */
  done(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#enabled && this.#text !== '') this.#stream.write('\r\u001b[K');
    this.#text = '';
  }

  #draw(): void {
    this.#frame = (this.#frame + 1) % FRAMES.length;
    this.#stream.write(`\r\u001b[K${FRAMES[this.#frame]} ${this.#text}…`);
  }
}
