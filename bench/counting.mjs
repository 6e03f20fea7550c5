// The cost of counting on the hot paths (issue 9: operations counted by result, read on scrape): CPU time per
// operation of one build against another, WAL off (no disk in the way), 100k accounts, one-by-one and batches of
// 1,000. A shared machine makes wall-clock rates swing by 2-3x between runs, so this measures the process's own
// CPU time (process.cpuUsage) and keeps the best of several repetitions per row (200k one-by-one calls, 2M batched
// operations each); the builds alternate, each trial in a fresh process.
//   node bench/counting.mjs --before <dir>/dist/index.js [--lib <dir>/dist/index.js] [--engine native|js] [--trials 5]
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  parseArgs, intArg, makeKeys, randomPairs, tmpDir, removeDir, mintBufferRange, ledgerShape, RESULT_PREFIX, BATCH,
} from './lib/common.mjs';
import { importLedger, buildsFrom } from './lib/runner.mjs';

const args = parseArgs();
const engine = args.engine ?? 'native';
const n = intArg(args, 'n', 100_000);
const REPS = 9;
/** Operations per timed repetition: one-by-one calls, and batches (cheaper per operation, so more of them). */
const OPS_PER_REP = 200_000;
const BATCH_OPS_PER_REP = 2_000_000;

if (args.child) {
  const { Ledger } = await importLedger(args);
  const dir = path.join(tmpDir('counting'), 'ledger');
  const ledger = await Ledger.open(dir, { engine, wal: false, checkpointIntervalMs: 0, ...ledgerShape(n) });
  const keys = makeKeys(n, 7);
  for (let s = 0; s < n; s += 10_000) ledger.mintBatch(mintBufferRange(keys, s, Math.min(10_000, n - s), 1_000_000_000n));
  const pairs = randomPairs(OPS_PER_REP, n, 13);
  const views = Array.from({ length: n }, (_, i) => keys.subarray(i * 32, i * 32 + 32));
  const mintOps = Buffer.alloc(BATCH * 40);
  const transferOps = Buffer.alloc(BATCH * 72);
  for (let i = 0; i < BATCH; i++) {
    mintOps.set(views[pairs[2 * i]], i * 40);
    mintOps.writeBigUInt64LE(1n, i * 40 + 32);
    transferOps.set(views[pairs[2 * i]], i * 72);
    transferOps.set(views[pairs[2 * i + 1]], i * 72 + 32);
    transferOps.writeBigUInt64LE(1n, i * 72 + 64);
  }
  const rows = {
    'mint one': () => { for (let i = 0; i < OPS_PER_REP; i++) ledger.mint(views[pairs[2 * i]], 1n); },
    'transfer one': () => { for (let i = 0; i < OPS_PER_REP; i++) ledger.transfer(views[pairs[2 * i]], views[pairs[2 * i + 1]], 1n); },
    'mint b1000': () => { for (let i = 0; i < BATCH_OPS_PER_REP; i += BATCH) ledger.mintBatch(mintOps); },
    'transfer b1000': () => { for (let i = 0; i < BATCH_OPS_PER_REP; i += BATCH) ledger.transferBatch(transferOps); },
  };
  const opsOf = (name) => (name.endsWith('b1000') ? BATCH_OPS_PER_REP : OPS_PER_REP);
  const out = {};
  for (const [name, run] of Object.entries(rows)) {
    run(); // warm-up
    let best = Infinity;
    for (let r = 0; r < REPS; r++) {
      const c0 = process.cpuUsage();
      run();
      const c = process.cpuUsage(c0);
      best = Math.min(best, ((c.user + c.system) * 1000) / opsOf(name));
    }
    out[name] = best; // ns of CPU per operation
  }
  await ledger.close();
  removeDir(path.dirname(dir));
  console.log(RESULT_PREFIX + JSON.stringify(out));
  process.exit(0);
}

const builds = buildsFrom(args);
const trials = intArg(args, 'trials', 5);
const runs = Object.fromEntries(builds.map((b) => [b.name, []]));
const self = fileURLToPath(import.meta.url);
for (let t = 0; t < trials; t++) {
  for (const b of builds) {
    const r = spawnSync(process.execPath, [self, '--child', '--engine', engine, '--n', String(n), ...(b.lib ? ['--lib', b.lib] : [])],
      { encoding: 'utf8' });
    const line = r.stdout.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
    if (!line) throw new Error(`${b.name}: no result\n${r.stderr}`);
    runs[b.name].push(JSON.parse(line.slice(RESULT_PREFIX.length)));
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(`${engine} engine, WAL off, ${n} accounts, CPU ns per operation (median over ${trials} trials of the best of ${REPS}); ` +
  `load average ${os.loadavg()[0].toFixed(2)} on ${os.cpus().length} cores`);
console.log(`builds: ${builds.map((b) => `${b.name} ${b.commit}`).join(', ')}`);
for (const row of Object.keys(runs[builds[0].name][0])) {
  const cells = builds.map((b) => median(runs[b.name].map((x) => x[row])));
  const ratio = builds.length > 1 ? `  (${((cells[cells.length - 1] / cells[0] - 1) * 100).toFixed(1)}%)` : '';
  console.log(`  ${row.padEnd(15)} ${cells.map((c) => c.toFixed(0).padStart(6)).join('  ')}${ratio}`);
}
