/**
 * Every `meshid` command line the documentation shows is one the CLI takes: the command exists
 * and each `--flag` after it is one of that command's settings (what `meshid <command> --help`
 * lists), in README.md and every page of docs/. Pages that are run by a test (the quick start,
 * the install walkthrough) are also checked here, so a typo fails fast, without processes.
 */
import { strict as assert } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { COMMAND_SETTINGS, flagName } from '../../../core/index.js';
import { fencedBlocks, withoutFencedBlocks } from '../../support/docs.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** The `meshid …` command lines of a page: code blocks (with `\` continuations joined) and code spans. */
function commandLines(markdown: string): string[] {
  const out: string[] = [];
  for (const { body } of fencedBlocks(markdown)) {
    const joined = body.replace(/\\\n\s*/g, ' ');
    for (const line of joined.split('\n')) out.push(...occurrences(line));
  }
  for (const span of withoutFencedBlocks(markdown).matchAll(/`([^`\n]+)`/g))
    out.push(...occurrences(span[1]!));
  return out;
}

/** Each `meshid <command> …` in a line, up to the end of that shell command. */
function occurrences(line: string): string[] {
  return [...line.matchAll(/(?:^|[\s(])meshid ([a-z][^|;&>#`]*)/g)].map((m) => m[1]!.trim());
}

const pages = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

describe('the meshid commands the docs show', () => {
  it('finds command lines to check (the scan works)', () => {
    const all = pages.flatMap((p) => commandLines(readFileSync(join(ROOT, p), 'utf8')));
    assert.ok(all.length >= 80, `only ${all.length} meshid command lines found`);
  });

  for (const page of pages) {
    it(`${page}: every command exists and takes every flag it is shown with`, () => {
      const problems: string[] = [];
      for (const line of commandLines(readFileSync(join(ROOT, page), 'utf8'))) {
        const [command, ...rest] = line.split(/\s+/);
        // Placeholders and prose ("meshid <command> --help", "meshid is …") are not commands.
        if (command === undefined || !/^[a-z]+$/.test(command)) continue;
        if (!Object.hasOwn(COMMAND_SETTINGS, command)) {
          if (rest.some((w) => w.startsWith('--')))
            problems.push(`meshid ${line}: no command ${command}`);
          continue;
        }
        const settings = COMMAND_SETTINGS[command as keyof typeof COMMAND_SETTINGS];
        const flags = new Set(['--help', ...Object.keys(settings).map((k) => `--${flagName(k)}`)]);
        for (const word of rest) {
          const flag = /^(--[a-z][a-z0-9-]*)/.exec(word)?.[1];
          if (flag !== undefined && !flags.has(flag))
            problems.push(`meshid ${line}: ${command} has no ${flag}`);
        }
      }
      assert.deepEqual(problems, []);
    });
  }
});
