/**
 * What the application behind the inbound speaks, per port: set by `--app-protocol`, or learned
 * once from the app (`detect`) and cached.
 *
 * Detection sends the HTTP/2 connection preface and an empty SETTINGS frame (what an h2c client
 * with prior knowledge sends first) and reads the first answer: a SETTINGS frame means the app
 * speaks HTTP/2; anything else (an HTTP/1 error such as 400 or 505, a close, a reset, silence)
 * means HTTP/1.1. A server that speaks both (Go's h2c handler, a dual node server) is taken as
 * HTTP/2, which carries everything HTTP/1.1 does plus trailers. A failed probe (app not up yet)
 * is not cached: the next request probes again.
 */
import { connect as netConnect } from 'node:net';
import type { Address } from '../core/index.js';
import { MeshidError, formatAddress } from '../core/index.js';
import { HTTP2_PREFACE } from './detect.js';

/** What the inbound does with a port's traffic. */
export type AppProtocol = 'http1' | 'h2' | 'detect' | 'opaque';

/** A protocol the inbound can act on: what `detect` resolves to. */
export type ResolvedAppProtocol = Exclude<AppProtocol, 'detect'>;

const PROTOCOLS: readonly AppProtocol[] = ['http1', 'h2', 'detect', 'opaque'];

/** The app's ports the inbound may forward to, and what each speaks. */
export type AppPorts = ReadonlyMap<number, AppProtocol>;

/**
 * Parses `--app-protocol` entries: `PROTOCOL` (the `--app` port) or `PORT=PROTOCOL` (another port
 * of the same app, which the inbound may then route to, e.g. by Linkerd's transport header). The
 * `--app` port is always in the result (default `detect`).
 * @throws MeshidError ERR_CONFIG_INVALID naming the entry.
 */
export function parseAppProtocols(appPort: number, entries: readonly string[]): AppPorts {
  const out = new Map<number, AppProtocol>([[appPort, 'detect']]);
  const seen = new Set<number>();
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    const portText = eq === -1 ? String(appPort) : entry.slice(0, eq);
    const protocol = (eq === -1 ? entry : entry.slice(eq + 1)) as AppProtocol;
    const port = Number(portText);
    if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `--app-protocol "${entry}": the port must be 1-65535`,
      );
    }
    if (!PROTOCOLS.includes(protocol)) {
      throw new MeshidError(
        'ERR_CONFIG_INVALID',
        `--app-protocol "${entry}": the protocol must be one of ${PROTOCOLS.join(', ')}`,
      );
    }
    if (seen.has(port)) {
      throw new MeshidError('ERR_CONFIG_INVALID', `--app-protocol: port ${port} is given twice`);
    }
    seen.add(port);
    out.set(port, protocol);
  }
  return out;
}

/** The 9-byte header of an empty SETTINGS frame on stream 0. */
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
const SETTINGS_TYPE = 4;

/**
 * Learns once per port whether the app speaks HTTP/2 (h2c prior knowledge) or HTTP/1.1.
 */
export class AppProtocolDetector {
  readonly #timeoutMs: number;
  readonly #learned = new Map<number, Promise<'http1' | 'h2'>>();

  constructor(options: { readonly timeoutMs: number }) {
    this.#timeoutMs = options.timeoutMs;
  }

  /** The protocol to use for `app`: `configured` unless it is `detect`. Rejects when unreachable. */
  resolve(
    app: Address,
    configured: AppProtocol,
  ): Promise<ResolvedAppProtocol> | ResolvedAppProtocol {
    if (configured !== 'detect') return configured;
    let learning = this.#learned.get(app.port);
    if (learning === undefined) {
      learning = probe(app, this.#timeoutMs);
      this.#learned.set(app.port, learning);
      learning.catch(() => this.#learned.delete(app.port));
    }
    return learning;
  }

  /** What was learned for a port, if it was. */
  known(port: number): Promise<'http1' | 'h2'> | undefined {
    return this.#learned.get(port);
  }
}

/** One probe connection; resolves with what the app answered, rejects if it cannot connect. */
function probe(app: Address, timeoutMs: number): Promise<'http1' | 'h2'> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: app.host, port: app.port });
    let connected = false;
    let got = Buffer.alloc(0);
    const done = (answer: 'http1' | 'h2'): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => (connected ? done('http1') : socket.destroy()), timeoutMs);
    socket.once('connect', () => {
      connected = true;
      socket.write(Buffer.concat([HTTP2_PREFACE, EMPTY_SETTINGS]));
    });
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < 9) return;
      // A SETTINGS frame on stream 0 is an HTTP/2 server's first frame.
      const isSettings =
        got[3] === SETTINGS_TYPE && (got.readUInt32BE(5) & 0x7fffffff) === 0 && got[4] === 0;
      done(isSettings ? 'h2' : 'http1');
    });
    socket.on('error', (err) => {
      if (connected) done('http1');
      else {
        clearTimeout(timer);
        reject(err);
      }
    });
    socket.on('close', () => {
      if (connected) done('http1');
      else {
        clearTimeout(timer);
        reject(new Error(`connect to ${formatAddress(app)} failed`));
      }
    });
  });
}
