/**
 * A logger whose JSON lines a test reads back: `captureLogs('info')` gives the `logger` to hand to
 * the code under test and `lines()`, every line written so far, parsed.
 */
import { Writable } from 'node:stream';
import { createLogger } from '../../core/index.js';
import type { Logger } from '../../core/index.js';

export function captureLogs(level: 'debug' | 'info' = 'debug'): {
  logger: Logger;
  lines: () => Record<string, unknown>[];
} {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return {
    logger: createLogger({ level, destination }),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}
