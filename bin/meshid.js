#!/usr/bin/env node
// The package's command. The TypeScript sources are compiled to dist/ by `npm install` (the
// `prepare` script), so this file only checks the runtime and hands over to the compiled entry
// point.

// The lowest Node.js meshid runs on: keep equal to `engines.node` in package.json (a unit test
// checks). `npm start`, `npm test` and `npx meshid` run the Node pinned as a devDependency
// (node_modules/.bin/node); a bare `node bin/meshid.js` runs whatever `node` is first on PATH.
const NODE_FLOOR = '26.10.0';

const [major, minor, patch] = process.versions.node.split('.').map(Number);
const [fMajor, fMinor, fPatch] = NODE_FLOOR.split('.').map(Number);
if (major * 1e6 + minor * 1e3 + patch < fMajor * 1e6 + fMinor * 1e3 + fPatch) {
  process.stderr.write(
    `meshid: ERR_NODE_VERSION: meshid needs Node.js >= ${NODE_FLOOR} (OpenSSL 3.5 for ` +
      `post-quantum TLS), but this is Node.js ${process.version} (${process.execPath}). Run it ` +
      `with \`npx meshid\` or \`npm start\` from the repository, which use the Node.js that ` +
      '`npm install` put in node_modules/.bin, or put a Node.js 26 LTS first on PATH.\n',
  );
  process.exit(1);
}

const { main } = await import('../dist/cli/main.js');
const code = await main(process.argv.slice(2));
process.exitCode = code;
// A command that failed ends: a listener or a watcher it opened before the failure must not keep
// the process alive (a failed start would otherwise hang with nothing to show for it).
if (code !== 0) setTimeout(() => process.exit(code), 100).unref();
