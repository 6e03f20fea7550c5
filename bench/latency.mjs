#!/usr/bin/env node
// "No pause when it checkpoints" (issue 7): per-call latency and event-loop delay under sustained transfers while
// checkpoints happen (an explicit checkpoint() every few seconds, plus the build's own policy).
//
//   node bench/latency.mjs --lib <after>/dist/index.js --before <before>/dist/index.js     # full: 1M and 10M accounts
//   node bench/latency.mjs --quick                                                         # smoke run: 100k accounts, 3 s
//   options: --sizes 1000000,10000000 --shapes one,b1000 --seconds 25 --warmup 8 --ckpt-every 5000 --trials 1
//            --variants default,unbounded (the --lib build also with maxUnsyncedRecords 2^40; quick: default only;
//                       `every512m`: checkpointEveryBytes 512 MiB; options combine with +, e.g. unbounded+every512m)
//            --out <name> (results/<name>.json instead of latency.json)  --no-write (print only)
//
// Every row is a fresh process (`--child`) that: populates n accounts (16 shards of 1M; --quick: 16 x 100k) with
// mintBatch and WAL off, closes, reopens with the WAL on (syncEvery 1000, the rest default), writes every account
// once (transferBatch over a random permutation: the first write to a page is a copy-on-write fault), runs the load
// untimed for --warmup seconds, checkpoints, then measures for
// --seconds: (a) `one`: transfer(a, b, 1) one by one, (b) `b1000`: transferBatch of 1,000 prebuilt random transfers.
// The load runs in slices of about 1 ms with a setImmediate between them, so timers and the ledger's housekeeping
// get their turns. Measured: every call (process.hrtime.bigint around it: p50/p99/p99.9/max), the event loop's
// delay (perf_hooks.monitorEventLoopDelay, 1 ms resolution), the gaps between two slices (time the event loop
// spent on anything else: timers, the page give-back, promise callbacks), the call time of each explicit
// checkpoint() and the time to its resolution, the checkpoints committed (stats().checkpoints and
// lastCheckpointMs; builds before issue 7: checkpointLsn changes) and ops/s. Results: bench/results/latency.json.
import { createHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import {
  parseArgs, intArg, makeKeys, randomPairs, transferBuffer, tmpDir, removeDir, runChild, gc, ledgerShape,
} from './lib/common.mjs';
import {
  buildsFrom, importLedger, hasBackgroundCheckpoints, header, load, runTrial, writeResults, populate, sleep, yieldTurn, histMs,
  threadSchedstat, writeEveryAccount, buildOpenOptions,
} from './lib/runner.mjs';

const SELF = fileURLToPath(import.meta.url);
const args = parseArgs();
const quick = !!args.quick;
const SLICE_NS = 1_000_000n;
const STATS_EVERY_NS = 20_000_000n;
const SLOW_NS = 10_000_000n; // calls and gaps listed one by one

if (args.child) await child();
else await driver();

// ------------------------------------------------------------------ one row, in a fresh process
async function child() {
  const n = intArg(args, 'n', 100_000);
  const shape = args.shape ?? 'one';
  const seconds = Number(args.seconds ?? 3);
  const warmupS = Number(args.warmup ?? 1);
  const ckptEveryNs = BigInt(intArg(args, 'ckpt-every', 1000)) * 1_000_000n;
  await runChild({ bench: 'latency', n, shape }, async () => {
    const mod = await importLedger(args);
    const keys = makeKeys(n, 7);
    const dir = tmpDir('latency');
    try {
      const geometry = n >= 1_000_000 ? { shards: 16, accountsPerShard: 1_000_000 } : ledgerShape(n);
      let t = performance.now();
      const loader = await mod.Ledger.open(dir, { ...geometry, wal: false });
      populate(loader, keys, n);
      await loader.close();
      const populateMs = performance.now() - t;
      const policy = {};
      if (args['max-unsynced']) policy.maxUnsyncedRecords = Number(args['max-unsynced']);
      if (args['checkpoint-every-bytes']) policy.checkpointEveryBytes = Number(args['checkpoint-every-bytes']);
      const ledger = await mod.Ledger.open(dir, { wal: true, syncEvery: 1000, ...policy, ...buildOpenOptions(args) });
      const background = hasBackgroundCheckpoints(ledger);

      // The workload: random pairs over all n accounts.
      let callOnce;
      let opsPerCall;
      if (shape === 'one') {
        const pairs = randomPairs(Math.min(1 << 20, n * 4), n, 11);
        const a = Buffer.alloc(32);
        const b = Buffer.alloc(32);
        let i = 0;
        opsPerCall = 1;
        callOnce = () => {
          if (i === pairs.length) i = 0;
          keys.copy(a, 0, pairs[i] * 32, pairs[i] * 32 + 32);
          keys.copy(b, 0, pairs[i + 1] * 32, pairs[i + 1] * 32 + 32);
          i += 2;
          const t0 = process.hrtime.bigint();
          ledger.transfer(a, b, 1);
          return process.hrtime.bigint() - t0;
        };
      } else if (shape === 'b1000') {
        const count = quick ? 64 : 1024; // prebuilt batches, cycled: 1M transfers over all accounts
        const pool = [];
        for (let k = 0; k < count; k++) pool.push(transferBuffer(keys, randomPairs(1000, n, 100 + k), 1));
        let k = 0;
        opsPerCall = 1000;
        callOnce = () => {
          const buf = pool[k++ % count];
          const t0 = process.hrtime.bigint();
          const st = ledger.transferBatch(buf);
          const d = process.hrtime.bigint() - t0;
          if (st[0] !== 0 || st[999] !== 0) throw new Error(`transferBatch status ${st[0]}/${st[999]}`);
          return d;
        };
      } else throw new Error(`unknown --shape ${shape}`);

      // Warm-up: every account written once (the first write to a page of the private mapping is a copy-on-write
      // fault, slow on first touch), the load for warmupS, a checkpoint.
      t = performance.now();
      await writeEveryAccount(ledger, keys, n);
      const warmEnd = process.hrtime.bigint() + BigInt(Math.round(warmupS * 1e9));
      while (process.hrtime.bigint() < warmEnd) {
        const s0 = process.hrtime.bigint();
        while (process.hrtime.bigint() - s0 < SLICE_NS) callOnce();
        await yieldTurn();
      }
      await ledger.checkpoint();
      await sleep(1000); // the give-back of the pages it wrote
      const warmupMs = performance.now() - t;
      gc();

      // ---------------------------------------------------------- measured
      const calls = createHistogram();
      const gaps = createHistogram();
      // A turn: from the end of one slice to the end of the next (the gap, then the slice). Its wall time, and the
      // same minus the time this thread was runnable but waiting for a CPU (schedstat): on a shared machine the
      // second is what the ledger held the thread for (running, or blocked in a syscall, a fault or a lock).
      const turns = createHistogram();
      const turnsOwn = createHistogram();
      const sched = threadSchedstat();
      let sched0 = sched?.();
      const schedStart = sched0;
      const eld = monitorEventLoopDelay({ resolution: 1 });
      const slow = [];
      const explicit = []; // { atMs, callMs, doneMs }
      const committed = []; // lastCheckpointMs of each commit seen (background builds)
      let seen = ledger.stats();
      const seen0 = seen;
      let lsnChanges = 0;
      let runningSamples = 0;
      let samples = 0;
      let maxWalBytes = 0;
      let ops = 0;
      const usage0 = process.resourceUsage();
      // Group fsync rounds during the measurement (builds with counters(): the ledger's own histogram).
      const fsyncRounds = () => (typeof ledger.counters === 'function' ? ledger.counters().fsyncDuration : undefined);
      const fsync0 = fsyncRounds();
      const start = process.hrtime.bigint();
      const end = start + BigInt(Math.round(seconds * 1e9));
      const at = (ns) => +(Number(ns - start) / 1e6).toFixed(1);
      let nextCkpt = start + ckptEveryNs;
      let nextStats = start;
      let lastSliceEnd = 0n;
      eld.enable();
      for (;;) {
        const sliceStart = process.hrtime.bigint();
        if (lastSliceEnd) {
          const g = sliceStart - lastSliceEnd;
          gaps.record(g > 0n ? g : 1n);
          if (g > SLOW_NS && slow.length < 40) slow.push(['gap', at(lastSliceEnd), +(Number(g) / 1e6).toFixed(2), running()]);
        }
        if (sliceStart >= end) break;
        if (sliceStart >= nextCkpt) {
          nextCkpt = sliceStart + ckptEveryNs;
          const c0 = process.hrtime.bigint();
          const p = ledger.checkpoint();
          const c1 = process.hrtime.bigint();
          const e = { atMs: at(c0), callMs: +(Number(c1 - c0) / 1e6).toFixed(2), doneMs: undefined };
          explicit.push(e);
          p.then(() => { e.doneMs = +(Number(process.hrtime.bigint() - c0) / 1e6).toFixed(1); }, (err) => { e.error = String(err); });
        }
        let now = sliceStart;
        do {
          const d = callOnce();
          calls.record(d > 0n ? d : 1n);
          if (d > SLOW_NS && slow.length < 40) slow.push(['call', at(now), +(Number(d) / 1e6).toFixed(2), running()]);
          ops += opsPerCall;
          now = process.hrtime.bigint();
        } while (now - sliceStart < SLICE_NS);
        if (now >= nextStats) {
          nextStats = now + STATS_EVERY_NS;
          const s = ledger.stats();
          samples++;
          if (s.checkpointInProgress) runningSamples++;
          if (s.walBytes > maxWalBytes) maxWalBytes = s.walBytes;
          if (background && s.checkpoints > seen.checkpoints) committed.push(s.lastCheckpointMs);
          if (s.checkpointLsn !== seen.checkpointLsn) lsnChanges++;
          seen = s;
        }
        const sliceEnd = process.hrtime.bigint();
        if (sched) {
          const s1 = sched();
          if (lastSliceEnd) {
            const wall = sliceEnd - lastSliceEnd;
            const own = wall - (s1.waitNs - sched0.waitNs);
            turns.record(wall > 0n ? wall : 1n);
            turnsOwn.record(own > 0n ? own : 1n);
            if (own > SLOW_NS && slow.length < 40) slow.push(['turn-own', at(lastSliceEnd), +(Number(own) / 1e6).toFixed(2), running()]);
          }
          sched0 = s1;
        }
        lastSliceEnd = sliceEnd;
        await yieldTurn();
      }
      const elapsedNs = process.hrtime.bigint() - start;
      const fsync1 = fsyncRounds();
      const schedEnd = sched?.();
      eld.disable();
      const usage = process.resourceUsage();
      function running() {
        return background ? seen.checkpointInProgress : undefined;
      }
      // Let explicit checkpoints still running resolve (not timed).
      const tail = performance.now();
      await ledger.checkpoint();
      while (explicit.some((e) => e.doneMs === undefined && !e.error) && performance.now() - tail < 60_000) await sleep(10);
      const final = ledger.stats();
      const c0 = performance.now();
      await ledger.close();
      const closeMs = performance.now() - c0;

      const checkpointsCommitted = background ? final.checkpoints - seen0.checkpoints : lsnChanges;
      const sorted = [...committed].sort((x, y) => x - y);
      const ms = (x) => +x.toFixed(2);
      const explicitCalls = explicit.map((e) => e.callMs);
      return [{
        kind: background ? 'background checkpoints' : 'synchronous checkpoints',
        populateMs, warmupMs, closeMs, seconds: Number(elapsedNs) / 1e9, ops,
        opsPerSec: (ops * 1e9) / Number(elapsedNs),
        callMs: histMs(calls),
        loopDelayMs: histMs(eld),
        gapMs: histMs(gaps),
        turnMs: histMs(turns),
        turnOwnMs: histMs(turnsOwn),
        // share of the measured time the JS thread was runnable but had no CPU (other processes, our own threads)
        cpuWaitShare: schedEnd ? ms(Number(schedEnd.waitNs - schedStart.waitNs) / Number(elapsedNs)) : null,
        // rounds by duration: counts[i] took at most boundsMs[i] (the last: longer than every bound)
        fsyncRounds: fsync0 && fsync1 ? {
          count: fsync1.count - fsync0.count,
          boundsMs: fsync1.bounds.map((b) => b * 1000),
          counts: fsync1.counts.map((c, i) => c - fsync0.counts[i]),
          over25ms: fsync1.counts.reduce((s, c, i) => s + (fsync1.bounds[i - 1] >= 0.025 ? c - fsync0.counts[i] : 0), 0),
        } : null,
        worstBlockMs: ms(Math.max(Number(calls.max) / 1e6, Number(eld.max) / 1e6, Number(gaps.max) / 1e6, ...explicitCalls)),
        explicitCheckpoints: {
          count: explicit.length,
          callMsMax: explicit.length ? Math.max(...explicitCalls) : null,
          callMsMean: explicit.length ? ms(explicitCalls.reduce((s, x) => s + x, 0) / explicit.length) : null,
          doneMsMax: explicit.length ? Math.max(...explicit.map((e) => e.doneMs ?? 0)) : null,
          each: explicit.slice(0, 12).map(({ atMs, callMs, doneMs }) => [atMs, callMs, doneMs]), // [at ms, call ms, resolved after ms]
        },
        checkpoints: {
          committed: checkpointsCommitted,
          // background builds: durations (hand-over to commit) of the commits seen by 20 ms stats() polls
          durationMs: sorted.length ? { n: sorted.length, min: sorted[0], median: sorted[Math.floor((sorted.length - 1) / 2)], max: sorted[sorted.length - 1] } : null,
          runningShare: background ? ms(runningSamples / Math.max(1, samples)) : null,
          maxWalMiB: ms(maxWalBytes / 2 ** 20),
        },
        // [call|gap|turn-own, at ms, ms, a checkpoint was running (background builds; as of the last 20 ms stats poll)]
        slow: slow.slice(0, 16),
        slowCount: slow.length,
        cpu: {
          userS: ms((usage.userCPUTime - usage0.userCPUTime) / 1e6), sysS: ms((usage.systemCPUTime - usage0.systemCPUTime) / 1e6),
          minorFaults: usage.minorPageFault - usage0.minorPageFault, majorFaults: usage.majorPageFault - usage0.majorPageFault,
          volCtxSwitches: usage.voluntaryContextSwitches - usage0.voluntaryContextSwitches,
        },
        load: load(),
      }];
    } finally {
      removeDir(dir);
    }
  });
}

// ------------------------------------------------------------------ driver
async function driver() {
  const builds = buildsFrom(args);
  const sizes = String(args.sizes ?? (quick ? '100000' : '1000000,10000000')).split(',').map(Number);
  const shapes = String(args.shapes ?? 'one,b1000').split(',');
  const seconds = Number(args.seconds ?? (quick ? 3 : 25));
  const warmup = Number(args.warmup ?? (quick ? 1 : 8));
  const ckptEvery = intArg(args, 'ckpt-every', quick ? 1000 : 5000);
  const trials = intArg(args, 'trials', 1);
  // The build with background checkpoints also runs with maxUnsyncedRecords 2^40 (`unbounded`): the same build
  // without the unsynced-records bound (which a build from before issue 7 does not have either).
  const variants = String(args.variants ?? (quick ? 'default' : 'default,unbounded')).split(',');
  const runs = builds.flatMap((build) => (build.name === 'before' ? [{ build, variant: 'default' }] : variants.map((variant) => ({ build, variant }))));
  const head = header('latency', builds);
  const rows = [];
  for (let trial = 0; trial < trials; trial++) {
    for (const n of sizes) {
      for (const shape of shapes) {
        for (const { build, variant } of runs) {
          const argv = ['--n', String(n), '--shape', shape, '--seconds', String(seconds), '--warmup', String(warmup), '--ckpt-every', String(ckptEvery),
            ...variantArgs(variant), ...(quick ? ['--quick'] : [])];
          const loadBefore = load();
          const r = await runTrial(SELF, argv, { build });
          const row = { build: build.name, variant, commit: build.commit, n, shape, trial, loadBefore, ...(r.results?.[0] ?? {}), error: r.error, exit: r.exit, signal: r.signal };
          if (r.error) row.stderrTail = r.stderrTail;
          rows.push(row);
          process.stderr.write(`${line(row)}\n`);
        }
      }
    }
  }
  const out = { ...head, loadAtEnd: load(), config: { sizes, shapes, seconds, warmup, ckptEveryMs: ckptEvery, trials, variants }, rows };
  console.log(table(rows));
  if (!args['no-write']) process.stderr.write(`wrote ${writeResults(args.out ?? 'latency', quick, out)}\n`);
}

/** `default`, or options joined by `+`: `unbounded` (maxUnsyncedRecords 2^40), `every<N>m` (checkpointEveryBytes N MiB). */
function variantArgs(variant) {
  const out = [];
  for (const v of variant.split('+')) {
    if (v === 'default') continue;
    else if (v === 'unbounded') out.push('--max-unsynced', String(2 ** 40));
    else if (/^every\d+m$/.test(v)) out.push('--checkpoint-every-bytes', String(Number(v.slice(5, -1)) * 2 ** 20));
    else throw new Error(`unknown variant ${v}`);
  }
  return out;
}

function variantLabel(v) {
  return v.split('+').filter((x) => x !== 'default').map((x) => (x === 'unbounded' ? 'maxUnsyncedRecords 2^40' : `checkpointEveryBytes ${x.slice(5, -1)} MiB`)).join(', ');
}

function line(r) {
  if (r.error) return `${r.build} n=${r.n} ${r.shape}: FAILED ${r.error} ${r.stderrTail ?? ''}`;
  return `${r.build}${r.variant === 'default' ? '' : ` (${r.variant})`} n=${r.n} ${r.shape}: ${fmt(r.opsPerSec)} ops/s, call p50 ${r.callMs.p50} p99 ${r.callMs.p99} p99.9 ${r.callMs.p999} max ${r.callMs.max} ms, ` +
    `loop delay max ${r.loopDelayMs.max} ms, gap max ${r.gapMs.max} ms, turn max ${r.turnMs.max} (own ${r.turnOwnMs.max}) ms, cpu wait ${r.cpuWaitShare}, faults/op ${(r.cpu.minorFaults / r.ops).toFixed(3)}, fsync rounds ${r.fsyncRounds ? `${r.fsyncRounds.count} (${r.fsyncRounds.over25ms} over 25 ms)` : '-'}, checkpoint() call max ${r.explicitCheckpoints.callMsMax} ms, ` +
    `${r.checkpoints.committed} checkpoints, load ${r.load?.[0]}`;
}

function table(rows) {
  const h = '| accounts | workload | build | ops/s | call p50 | p99 | p99.9 | max (ms) | event-loop delay max | turn max, own max (ms) | checkpoint() call max / mean (ms) | checkpoints (duration median / max, ms) | page faults per op | CPU wait | load avg |';
  const sep = '|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|';
  const body = rows.map((r) => r.error ? `| ${r.n} | ${r.shape} | ${r.build} | failed: ${r.error} |||||||||`
    : `| ${fmtN(r.n)} | ${r.shape === 'one' ? 'one-by-one' : 'transferBatch(1000)'} | ${r.build} ${r.commit}${variantLabel(r.variant) ? `, ${variantLabel(r.variant)}` : ''} | ${fmt(r.opsPerSec)} | ${r.callMs.p50} | ${r.callMs.p99} | ${r.callMs.p999} | ${r.callMs.max} | ${r.loopDelayMs.max} | ${r.turnMs?.max}, ${r.turnOwnMs?.max} | ` +
      `${r.explicitCheckpoints.callMsMax} / ${r.explicitCheckpoints.callMsMean} | ${r.checkpoints.committed}${r.checkpoints.durationMs ? ` (${r.checkpoints.durationMs.median} / ${r.checkpoints.durationMs.max})` : ''} | ${(r.cpu.minorFaults / r.ops).toFixed(3)} | ${r.cpuWaitShare ?? '-'} | ${r.load?.[0]} |`);
  return [h, sep, ...body].join('\n');
}

function fmt(x) {
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(0)}k` : x.toFixed(0);
}
function fmtN(n) {
  return n >= 1e6 ? `${n / 1e6}M` : `${n / 1e3}k`;
}
