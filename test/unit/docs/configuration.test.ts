/**
 * docs/configuration.md is generated from the schema: this fails when someone adds, renames or
 * re-describes a setting (or changes a default) without running `npm run docs:config`.
 */
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import {
  BEGIN,
  CONFIGURATION_DOC,
  END,
  renderConfigurationDoc,
} from '../../../cli/docs/config-reference.js';
import { COMMAND_SETTINGS, flagName } from '../../../core/index.js';
import { envName } from '../../../core/config.js';

describe('docs/configuration.md', () => {
  const page = readFileSync(CONFIGURATION_DOC, 'utf8');

  it('is what `npm run docs:config` generates from core/config.ts', () => {
    assert.ok(
      page === renderConfigurationDoc(page),
      'docs/configuration.md differs from the schema: run `npm run docs:config` and commit the result',
    );
  });

  it('lists every setting of every command with its flag and environment variable', () => {
    const generated = page.slice(page.indexOf(BEGIN), page.indexOf(END));
    for (const [command, settings] of Object.entries(COMMAND_SETTINGS)) {
      assert.ok(generated.includes(`### \`meshid ${command}\``), `no section for ${command}`);
      for (const key of Object.keys(settings)) {
        assert.ok(
          generated.includes(`| \`${key}\` | \`--${flagName(key)}\` | \`${envName(key)}\` |`),
          `${command}.${key} missing`,
        );
      }
    }
  });

  it('refuses to render a page that lost its markers', () => {
    assert.throws(() => renderConfigurationDoc('# Configuration\n'), /must contain the lines/);
  });
});
