// Online backup under load: how long the event loop is held up while backup() runs, against the same load
// without a backup, and how long the backup takes. One process, one ledger (16 shards, n accounts):
//   node bench/backup.mjs [--engine native|js] [--n 200000] [--seconds 3] [--lib <dir>/dist/index.js]
// The load is one-by-one transfers, 100 per event-loop turn; a "gap" is the time between two turns (the turn's
// own work included), so it shows any stall of the JS thread: the backup's, a write waiting at the unsynced
// bound, GC. Phase 1 runs the load alone for --seconds; phase 2 runs it while one backup() runs. Prints the
// machine's load average with the result: on a shared machine, compare the two phases of one run.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs, intArg, makeKeys, randomPairs, tmpDir, removeDir, mintBufferRange, ledgerShape, RESULT_PREFIX } from './lib/common.mjs';
import { importLedger } from './lib/runner.mjs';

const args = parseArgs();
const engine = args.engine ?? 'native';
const n = intArg(args, 'n', 200_000);
const seconds = Number(args.seconds ?? 3);
const PER_TURN = 100;

const { Ledger } = await importLedger(args);
const root = tmpDir('backup');
const dir = path.join(root, 'ledger');
const dest = path.join(root, 'copy');
const ledger = await Ledger.open(dir, { engine, ...ledgerShape(n) });
const keys = makeKeys(n, 7);
for (let s = 0; s < n; s += 10_000) ledger.mintBatch(mintBufferRange(keys, s, Math.min(10_000, n - s), 1_000_000_000n));
await ledger.checkpoint();
const pairs = randomPairs(1 << 20, n, 13);
let next = 0;
const key = (i) => keys.subarray(i * 32, i * 32 + 32);

/** Runs the load until `done()` is true; returns the gaps between turns (ms) and the operations done. */
async function load(done) {
  const gaps = [];
  let ops = 0;
  let last = performance.now();
  while (!done()) {
    for (let i = 0; i < PER_TURN; i++, next = (next + 1) % (pairs.length / 2)) {
      ledger.transfer(key(pairs[2 * next]), key(pairs[2 * next + 1]), 1n);
    }
    ops += PER_TURN;
    await new Promise((r) => setImmediate(r));
    const now = performance.now();
    gaps.push(now - last);
    last = now;
  }
  return { gaps, ops };
}

function summary(gaps, ops, ms) {
  const s = [...gaps].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { turns: s.length, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: s[s.length - 1], opsPerSec: (ops / ms) * 1000 };
}

const t0 = performance.now();
const base = await load(() => performance.now() - t0 > seconds * 1000);
const baseline = summary(base.gaps, base.ops, performance.now() - t0);

let finished = false;
const t1 = performance.now();
const running = ledger.backup(dest).finally(() => { finished = true; });
const during = await load(() => finished);
const b = await running;
const withBackup = summary(during.gaps, during.ops, performance.now() - t1);
await ledger.close();
removeDir(root);

const result = {
  bench: 'backup', engine, n, loadavg: os.loadavg()[0], cpus: os.cpus().length,
  backup: { lsn: String(b.lsn), bytes: b.bytes, ms: b.ms }, baseline, withBackup,
};
console.log(`${engine}, ${n} accounts (load average ${result.loadavg.toFixed(2)} on ${result.cpus} cores):`);
console.log(`  backup: ${(b.bytes / 1e6).toFixed(1)} MB in ${b.ms.toFixed(0)} ms`);
for (const [name, r] of [['load alone', baseline], ['load + backup', withBackup]]) {
  console.log(`  ${name.padEnd(14)} turns ${r.turns}, gap p50 ${r.p50Ms.toFixed(2)} ms, p99 ${r.p99Ms.toFixed(2)} ms, ` +
    `max ${r.maxMs.toFixed(1)} ms, ${Math.round(r.opsPerSec)} transfers/s`);
}
fs.writeSync(1, `${RESULT_PREFIX}${JSON.stringify(result)}\n`);
