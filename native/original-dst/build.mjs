// Builds the original-dst addon with node-gyp when meshid is installed (`npm ci` runs this as
// the package's own install script). The addon is needed only by the proxy's transparent mode,
// so a failed build does not fail the install: it prints why, and transparent mode refuses to
// start naming the same cause. N-API is ABI-stable: one build serves every Node version with
// N-API 8, so the headers of whichever Node is found are good.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

if (process.platform !== 'linux') {
  console.log(
    `meshid: original-dst addon skipped: transparent mode is Linux only (${process.platform})`,
  );
  process.exit(0);
}

// Headers already on the machine, so node-gyp downloads nothing: the running Node's own
// (a Node distribution ships include/node), else a distribution package's (Debian's nodejs).
const nodedir = [
  process.env.npm_config_nodedir,
  join(dirname(process.execPath), '..'),
  '/usr',
  '/usr/local',
]
  .filter((d) => d !== undefined && d !== '')
  .find((d) => existsSync(join(d, 'include', 'node', 'node_api.h')));

// npm tells its lifecycle scripts where its bundled node-gyp is; run by hand, npm's own copy.
const gyp = [
  process.env.npm_config_node_gyp,
  join(
    dirname(process.execPath),
    '..',
    'lib',
    'node_modules',
    'npm',
    'node_modules',
    'node-gyp',
    'bin',
    'node-gyp.js',
  ),
].find((g) => g !== undefined && g !== '' && existsSync(g));
const [cmd, args] = gyp !== undefined ? [process.execPath, [gyp]] : ['node-gyp', []];
const r = spawnSync(
  cmd,
  [...args, 'rebuild', ...(nodedir === undefined ? [] : [`--nodedir=${nodedir}`])],
  { cwd: here, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' },
);
if (r.status === 0) {
  console.log('meshid: original-dst addon built (transparent mode available)');
  process.exit(0);
}
const why =
  r.error !== undefined
    ? r.error.message
    : (r.stderr || r.stdout).trim().split('\n').slice(-8).join('\n');
console.warn(
  `meshid: original-dst addon NOT built; the proxy's transparent mode will refuse to start ` +
    `(every other mode works). Needs python3, make, a C compiler and Node's headers` +
    `${nodedir === undefined ? ' (none found: set npm_config_nodedir)' : ` (used ${nodedir})`}; ` +
    `retry with: npm run build:native\n${why}`,
);
process.exit(0);
