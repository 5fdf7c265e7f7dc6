// typescript-eslint strict, plus the dependency rules of STYLE.md: components never import each
// other's internals; only cli/ and test/ wire components together.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const component = (name, others) => ({
  files: [`${name}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          ...others.map((o) => ({
            group: [`**/${o}/**`, `**/${o}`],
            message: `${name}/ must not import ${o}/: components talk over the wire; cli/ composes them.`,
          })),
          {
            group: ['**/core/*', '!**/core/index.js'],
            message: 'import core through core/index.js, its public surface.',
          },
        ],
      },
    ],
  },
});

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'build/**',
      'node_modules/**',
      'test/support/*.cjs',
      'bin/**',
      'native/**',
      'eslint.config.js',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    languageOptions: {
      globals: { process: 'readonly', console: 'readonly' },
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // An un-awaited check is a check that never ran: in a CA that is a security bug.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'error',
    },
  },
  component('core', ['identity-ca', 'cli', 'trust-bundle', 'proxy', 'webhooks', 'destination']),
  component('identity-ca', ['cli', 'trust-bundle', 'proxy', 'webhooks', 'destination']),
  component('proxy', ['cli', 'trust-bundle', 'identity-ca', 'webhooks', 'destination']),
  component('webhooks', ['cli', 'trust-bundle', 'identity-ca', 'proxy', 'destination']),
  component('trust-bundle', ['cli', 'identity-ca', 'proxy', 'webhooks', 'destination']),
  component('destination', ['cli', 'trust-bundle', 'identity-ca', 'proxy', 'webhooks']),
  { files: ['test/**/*.ts', 'cli/**/*.ts'], rules: { 'no-console': 'off' } },
);
