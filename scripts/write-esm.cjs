// Writes dist/index.mjs (and dist/replication.mjs): an ES module face over the CommonJS build, so that
// `import { Ledger } from 'geometric-ledger'` and `require(...)` share one
// instance of the module (and of the loaded addon). Also makes dist/cli.js (the
// `geoledger` command) executable.
const fs = require('node:fs');
const path = require('node:path');
const dist = path.join(__dirname, '..', 'dist');
// The same for the replication subpath (`geometric-ledger/replication`, package.json "exports").
for (const mod of ['index', 'replication']) {
  const names = Object.keys(require(path.join(dist, `${mod}.js`))).filter((n) => n !== 'default' && n !== '__esModule');
  const body = [
    `import cjs from './${mod}.js';`,
    `export const { ${names.join(', ')} } = cjs;`,
    'export default cjs;',
    '',
  ].join('\n');
  fs.writeFileSync(path.join(dist, `${mod}.mjs`), body);
}

// The `geoledger` command (package.json "bin"): runnable straight from a checkout too.
fs.chmodSync(path.join(dist, 'cli.js'), 0o755);
