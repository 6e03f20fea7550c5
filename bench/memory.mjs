#!/usr/bin/env node
// Anonymous vs file-backed memory (issue 7: pages a checkpoint wrote back are given back to the kernel).
//
//   node bench/memory.mjs --lib <after>/dist/index.js --before <before>/dist/index.js      # full (as root for part 2)
//   node bench/memory.mjs --quick                                                          # smoke run
//   options: --sizes 1000000,10000000  --cgroup-n 10000000  --limit-mib <MiB>  --cgroup-ops 20000000
//            --read-ahead-off (the --lib build once more, opened with readAhead: false)
//            --skip rss|cgroup (the results file keeps the skipped part of the last run)  --no-write
//
// 1. RSS (--sizes; quick: 100k): a fresh process per build and size opens a ledger (16 shards of 1M accounts;
//    quick: 16 x 100k) with the WAL on (syncEvery 1000), populates it with mintBatch, and reads its memory
//      populated  - after population, `await checkpoint()` and the give-back of written-back pages (at least 2.5 s,
//                   then until the process's anonymous memory has not fallen for 1 s; giveBackMs: when it last fell)
//      transfers  - after one pass of transferBatch(1000) over all accounts (a random permutation, each account
//                   once; the event loop turns between batches)
//      checkpoint - after `await checkpoint()` (again while it joined one that did not cover everything: walBytes > 0)
//                   and the give-back, as above
//    Readings (MiB): whole process from /proc/self/smaps_rollup (Rss, Anonymous; file = Rss - Anonymous) and
//    /proc/self/status (RssAnon, RssFile); the ledger's own shard and index mappings from /proc/self/smaps (anon:
//    private pages changed since read, which only swap could free; file: clean page-cache pages the kernel can
//    reclaim). `base` is the process before the ledger was opened (it holds the n x 32-byte keys).
// 2. Memory limit (--cgroup-n; quick: 2M): a ledger of n accounts (16 shards, 62.5% full) populated (WAL off) in a
//    process of its own and dropped from the page cache, then a fresh process inside a memory cgroup of half the
//    ledger's size (shard + index files) opens it with the WAL on and applies --cgroup-ops transfers (quick: 500k) in transferBatch(1000) calls, 90% between the 5% hot accounts
//    (the first 5% created), 10% between random accounts of the whole ledger; the policy's checkpoints only. The
//    cgroup is v1 (memory.limit_in_bytes) or v2 (memory.max), whichever is mounted; needs root. Reported: whether it
//    completes, ops/s, peak anon/file RSS of the process and of the cgroup, the cgroup's failcnt and OOM kills.
// Results: bench/results/memory.json.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs, intArg, makeKeys, rng, tmpDir, removeDir, runChild, gc, ledgerShape, BATCH } from './lib/common.mjs';
import {
  buildsFrom, importLedger, hasBackgroundCheckpoints, header, load, runTrial, writeResults, populate, sleep, yieldTurn,
  processMemory, ledgerMappings, memoryCgroup, someKeys, progress, writeEveryAccount, BENCH_DIR, buildOpenOptions,
} from './lib/runner.mjs';

const SELF = fileURLToPath(import.meta.url);
const args = parseArgs();
const quick = !!args.quick;
const GIVE_BACK_MS = 2500; // at least this long after a checkpoint before a reading
const GIVE_BACK_MAX_MS = 60_000; // ... and until the process's anonymous memory stops falling (1 s), at most this

if (args.child === 'rss') await childRss();
else if (args.child === 'populate') await childPopulate();
else if (args.child === 'skewed') await childSkewed();
else await driver();

function geometry(n) {
  return n >= 1_000_000 ? { shards: 16, accountsPerShard: 1_000_000 } : ledgerShape(n);
}

function reading(stage, dir, extra = {}) {
  gc();
  return { stage, process: processMemory(), ledger: dir ? ledgerMappings(dir) : undefined, heapMiB: +(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1), ...extra };
}

// ------------------------------------------------------------------ 1. RSS stages
async function childRss() {
  const n = intArg(args, 'n', 100_000);
  await runChild({ bench: 'memory-rss', n }, async () => {
    const mod = await importLedger(args);
    const keys = makeKeys(n, 7);
    const dir = tmpDir('memory');
    try {
      const out = [reading('base', undefined)];
      let t = performance.now();
      const ledger = await mod.Ledger.open(dir, { ...geometry(n), wal: true, syncEvery: 1000, ...buildOpenOptions(args) });
      const background = hasBackgroundCheckpoints(ledger);
      for (let s = 0; s < n; s += 100_000) {
        populate(ledger, keys.subarray(s * 32), Math.min(100_000, n - s));
        await yieldTurn();
      }
      await ledger.checkpoint();
      let giveBackMs = await settle();
      out.push(reading('populated', dir, { ms: performance.now() - t, giveBackMs }));

      // One pass over all accounts: transfers perm[2i] -> perm[2i+1] of a random permutation.
      t = performance.now();
      const done = await writeEveryAccount(ledger, keys, n);
      const s1 = ledger.stats();
      out.push(reading('transfers', dir, { ms: performance.now() - t, transfers: done, checkpointsSoFar: s1.checkpoints }));
      t = performance.now();
      await ledger.checkpoint();
      // A call joins the policy's checkpoint if one is running: pages changed after its hand-over are written by the
      // next one. Checkpoint until one covered everything (the log since the last commit is empty).
      let checkpointCalls = 1;
      while (checkpointCalls < 4 && (ledger.stats().walBytes ?? 0) > 0) {
        await ledger.checkpoint();
        checkpointCalls++;
      }
      const checkpointMs = performance.now() - t;
      giveBackMs = await settle();
      out.push(reading('checkpoint', dir, { ms: performance.now() - t, checkpointMs, checkpointCalls, giveBackMs }));
      await ledger.close();
      return [{ kind: background ? 'background checkpoints' : 'synchronous checkpoints', readings: out, load: load() }];
    } finally {
      removeDir(dir);
    }
  });
}

/**
 * Waits GIVE_BACK_MS, then until the process's anonymous memory has not fallen for a second (the ledger gives pages
 * back in slices from a timer); returns how long after the call it last fell (ms), at most GIVE_BACK_MAX_MS.
 */
async function settle() {
  const t0 = performance.now();
  let last = processMemory().anon;
  let lastFall = 0;
  while (performance.now() - t0 < GIVE_BACK_MAX_MS) {
    await sleep(250);
    const a = processMemory().anon;
    if (a < last - 1) { last = a; lastFall = performance.now() - t0; }
    const now = performance.now() - t0;
    if (now >= GIVE_BACK_MS && now - lastFall >= 1000) break;
  }
  return Math.round(lastFall);
}

// ------------------------------------------------------------------ 2. memory limit
async function childPopulate() {
  const n = intArg(args, 'n', 100_000);
  await runChild({ bench: 'memory-populate', n }, async () => {
    const mod = await importLedger(args);
    const keys = makeKeys(n, 7);
    const t = performance.now();
    // 16 shards filled to 62.5% (10M accounts: 16 x 1M): the account data is most of the ledger.
    const ledger = await mod.Ledger.open(args.dir, { shards: 16, accountsPerShard: Math.ceil(n / 16 / 0.625), wal: false });
    populate(ledger, keys, n);
    await ledger.close();
    let ledgerBytes = 0;
    for (const f of fs.readdirSync(args.dir)) {
      if (/^(shard_\d+\.bin|index_\d+\.bin)$/.test(f)) ledgerBytes += fs.statSync(path.join(args.dir, f)).blocks * 512;
    }
    return [{ populateMs: performance.now() - t, ledgerBytes }];
  });
}

async function childSkewed() {
  const n = intArg(args, 'n', 100_000);
  const total = intArg(args, 'ops', 1_000_000);
  const maxSeconds = Number(args['max-seconds'] ?? 300);
  await runChild({ bench: 'memory-skewed', n }, async () => {
    const mod = await importLedger(args);
    const hot = Math.max(2, Math.floor(n * 0.05));
    // Hot keys: accounts [0, hot). Cold: a sample of up to 1M random accounts of the whole ledger (the keys of all
    // n accounts would cost n x 32 bytes of the limit).
    const coldCount = Math.min(n, 1_000_000);
    const pick = rng(17);
    const mask = new Uint8Array(n);
    let c = 0;
    if (coldCount === n) mask.fill(1);
    else while (c < coldCount) { const i = pick() % n; if (!mask[i]) { mask[i] = 1; c++; } }
    const coldIdx = new Int32Array(coldCount);
    for (let i = 0, j = 0; i < n; i++) if (mask[i]) coldIdx[j++] = i;
    const hotKeys = someKeys(Int32Array.from({ length: hot }, (_, i) => i), 7);
    const coldKeys = someKeys(coldIdx, 7);
    const t0 = performance.now();
    const ledger = await mod.Ledger.open(args.dir, { wal: true, syncEvery: 1000, ...buildOpenOptions(args) });
    const openMs = performance.now() - t0;
    const atOpen = processMemory();
    const background = hasBackgroundCheckpoints(ledger);
    const buf = Buffer.alloc(BATCH * 72);
    for (let i = 0; i < BATCH; i++) buf.writeBigUInt64LE(1n, i * 72 + 64);
    const next = rng(23);
    const peak = { anon: 0, file: 0, rss: 0, ledgerAnon: 0 };
    const timeline = [];
    let done = 0;
    const start = performance.now();
    let nextSample = start;
    let nextProgress = start;
    let ledgerAnon = 0;
    const sample = (withLedger) => {
      const m = processMemory();
      if (withLedger) {
        const l = ledgerMappings(args.dir); // walks the ledger's page tables: every 2 s only
        ledgerAnon = l.data.anon + l.index.anon;
      }
      peak.anon = Math.max(peak.anon, m.anon);
      peak.file = Math.max(peak.file, m.file);
      peak.rss = Math.max(peak.rss, m.rss);
      peak.ledgerAnon = +Math.max(peak.ledgerAnon, ledgerAnon).toFixed(1);
      return { t: +((performance.now() - start) / 1000).toFixed(1), ops: done, anon: m.anon, file: m.file, ledgerAnon: +ledgerAnon.toFixed(1) };
    };
    while (done < total && performance.now() - start < maxSeconds * 1000) {
      for (let k = 0; k < BATCH; k++) {
        const o = k * 72;
        if (next() % 10 !== 0) {
          const a = next() % hot;
          let b = next() % hot;
          if (b === a) b = (a + 1) % hot;
          hotKeys.copy(buf, o, a * 32, a * 32 + 32);
          hotKeys.copy(buf, o + 32, b * 32, b * 32 + 32);
        } else {
          const a = next() % coldCount;
          let b = next() % coldCount;
          if (b === a) b = (a + 1) % coldCount;
          coldKeys.copy(buf, o, a * 32, a * 32 + 32);
          coldKeys.copy(buf, o + 32, b * 32, b * 32 + 32);
        }
      }
      const st = ledger.transferBatch(buf);
      if (st[0] !== 0) throw new Error(`transferBatch status ${st[0]}`);
      done += BATCH;
      const now = performance.now();
      if (now >= nextSample) {
        nextSample = now + 250;
        const s = sample(now >= nextProgress);
        if (now >= nextProgress) {
          nextProgress = now + 2000;
          timeline.push(s);
          progress({ ...s, peak });
        }
      }
      await yieldTurn();
    }
    const seconds = (performance.now() - start) / 1000;
    const stats = ledger.stats();
    timeline.push(sample(true));
    await ledger.close();
    return [{
      kind: background ? 'background checkpoints' : 'synchronous checkpoints', openMs, completed: done >= total, ops: done, seconds,
      opsPerSec: done / seconds, atOpenMiB: atOpen, peakMiB: peak, checkpoints: stats.checkpoints ?? null,
      timeline: timeline.filter((_, i) => i % Math.ceil(timeline.length / 20) === 0 || i === timeline.length - 1), load: load(),
    }];
  });
}

// ------------------------------------------------------------------ driver
async function driver() {
  const builds = buildsFrom(args);
  const head = header('memory', builds);
  const skip = new Set(String(args.skip ?? '').split(','));
  const out = { ...head, rss: [], limit: [] };
  if (!skip.has('rss')) {
    const sizes = String(args.sizes ?? (quick ? '100000' : '1000000,10000000')).split(',').map(Number);
    for (const n of sizes) {
      for (const build of builds) {
        const r = await runTrial(SELF, ['rss', '--n', String(n)], { build });
        const row = { build: build.name, commit: build.commit, n, ...(r.results?.[0] ?? {}), error: r.error };
        if (r.error) row.stderrTail = r.stderrTail;
        out.rss.push(row);
        process.stderr.write(r.error ? `rss ${build.name} n=${n}: FAILED ${r.error} ${r.stderrTail}\n`
          : `rss ${build.name} n=${n}: ${row.readings.map((x) => `${x.stage} anon ${x.process.anon} file ${x.process.file}`).join('; ')}\n`);
      }
    }
  }
  if (!skip.has('cgroup')) {
    const n = intArg(args, 'cgroup-n', quick ? 2_000_000 : 10_000_000);
    const ops = intArg(args, 'cgroup-ops', quick ? 500_000 : 20_000_000);
    const maxSeconds = intArg(args, 'max-seconds', quick ? 60 : 300);
    const dirs = [];
    try {
      for (const build of builds) {
        const dir = tmpDir(`memory-limit-${build.name}`);
        dirs.push(dir);
        const p = await runTrial(SELF, ['populate', '--n', String(n), '--dir', dir], { build });
        if (p.error) throw new Error(`populate (${build.name}): ${p.error} ${p.stderrTail}`);
        build.ledgerBytes = p.results[0].ledgerBytes;
        dropCache(dir);
      }
      const ledgerBytes = Math.max(...builds.map((b) => b.ledgerBytes));
      const limitBytes = args['limit-mib'] ? intArg(args, 'limit-mib', 0) * 2 ** 20 : Math.round(ledgerBytes / 2 / 4096) * 4096;
      for (const [i, build] of builds.entries()) {
        let cg;
        try {
          cg = memoryCgroup(`gl-bench-${process.pid}`, limitBytes);
        } catch (e) {
          out.limit.push({ build: build.name, skipped: `no memory cgroup: ${e.message} (run as root)` });
          process.stderr.write(`cgroup: skipped (${e.message})\n`);
          break;
        }
        try {
          const r = await runTrial(SELF, ['skewed', '--n', String(n), '--dir', dirs[i], '--ops', String(ops), '--max-seconds', String(maxSeconds)],
            { build, cgroup: cg, timeoutS: maxSeconds + 120 });
          const res = r.results?.[0];
          const row = {
            build: build.name, commit: build.commit, n, ops, ledgerMiB: +(ledgerBytes / 2 ** 20).toFixed(1), limitMiB: +(limitBytes / 2 ** 20).toFixed(1),
            cgroupVersion: cg.version, completed: !!res?.completed, exit: r.exit, signal: r.signal, ...(res ?? {}),
            cgroup: cg.stats(), error: r.error, lastProgress: res ? undefined : r.progress, stderrTail: r.error ? r.stderrTail : undefined,
          };
          out.limit.push(row);
          process.stderr.write(`limit ${build.name}: ${row.completed ? 'completed' : `did not complete (exit ${r.exit}, ${r.signal ?? 'no signal'})`}, ` +
            `${res ? `${fmt(res.opsPerSec)} ops/s, peak anon ${res.peakMiB.anon} file ${res.peakMiB.file}` : `last progress ${JSON.stringify(r.progress)}`}, cgroup ${JSON.stringify(row.cgroup)}\n`);
        } finally {
          cg.remove();
        }
      }
    } finally {
      for (const d of dirs) removeDir(d);
    }
  }
  out.loadAtEnd = load();
  // A run of one part (--skip) keeps the other part of the results file, with that run's header.
  const file = path.join(BENCH_DIR, 'results', `memory${quick ? '-quick' : ''}.json`);
  if (skip.size && fs.existsSync(file)) {
    const prev = JSON.parse(fs.readFileSync(file, 'utf8'));
    const { rss, limit, ...prevHead } = prev;
    if (skip.has('rss') && prev.rss?.length) { out.rss = prev.rss; out.rssFrom = prev.rssFrom ?? prevHead; }
    if (skip.has('cgroup') && prev.limit?.length) { out.limit = prev.limit; out.limitFrom = prev.limitFrom ?? prevHead; }
  }
  console.log(tables(out));
  if (!args['no-write']) process.stderr.write(`wrote ${writeResults('memory', quick, out)}\n`);
}

/**
 * Drops the ledger's files from the page cache (they were written by the populating process, outside the cgroup,
 * and cached pages stay charged to whoever read them first): `dd iflag=nocache count=0` per file, i.e.
 * posix_fadvise(DONTNEED) of the whole (clean) file.
 */
function dropCache(dir) {
  for (const f of fs.readdirSync(dir)) {
    const r = spawnSync('dd', [`if=${path.join(dir, f)}`, 'iflag=nocache', 'count=0', 'status=none']);
    if (r.status !== 0) process.stderr.write(`warning: could not drop ${f} from the page cache: ${r.stderr}\n`);
  }
}

function tables(out) {
  const lines = [];
  if (out.rss.length) {
    lines.push('| accounts | build | stage | process anon | process file | ledger anon (data + index) | ledger file (data + index) | give-back done after (ms) | load avg |', '|---|---|---|--:|--:|--:|--:|--:|--:|');
    for (const r of out.rss) {
      if (r.error) { lines.push(`| ${r.n} | ${r.build} | failed: ${r.error} ||||||`); continue; }
      for (const x of r.readings) {
        const l = x.ledger;
        lines.push(`| ${fmtN(r.n)} | ${r.build} ${r.commit} | ${x.stage} | ${x.process.anon} | ${x.process.file} | ${l ? `${+(l.data.anon + l.index.anon).toFixed(1)}` : '-'} | ${l ? `${+(l.data.file + l.index.file).toFixed(1)}` : '-'} | ${x.giveBackMs ?? ''} | ${r.load?.[0] ?? ''} |`);
      }
    }
    lines.push('(MiB)');
  }
  if (out.limit.length) {
    lines.push('', '| build | ledger / limit (MiB) | completed | ops/s | peak process anon / file (MiB) | peak ledger anon | cgroup peak (MiB) | failcnt | OOM kills | exit |', '|---|--:|---|--:|--:|--:|--:|--:|--:|---|');
    for (const r of out.limit) {
      if (r.skipped) { lines.push(`| ${r.build} | skipped: ${r.skipped} |||||||||`); continue; }
      const p = r.peakMiB ?? r.lastProgress?.peak;
      lines.push(`| ${r.build} ${r.commit} | ${r.ledgerMiB} / ${r.limitMiB} | ${r.completed ? 'yes' : `no (${r.ops ?? r.lastProgress?.ops ?? '?'} ops done${r.lastProgress ? ` by ${r.lastProgress.t} s` : ''})`} | ` +
        `${r.opsPerSec ? fmt(r.opsPerSec) : r.lastProgress ? fmt(r.lastProgress.ops / r.lastProgress.t) + ' (until killed)' : '-'} | ${p ? `${p.anon} / ${p.file}` : '-'} | ${p?.ledgerAnon ?? '-'} | ` +
        `${r.cgroup?.peakMiB} | ${r.cgroup?.failcnt} | ${r.cgroup?.oomKills} | ${r.signal ?? r.exit} |`);
    }
  }
  return lines.join('\n');
}

function fmt(x) {
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(0)}k` : x.toFixed(0);
}
function fmtN(n) {
  return n >= 1e6 ? `${n / 1e6}M` : `${n / 1e3}k`;
}
