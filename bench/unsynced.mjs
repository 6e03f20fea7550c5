#!/usr/bin/env node
// The throughput cost of the power-loss bound (issue 7's maxUnsyncedRecords: a writer at the bound waits for the
// group fsync).
//
//   node bench/unsynced.mjs --lib <after>/dist/index.js [--before <before>/dist/index.js]   # full: 1M accounts
//   node bench/unsynced.mjs --quick                                                         # smoke run: 100k
//   options: --n 1000000 --bounds 1,8,64,none --shapes one,b1000 --trials 3 --time 5000 --no-write
//
// One fresh process per (build, bound, shape, trial), trials interleaved: populate n accounts (16 shards of 1M;
// quick: 16 x 100k) with WAL off, close, reopen with { wal: true, syncEvery: 1000, maxUnsyncedRecords: k x 1000 }
// (`none`: 2^40, i.e. no bound, for comparison; the --before build has no such option and no bound), then time with
// tinybench (--time ms, after a warm-up): `one` = 1,000 transfer(a, b, 1) calls per iteration on random existing
// accounts, `b1000` = one transferBatch of 1,000 prebuilt random transfers per iteration. Nothing is awaited; the
// checkpoint policy is the default. Reported: median ops/s of the trials (and min..max), fsyncs per 1,000 ops.
// Results: bench/results/unsynced.json.
import { fileURLToPath } from 'node:url';
import {
  parseArgs, intArg, makeKeys, keyViews, randomPairs, transferBuffer, tmpDir, removeDir, runChild, timeIt, ledgerShape,
} from './lib/common.mjs';
import { buildsFrom, importLedger, hasBackgroundCheckpoints, header, load, runTrial, writeResults, populate } from './lib/runner.mjs';

const SELF = fileURLToPath(import.meta.url);
const args = parseArgs();
const quick = !!args.quick;
const SYNC_EVERY = 1000;

if (args.child) await child();
else await driver();

async function child() {
  const n = intArg(args, 'n', 100_000);
  const shape = args.shape ?? 'one';
  const bound = args.bound ?? '8';
  const time = intArg(args, 'time', 500);
  await runChild({ bench: 'unsynced', n, shape, bound }, async () => {
    const mod = await importLedger(args);
    const keys = makeKeys(n, 7);
    const dir = tmpDir('unsynced');
    try {
      const loader = await mod.Ledger.open(dir, { ...(n >= 1_000_000 ? { shards: 16, accountsPerShard: 1_000_000 } : ledgerShape(n)), wal: false });
      populate(loader, keys, n);
      await loader.close();
      const maxUnsyncedRecords = bound === 'none' ? 2 ** 40 : Number(bound) * SYNC_EVERY;
      const ledger = await mod.Ledger.open(dir, { wal: true, syncEvery: SYNC_EVERY, maxUnsyncedRecords });
      let fn;
      if (shape === 'one') {
        const views = keyViews(keys);
        const pairs = randomPairs(1 << 20, n, 11);
        let i = 0;
        fn = () => {
          for (let k = 0; k < 1000; k++) {
            if (i === pairs.length) i = 0;
            ledger.transfer(views[pairs[i]], views[pairs[i + 1]], 1);
            i += 2;
          }
        };
      } else {
        const pool = [];
        for (let k = 0; k < 256; k++) pool.push(transferBuffer(keys, randomPairs(1000, n, 100 + k), 1));
        let k = 0;
        fn = () => { ledger.transferBatch(pool[k++ % pool.length]); };
      }
      const s0 = ledger.stats();
      const r = await timeIt(`transfer ${shape} bound ${bound}`, fn, 1000,
        { time, iterations: 10, warmupTime: Math.min(1000, time / 5), warmupIterations: 5 }, false);
      const s1 = ledger.stats();
      const background = hasBackgroundCheckpoints(ledger);
      await ledger.close();
      return [{
        kind: background ? 'background checkpoints' : 'synchronous checkpoints', opsPerSec: r.opsPerSec, ops: r.ops, ms: r.ms,
        callMsP50: r.callMsP50, callMsMax: r.callMsMax,
        // includes the warm-up (stats are read around the whole timeIt)
        fsyncsPer1k: ((s1.fsyncs - s0.fsyncs) * 1000) / Math.max(1, Number(s1.lsn - s0.lsn)),
        checkpoints: background ? s1.checkpoints - s0.checkpoints : null,
        maxUnsyncedRecords: background ? maxUnsyncedRecords : null, load: load(),
      }];
    } finally {
      removeDir(dir);
    }
  });
}

async function driver() {
  const builds = buildsFrom(args);
  const n = intArg(args, 'n', quick ? 100_000 : 1_000_000);
  const bounds = String(args.bounds ?? '1,8,64,none').split(',');
  const shapes = String(args.shapes ?? 'one,b1000').split(',');
  const trials = intArg(args, 'trials', quick ? 1 : 3);
  const time = intArg(args, 'time', quick ? 500 : 5000);
  const head = header('unsynced', builds);
  const jobs = [];
  for (const build of builds) {
    for (const shape of shapes) {
      // A build without the option (before issue 7) runs once per shape: it has no bound.
      for (const bound of build.name === 'before' ? ['none'] : bounds) jobs.push({ build, shape, bound, trials: [] });
    }
  }
  for (let t = 0; t < trials; t++) {
    for (const j of jobs) {
      const r = await runTrial(SELF, ['--n', String(n), '--shape', j.shape, '--bound', j.bound, '--time', String(time), ...(quick ? ['--quick'] : [])], { build: j.build });
      const res = r.results?.[0];
      j.trials.push(res ? { opsPerSec: res.opsPerSec, fsyncsPer1k: res.fsyncsPer1k, checkpoints: res.checkpoints, callMsMax: res.callMsMax, load: res.load }
        : { error: `${r.error} ${r.stderrTail}` });
      process.stderr.write(`${j.build.name} ${j.shape} bound ${j.bound}: ${res ? `${fmt(res.opsPerSec)} ops/s, ${res.fsyncsPer1k.toFixed(2)} fsyncs/1k, load ${res.load[0]}` : `FAILED ${r.error} ${r.stderrTail}`}\n`);
    }
  }
  const rows = jobs.map((j) => {
    const ok = j.trials.filter((x) => !x.error).map((x) => x.opsPerSec).sort((a, b) => a - b);
    return {
      build: j.build.name, commit: j.build.commit, shape: j.shape, bound: j.bound,
      maxUnsyncedRecords: j.bound === 'none' ? null : Number(j.bound) * SYNC_EVERY,
      opsPerSec: ok.length ? ok[Math.floor((ok.length - 1) / 2)] : null, min: ok[0] ?? null, max: ok[ok.length - 1] ?? null, trials: j.trials,
    };
  });
  const out = { ...head, loadAtEnd: load(), config: { n, syncEvery: SYNC_EVERY, bounds, shapes, trials, timeMs: time }, rows };
  console.log(table(rows));
  if (!args['no-write']) process.stderr.write(`wrote ${writeResults('unsynced', quick, out)}\n`);
}

function table(rows) {
  const h = '| build | maxUnsyncedRecords | one-by-one ops/s (min..max) | transferBatch(1000) ops/s (min..max) | fsyncs per 1k ops (one / b1000) |';
  const lines = [h, '|---|--:|--:|--:|--:|'];
  const keys = [...new Set(rows.map((r) => `${r.build}|${r.bound}`))];
  for (const k of keys) {
    const [build, bound] = k.split('|');
    const one = rows.find((r) => r.build === build && r.bound === bound && r.shape === 'one');
    const b = rows.find((r) => r.build === build && r.bound === bound && r.shape === 'b1000');
    const cell = (r) => (r?.opsPerSec ? `${fmt(r.opsPerSec)} (${fmt(r.min)}..${fmt(r.max)})` : '-');
    const fs = (r) => (r ? median(r.trials.filter((x) => !x.error).map((x) => x.fsyncsPer1k))?.toFixed(2) ?? '-' : '-');
    const label = build === 'before' ? 'none (no bound in this build)' : bound === 'none' ? '2^40 (no bound)' : `${Number(bound) * SYNC_EVERY} (${bound} x syncEvery)`;
    lines.push(`| ${build} ${rows.find((r) => r.build === build).commit} | ${label} | ${cell(one)} | ${cell(b)} | ${fs(one)} / ${fs(b)} |`);
  }
  return lines.join('\n');
}

function median(xs) {
  if (!xs.length) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}
function fmt(x) {
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(0)}k` : x.toFixed(0);
}
