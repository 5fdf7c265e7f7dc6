/**
 * Reading the code out of a documentation page: its fenced blocks; for the tests that run a page,
 * its steps (the fenced `sh` blocks, with `terminal ready=URL` for a long-running process and
 * `exit=N` for the promised exit status, each with the `text` block after it as its promised
 * output); and a matcher for that output (`…` stands for anything within a line).
 */
import { strict as assert } from 'node:assert';

/** One step of the page. */
export interface DocStep {
  readonly code: string;
  /** A long-running process and the URL that answers 200 once it is up. */
  readonly terminal?: { readonly ready: string };
  readonly exit: number;
  /** The promised output, if the page shows one. */
  readonly expect?: string;
}

/** A fenced code block of a page. */
export interface FencedBlock {
  /** The word after the fence (`sh`, `text`; empty when none). */
  readonly lang: string;
  /** The rest of the info string (`terminal ready=URL`, `exit=N`). */
  readonly info: string;
  /** The lines between the fences, without the fence's indentation. */
  readonly body: string;
}

// Fences may be indented (inside a list item); the closing fence has the same indentation.
const FENCE = /^( *)```(\w*)([^\n]*)\n([\s\S]*?)^\1```$/gm;

/** A page's fenced code blocks, in order. */
export function fencedBlocks(markdown: string): FencedBlock[] {
  return [...markdown.matchAll(FENCE)].map((m) => {
    const [, indent, lang, info, indented] = m as unknown as [
      string,
      string,
      string,
      string,
      string,
    ];
    const body = indented
      .split('\n')
      .map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l))
      .join('\n');
    return { lang, info, body };
  });
}

/** A page without its fenced code blocks: the prose (and its code spans). */
export function withoutFencedBlocks(markdown: string): string {
  return markdown.replace(FENCE, '');
}

/** A page's steps: its `sh` blocks, each with the `text` block that follows it, if any. */
export function shellSteps(markdown: string): DocStep[] {
  const steps: DocStep[] = [];
  let last: { code: string; terminal?: { ready: string }; exit: number } | undefined;
  for (const { lang, info, body } of fencedBlocks(markdown)) {
    if (lang === 'sh') {
      if (last !== undefined) steps.push(last);
      const ready = /\bready=(\S+)/.exec(info)?.[1];
      const terminal = /\bterminal\b/.test(info);
      assert.ok(!terminal || ready !== undefined, `a terminal block without ready=: ${body}`);
      last = {
        code: body,
        exit: Number(/\bexit=(\d+)/.exec(info)?.[1] ?? 0),
        ...(terminal ? { terminal: { ready: ready! } } : {}),
      };
    } else if (lang === 'text' && last !== undefined) {
      steps.push({ ...last, expect: body });
      last = undefined;
    }
  }
  if (last !== undefined) steps.push(last);
  return steps;
}

/** Asserts that every non-empty line of `expected` appears in `actual`, in order (`…` = any text). */
export function assertLinesInOrder(actual: string, expected: string, what: string): void {
  const lines = actual.split('\n').map((l) => l.trimEnd());
  let at = 0;
  for (const want of expected.split('\n').map((l) => l.trimEnd())) {
    if (want.trim() === '') continue;
    const re = new RegExp(
      `^${want
        .split('…')
        .map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*')}$`,
    );
    const found = lines.findIndex((l, i) => i >= at && re.test(l));
    assert.ok(
      found >= 0,
      `${what}: the page promises the line\n  ${want}\nwhich is not in:\n${actual}`,
    );
    at = found + 1;
  }
}
