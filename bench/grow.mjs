#!/usr/bin/env node
// Shards that grow (issue 8): mint n accounts into a ledger created small (16 x 1,000: every shard grows from
// 1,000 to n/16 accounts, its account file extended and its index doubled many times) and into one created for
// the whole load (16 x 1M: no growth up to 16M accounts). Each row runs in a fresh process.
//
//   node bench/grow.mjs              # full: 10M accounts (for a quiet machine: several minutes, ~3 GiB of disk)
//   node bench/grow.mjs --quick      # smoke run: 300k accounts (and 300k in the one-shard step timing)
//   options: --n <accounts>  --engines native,js  --lib/--before <dist/index.js>  --no-write
//
// Per row: throughput (accounts/s over the whole run: mintBatch calls of 1,000, a turn of the event loop between
// them, the policy's background checkpoints running), the median, worst and 99.9th percentile call, calls over
// 10 ms, the calls in which a shard grew (an account file extended or an index rehash started) and the worst of them,
// the close (final checkpoint), peak and final RSS, the files (apparent and allocated bytes), and per shard the
// capacity and index resizes reached. Then, per engine, the growth steps timed alone (childSteps: one shard from
// 1,000 to 4M accounts, 300k with --quick). Results: bench/results/grow[-quick].json.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { parseArgs, intArg, makeKeys, mintBufferRange, tmpDir, removeDir, BATCH, RESULT_PREFIX } from './lib/common.mjs';
import { buildsFrom, importLedger, header, runTrial, writeResults, processMemory, yieldTurn } from './lib/runner.mjs';

const SELF = fileURLToPath(import.meta.url);
const args = parseArgs();
const quick = !!args.quick;
const SHAPES = [
  { name: '16 x 1,000', shards: 16, accountsPerShard: 1000 },
  { name: '16 x 1M', shards: 16, accountsPerShard: 1_000_000 },
];

if (args.child === 'steps') await childSteps();
else if (args.child) await child();
else await driver();

// One shard created for 1,000 accounts, minted into one account per call (WAL off: no log fsync to wait for)
// up to n accounts: every call that extended the account file, every call that started an index rehash (a new
// table), and every other call, timed apart. The cost of a growth step itself, without batches around it.
async function childSteps() {
  const n = intArg(args, 'n', 300_000);
  const mod = await importLedger(args);
  const keys = makeKeys(n);
  const dir = tmpDir('grow-steps');
  const l = await mod.Ledger.open(dir, { shards: 1, accountsPerShard: 1000, wal: false, engine: args.engine ?? 'native' });
  const view = (i) => keys.subarray(i * 32, i * 32 + 32);
  const other = [];
  const data = [];
  const rehash = [];
  let { capacity, indexCapacity } = l.stats().shards[0];
  for (let i = 0; i < n; i++) {
    const a = performance.now();
    l.mint(view(i), 1n);
    const ms = performance.now() - a;
    if (i + 1 >= capacity || (i + 1) * 2 >= indexCapacity) {
      const s = l.stats().shards[0];
      if (s.capacity !== capacity) data.push({ ms, to: s.capacity });
      else if (s.indexCapacity !== indexCapacity) rehash.push({ ms, to: s.indexCapacity });
      else other.push(ms);
      ({ capacity, indexCapacity } = s);
    } else {
      other.push(ms);
    }
    if (i % 4096 === 0) await yieldTurn();
  }
  await l.close();
  removeDir(dir);
  other.sort((x, y) => x - y);
  process.stdout.write(RESULT_PREFIX + JSON.stringify({
    n, engine: args.engine ?? 'native',
    otherCalls: { median: other[other.length >> 1], p999: other[Math.floor(other.length * 0.999)], worst: other[other.length - 1] },
    dataGrowth: data, rehashStarts: rehash,
  }) + '\n');
}

async function child() {
  const n = intArg(args, 'n', 300_000);
  const shape = { shards: intArg(args, 'shards', 16), accountsPerShard: intArg(args, 'aps', 1000) };
  const mod = await importLedger(args);
  const keys = makeKeys(n);
  const dir = tmpDir('grow');
  const l = await mod.Ledger.open(dir, { ...shape, engine: args.engine ?? 'native' });
  const calls = new Float64Array(Math.ceil(n / BATCH));
  // Calls in which a shard grew: an account file extended, or an index rehash started (a new table).
  const size = () => l.stats().shards.reduce((t, x) => t + x.capacity + (x.indexCapacity ?? 0), 0);
  let growCalls = 0;
  let worstGrowCallMs = 0;
  let last = size();
  const t0 = performance.now();
  let c = 0;
  for (let s = 0; s < n; s += BATCH, c++) {
    const ops = mintBufferRange(keys, s, Math.min(BATCH, n - s), 1);
    const a = performance.now();
    const st = l.mintBatch(ops);
    calls[c] = performance.now() - a;
    for (let i = 0; i < st.length; i++) if (st[i] !== 0) throw new Error(`mint ${s + i} failed with status ${st[i]}`);
    const now = size();
    if (now !== last) {
      growCalls++;
      worstGrowCallMs = Math.max(worstGrowCallMs, calls[c]);
      last = now;
    }
    await yieldTurn(); // background checkpoints (JS engine: their slices) and housekeeping run between calls
  }
  const runMs = performance.now() - t0;
  const stats = l.stats();
  const memory = processMemory();
  const peakRssMiB = Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
  const c0 = performance.now();
  await l.close();
  const closeMs = performance.now() - c0;
  const files = { shard: [0, 0], index: [0, 0], wal: [0, 0] };
  for (const f of fs.readdirSync(dir)) {
    const kind = f.startsWith('index_') ? 'index' : f.endsWith('.wal') ? 'wal' : f.startsWith('shard_') ? 'shard' : null;
    if (!kind) continue;
    const st = fs.statSync(path.join(dir, f));
    files[kind][0] += st.size;
    files[kind][1] += st.blocks * 512;
  }
  removeDir(dir);
  const sorted = Array.from(calls).sort((x, y) => x - y);
  const mib = (b) => +(b / 2 ** 20).toFixed(1);
  process.stdout.write(RESULT_PREFIX + JSON.stringify({
    n, shape, engine: args.engine ?? 'native',
    accountsPerSec: Math.round(n / (runMs / 1000)), runMs: Math.round(runMs),
    worstCallMs: sorted[sorted.length - 1], p999CallMs: sorted[Math.floor(sorted.length * 0.999)],
    callsOver10Ms: sorted.filter((x) => x > 10).length, calls: sorted.length, growCalls, worstGrowCallMs,
    medianCallMs: sorted[Math.floor(sorted.length / 2)], closeMs: Math.round(closeMs),
    peakRssMiB: Math.round(peakRssMiB), finalRssMiB: memory.rss, checkpoints: stats.checkpoints,
    filesMiB: { shardApparent: mib(files.shard[0]), shardAllocated: mib(files.shard[1]), indexApparent: mib(files.index[0]),
      indexAllocated: mib(files.index[1]), walApparent: mib(files.wal[0]), walAllocated: mib(files.wal[1]) },
    capacity: [Math.min(...stats.shards.map((s) => s.capacity)), Math.max(...stats.shards.map((s) => s.capacity))],
    indexCapacity: [Math.min(...stats.shards.map((s) => s.indexCapacity ?? 0)), Math.max(...stats.shards.map((s) => s.indexCapacity ?? 0))],
    indexResizes: stats.shards.reduce((t, s) => t + (s.indexResizes ?? 0), 0),
  }) + '\n');
}

async function driver() {
  const n = intArg(args, 'n', quick ? 300_000 : 10_000_000);
  const engines = String(args.engines ?? 'native').split(',');
  const builds = buildsFrom(args);
  const head = header(`grow: mint ${n.toLocaleString('en-US')} accounts into a small and a large ledger`, builds);
  const rows = [];
  for (const build of builds) {
    for (const engine of engines) {
      for (const shape of SHAPES) {
        const r = await runTrial(SELF, ['--n', String(n), '--shards', String(shape.shards), '--aps', String(shape.accountsPerShard),
          '--engine', engine], { build });
        const row = { build: build.name, engine, shape: shape.name, ...r };
        delete row.stderrTail;
        if (r.error) row.stderrTail = r.stderrTail;
        rows.push(row);
        process.stderr.write(`  ${build.name} ${engine} ${shape.name}: ${r.error ? `ERROR ${r.error} ${r.stderrTail}` :
          `${r.accountsPerSec.toLocaleString('en-US')} accounts/s, calls median ${r.medianCallMs.toFixed(2)} ms, worst ${r.worstCallMs.toFixed(2)} ms ` +
          `(p99.9 ${r.p999CallMs.toFixed(2)}, ${r.callsOver10Ms} over 10 ms; ${r.growCalls} calls grew a shard, worst of them ` +
          `${r.worstGrowCallMs.toFixed(2)} ms), close ${r.closeMs} ms, peak RSS ${r.peakRssMiB} MiB, shard files ${r.filesMiB.shardApparent} MiB ` +
          `(${r.filesMiB.shardAllocated} allocated), index ${r.filesMiB.indexApparent} MiB, capacity ${r.capacity.join('-')}, ` +
          `index ${r.indexCapacity.join('-')}, ${r.indexResizes} index resizes`}\n`);
      }
    }
  }
  const steps = [];
  for (const build of builds) {
    for (const engine of engines) {
      const r = await runTrial(SELF, ['steps', '--n', String(quick ? 300_000 : 4_000_000), '--engine', engine], { build });
      steps.push({ build: build.name, engine, ...r });
      const f = (x) => x.toFixed(2);
      process.stderr.write(`  ${build.name} ${engine} growth steps, 1 shard from 1,000 to ${r.n?.toLocaleString('en-US')} accounts, one mint per call: ` +
        (r.error ? `ERROR ${r.error} ${r.stderrTail}` :
          `other calls median ${f(r.otherCalls.median)} ms, p99.9 ${f(r.otherCalls.p999)} ms, worst ${f(r.otherCalls.worst)} ms; ` +
          `file extended: ${r.dataGrowth.map((g) => `${f(g.ms)} ms (to ${g.to})`).join(', ')}; ` +
          `rehash started: ${r.rehashStarts.map((g) => `${f(g.ms)} ms (to ${g.to})`).join(', ')}`) + '\n');
    }
  }
  if (!args['no-write']) process.stderr.write(`wrote ${writeResults('grow', quick, { ...head, n, rows, steps })}\n`);
}
