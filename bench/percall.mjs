// Where the time of one call goes (issue 11): CPU time per operation of one-by-one balance(), get(), mint() and
// transfer() with the log on, and of transferBatch(1,000), for one build or two (before/after). A shared machine makes
// wall-clock rates swing, so the numbers are CPU time: the JS thread's own (its schedstat run time, in ns) and the
// whole process's (process.cpuUsage: the syncer's fsync rounds included). Each row keeps the best of several
// repetitions; the builds alternate, each trial in a fresh process. Background checkpoints are off during the
// measurement (checkpointEveryBytes 1 TiB, checkpointIntervalMs 0) so that their write-back does not land in a row.
//   node bench/percall.mjs [--before <dir>/dist/index.js] [--lib <dir>/dist/index.js] [--engine native|js]
//        [--n 1000000] [--trials 3] [--rows balance,get,getOne,mint,transfer,transferBatch] [--wal on|off]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  parseArgs, intArg, makeKeys, keyViews, randomIndices, randomPairs, transferBuffer, tmpDir, removeDir,
  mintBufferRange, ledgerShape, RESULT_PREFIX, BATCH,
} from './lib/common.mjs';
import { importLedger, buildsFrom, machine } from './lib/runner.mjs';

const args = parseArgs();
const engine = args.engine ?? 'native';
const n = intArg(args, 'n', 1_000_000);
const wal = (args.wal ?? 'on') === 'on';
const REPS = intArg(args, 'reps', 5);
const OPS_PER_REP = intArg(args, 'ops', 100_000);
const ALL_ROWS = ['balance', 'get', 'getOne', 'mint', 'transfer', 'transferBatch'];
const rowsWanted = args.rows ? String(args.rows).split(',') : ALL_ROWS;

/** ns the calling thread has run on a CPU (Linux schedstat); undefined elsewhere. */
const SCHEDSTAT = `/proc/self/task/${process.pid}/schedstat`;
function threadNs() {
  try {
    return Number(fs.readFileSync(SCHEDSTAT, 'utf8').split(' ')[0]);
  } catch {
    return undefined;
  }
}

if (args.child) {
  const { Ledger } = await importLedger(args);
  const dir = path.join(tmpDir('percall'), 'ledger');
  const ledger = await Ledger.open(dir, {
    engine, wal, checkpointIntervalMs: 0, checkpointEveryBytes: 2 ** 40, ...ledgerShape(n),
  });
  const keys = makeKeys(n, 7);
  for (let s = 0; s < n; s += 10_000) ledger.mintBatch(mintBufferRange(keys, s, Math.min(10_000, n - s), 1_000_000_000n));
  await ledger.checkpoint();
  const views = keyViews(keys);
  const idx = randomIndices(OPS_PER_REP, n, 11);
  const pairs = randomPairs(OPS_PER_REP, n, 13);
  const batches = [];
  for (let b = 0; b < OPS_PER_REP / BATCH; b++) batches.push(transferBuffer(keys, pairs.subarray(b * 2 * BATCH, (b + 1) * 2 * BATCH), 1));
  // Warm: read every account once (as bench/ledger-ops.mjs does).
  const out = Buffer.alloc(128 * 10_000);
  for (let s = 0; s < n; s += 10_000) ledger.getBatch(keys.subarray(s * 32, Math.min(n, s + 10_000) * 32), out);
  let sink = 0n;
  const rows = {
    balance: () => { for (let i = 0; i < OPS_PER_REP; i++) sink += ledger.balance(views[idx[i]]); },
    get: () => { for (let i = 0; i < OPS_PER_REP; i++) sink += ledger.get(views[idx[i]]).balance; },
    // The allocation-free read: getBatch with one key into the caller's 128 bytes (the image; balance at 32).
    getOne: () => {
      const img = new Uint8Array(128);
      const v = new DataView(img.buffer);
      for (let i = 0; i < OPS_PER_REP; i++) {
        ledger.getBatch(views[idx[i]], img);
        sink += BigInt(v.getUint32(32, true));
      }
    },
    mint: () => { for (let i = 0; i < OPS_PER_REP; i++) ledger.mint(views[idx[i]], 1); },
    transfer: () => { for (let i = 0; i < OPS_PER_REP; i++) ledger.transfer(views[pairs[2 * i]], views[pairs[2 * i + 1]], 1); },
    transferBatch: () => {
      for (const b of batches) {
        const st = ledger.transferBatch(b);
        for (let i = 0; i < st.length; i++) if (st[i] !== 0) throw new Error(`transferBatch: status ${st[i]}`);
      }
    },
  };
  const result = {};
  for (const name of rowsWanted) {
    const run = rows[name];
    if (!run) throw new Error(`unknown row ${name}`);
    run(); // warm-up
    let best;
    for (let r = 0; r < REPS; r++) {
      const t0 = threadNs();
      const c0 = process.cpuUsage();
      const w0 = process.hrtime.bigint();
      run();
      const wall = Number(process.hrtime.bigint() - w0) / OPS_PER_REP;
      const c = process.cpuUsage(c0);
      const t1 = threadNs();
      const x = {
        thread: t0 === undefined ? NaN : (t1 - t0) / OPS_PER_REP,
        process: ((c.user + c.system) * 1000) / OPS_PER_REP,
        wall,
      };
      if (!best || x.thread < best.thread) best = x;
    }
    result[name] = best;
  }
  await ledger.close();
  removeDir(path.dirname(dir));
  if (sink === -1n) console.log('');
  console.log(RESULT_PREFIX + JSON.stringify(result));
  process.exit(0);
}

const builds = buildsFrom(args);
const trials = intArg(args, 'trials', 3);
const runs = Object.fromEntries(builds.map((b) => [b.name, []]));
const self = fileURLToPath(import.meta.url);
const passOn = ['--engine', engine, '--n', String(n), '--wal', wal ? 'on' : 'off', '--reps', String(REPS),
  '--ops', String(OPS_PER_REP), '--rows', rowsWanted.join(',')];
for (let t = 0; t < trials; t++) {
  for (const b of builds) {
    const r = spawnSync(process.execPath, [self, '--child', ...passOn, ...(b.lib ? ['--lib', b.lib] : [])],
      { encoding: 'utf8', maxBuffer: 64 << 20 });
    const line = r.stdout.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
    if (!line) throw new Error(`${b.name}: no result\n${r.stderr}`);
    runs[b.name].push(JSON.parse(line.slice(RESULT_PREFIX.length)));
  }
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const m = machine();
console.log(`node bench/percall.mjs ${process.argv.slice(2).join(' ').replace(/\S*\/dist\//g, '<build>/dist/')}`);
console.log(`${new Date().toISOString()}, ${m.cpu}, ${m.cores} cores, ${m.node}, ${m.fs}; load average ${os.loadavg()[0].toFixed(2)}`);
console.log(`${engine} engine, WAL ${wal ? 'on' : 'off'}, ${n} accounts, ns per operation (median over ${trials} trials of the best of ${REPS} x ${OPS_PER_REP} ops):`);
console.log(`builds: ${builds.map((b) => `${b.name} ${b.commit}`).join(', ')}`);
console.log(`  ${'row'.padEnd(14)} ${builds.map((b) => `${b.name}: thread process wall`.padStart(34)).join('')}`);
for (const row of rowsWanted) {
  const cells = builds.map((b) => ['thread', 'process', 'wall'].map((k) => median(runs[b.name].map((x) => x[row][k]))));
  const change = builds.length > 1
    ? `  thread ${((cells[cells.length - 1][0] / cells[0][0] - 1) * 100).toFixed(1)}%` : '';
  console.log(`  ${row.padEnd(14)} ${cells.map((c) => c.map((v) => v.toFixed(0).padStart(8)).join(' ').padStart(34)).join('')}${change}`);
}
