#!/usr/bin/env node
// Why this exists: the npm registry reachable from this project's machines serves only the Linux builds
// of platform-specific optional packages (@rollup/rollup-<os>-<cpu>, @msgpackr-extract/...-<os>-<cpu>).
// `npm install` then leaves those optional packages out of package-lock.json, and `npm ci` on a fresh
// clone refuses the lock ("Missing: @rollup/rollup-darwin-x64@ from lock file").
// This adds an entry (version, os, cpu, libc, optional) for every optional dependency missing from the
// lock; npm ci skips them on this platform and installs them normally elsewhere.
// Run after `npm install` changes the lock:  node bench/tools/lock-stub-optional.cjs
const fs = require('fs');
const path = require('path');
const file = path.join(__dirname, '..', '..', 'package-lock.json');
const lock = JSON.parse(fs.readFileSync(file, 'utf8'));
const pk = lock.packages;
let added = 0;
for (const [loc, meta] of Object.entries(pk)) {
  for (const [name, range] of Object.entries(meta.optionalDependencies || {})) {
    if (pk[`node_modules/${name}`] || pk[`${loc}/node_modules/${name}`]) continue;
    const m = /(darwin|linux|win32|freebsd|android|openbsd|sunos|aix|netbsd|openharmony)-([a-z0-9]+)/.exec(name.split('/').pop());
    const libc = /musl/.test(name) ? { libc: ['musl'] } : /-gnu/.test(name) && m && m[1] === 'linux' ? { libc: ['glibc'] } : {};
    pk[`node_modules/${name}`] = {
      version: range.replace(/^[~^=]/, ''),
      ...(meta.dev ? { dev: true } : {}),
      optional: true,
      ...(m ? { os: [m[1]], cpu: [m[2]] } : {}),
      ...libc,
    };
    added++;
  }
}
fs.writeFileSync(file, JSON.stringify(lock, null, 2) + '\n');
console.log(`package-lock.json: added ${added} optional platform entries`);
