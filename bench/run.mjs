#!/usr/bin/env node
// The benchmark driver (`npm run bench`, `npm run bench -- --quick`).
//
//   node bench/run.mjs [--quick] [--only a,b] [--trials k] [--no-write] [--report-only]
//
//   --quick        100k accounts, short timings, 2 trials, a subset of the ledger-only rows: < 1 minute
//   --only a,b     run only the jobs tagged a or b: a benchmark (insert, get, transfer, ledger-ops,
//                  ledger-open), a contender (native, js, lmdb, better-sqlite3, classic-level), an op or
//                  a wal mode. Rows from an earlier run of the same mode are kept for the report.
//   --trials k     trials per job (default: 5 full, 2 quick; the open scenarios 3 and 1)
//   --no-write     print the summary only; do not touch bench/results or docs/
//   --report-only  re-render docs/benchmarks.md and the chart from bench/results/*.json
//
// Each trial is a fresh child process (`node --expose-gc bench/<file>.mjs ...`) that prints one
// `@@RESULT {json}` line. The driver keeps every trial, reports the median and the spread (min..max)
// and the ratio to the native engine, writes the raw trials to bench/results/<full|quick>.json, the
// report to docs/benchmarks.md, the chart to docs/bench-chart.svg, and prints the README summary.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs, RESULT_PREFIX } from './lib/common.mjs';
import { renderReport, renderSummary, renderChart, fmtRate } from './lib/report.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const args = parseArgs();
const quick = !!args.quick;
const modeName = quick ? 'quick' : 'full';
const RESULTS_DIR = path.join(HERE, 'results');
const resultsFile = (m) => path.join(RESULTS_DIR, `${m}.json`);
const PEERS = ['native', 'js', 'lmdb', 'better-sqlite3', 'classic-level'];
const ENGINES = ['native', 'js'];

// ------------------------------------------------------------------ the job list
function jobs() {
  const list = [];
  const trials = quick ? 1 : 3;
  const add = (j) => list.push({ trials, ...j });
  // Peer comparison (issue 4): same workload for every contender.
  for (const c of PEERS) {
    for (const m of ['durable', 'fast']) add({ file: 'insert.mjs', bench: 'insert', contender: c, mode: m, argv: ['--contender', c, '--mode', m] });
    add({ file: 'get.mjs', bench: 'get', contender: c, mode: 'read', argv: ['--contender', c] });
    for (const m of ['durable', 'fast']) add({ file: 'transfer.mjs', bench: 'transfer', contender: c, mode: m, argv: ['--contender', c, '--mode', m] });
  }
  // Ledger-only operations (issue 2), both engines. Full: one process per row. Quick: the rows of one
  // WAL mode share a process (and a populated ledger), to stay under a minute.
  for (const e of ENGINES) {
    const rows = { off: [], on: [], sync: [] };
    for (const shape of ['one', 'b1000', 'b10000']) {
      for (const op of ['mint', 'transfer']) for (const wal of ['off', 'on', 'sync']) rows[wal].push(`${op}:${shape}`);
      rows.on.push(`get:${shape}`);
    }
    rows.on.push('balance:one');
    if (quick) {
      rows.off = ['mint:b1000', 'transfer:b1000'];
      rows.on = ['mint:one', 'transfer:one', 'get:one', 'mint:b1000', 'transfer:b1000', 'get:b1000'];
      rows.sync = ['mint:b1000', 'transfer:b1000'];
    }
    for (const wal of ['off', 'on', 'sync']) {
      const groups = quick ? [rows[wal]] : rows[wal].map((r) => [r]);
      for (const g of groups) {
        add({ file: 'ledger-ops.mjs', bench: 'ledger-ops', engine: e, wal, ops: g, argv: ['--engine', e, '--wal', wal, '--ops', g.join(',')] });
      }
    }
    // Opening: clean, index rebuild, after kill -9 (one process chain per size).
    // Full: 16 x 1M capacity for every size, so only the data size changes. Quick: 100K accounts in 16 x 100K.
    const sizes = quick
      ? [[100_000, 100_000, 100_000, 1]]
      : [[10_000, 100_000, 1_000_000, 3], [1_000_000, 1_000_000, 1_000_000, 3], [10_000_000, 1_000_000, 1_000_000, 1]];
    for (const [n, walOps, aps, t] of sizes) {
      list.push({ file: 'ledger-ops.mjs', bench: 'ledger-open', engine: e, n, walOps, trials: t,
        argv: ['--engine', e, '--scenario', 'open', '--n', String(n), '--wal-ops', String(walOps), '--aps', String(aps)] });
    }
  }
  if (args.trials) for (const j of list) j.trials = Number(args.trials);
  if (args.only) {
    const want = new Set(String(args.only).split(','));
    const tags = (j) => [j.bench, j.bench === 'ledger-open' ? 'open' : undefined, j.contender, j.engine, j.wal, j.mode, j.file.replace('.mjs', ''), ...(j.ops ?? []), ...(j.ops ?? []).map((o) => o.split(':')[0])];
    return list.filter((j) => tags(j).some((t) => t && want.has(t)));
  }
  return list;
}

/** Stable id of one result row (a child can return several rows). */
function rowId(job, r) {
  if (job.bench === 'ledger-ops') return `ops/${job.engine}/${r.op}/${r.shape}/${job.wal}`;
  if (job.bench === 'ledger-open') return `open/${job.engine}/${job.n}/${r.name}`;
  return `peer/${job.bench}/${job.mode}/${job.contender}`;
}

// ------------------------------------------------------------------ running children
function runChild(job) {
  const argv = ['--expose-gc', path.join(HERE, job.file), ...job.argv, ...(quick ? ['--quick'] : [])];
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...snapshot.env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const limit = setTimeout(() => child.kill('SIGKILL'), (quick ? 120 : 1800) * 1000);
    child.on('close', (code, signal) => {
      clearTimeout(limit);
      const line = out.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
      let res;
      try { res = line ? JSON.parse(line.slice(RESULT_PREFIX.length)) : undefined; } catch { res = undefined; }
      if (!res) res = { error: `no result (exit ${code}${signal ? `, ${signal}` : ''}): ${err.trim().split('\n').slice(-5).join(' | ')}` };
      else if (res.error) res.error += ` | ${err.trim().split('\n').slice(-3).join(' | ')}`;
      resolve({ ...res, childMs: performance.now() - t0 });
    });
  });
}

function machine() {
  const cpus = os.cpus();
  let fsType = '?';
  try {
    const tmp = fs.realpathSync(os.tmpdir());
    let best = '';
    for (const l of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [dev, mnt, type] = l.split(' ');
      if (mnt && tmp.startsWith(mnt) && mnt.length > best.length) { best = mnt; fsType = `${type} on ${dev} (${mnt})`; }
    }
  } catch { /* not Linux */ }
  return {
    cpu: cpus[0]?.model ?? '?', cores: cpus.length, ramGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version, platform: `${os.type()} ${os.release()} ${os.arch()}`, tmpdir: os.tmpdir(), fs: fsType,
  };
}

function gitRev() {
  const rev = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' });
  if (rev.status !== 0) return undefined;
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'src', 'native', 'binding.gyp'], { cwd: ROOT, encoding: 'utf8' });
  return `${rev.stdout.trim()}${dirty.stdout.trim() ? ' + uncommitted changes in src/ or native/' : ''}`;
}

/** Warns when dist/ or the addon is older than its sources (the bench runs what is built). */
function staleBuildWarning() {
  const newest = (dir, re) => {
    let t = 0;
    const walk = (d) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (re.test(e.name)) t = Math.max(t, fs.statSync(p).mtimeMs);
      }
    };
    try { walk(path.join(ROOT, dir)); } catch { /* missing */ }
    return t;
  };
  const warn = [];
  const dist = newest('dist', /\.js$/);
  const addon = newest('build/Release', /\.node$/);
  if (!dist) warn.push('dist/ is not built: run `npm run build` (the ledger rows will be skipped)');
  else if (newest('src', /\.ts$/) > dist) warn.push('src/ is newer than dist/: run `npm run build` to benchmark the current code');
  if (addon && newest('native', /\.(cpp|hpp|h|cc)$/) > addon) warn.push('native/ is newer than build/Release: run `npx node-gyp rebuild` to benchmark the current code');
  return warn;
}

/**
 * Copies dist/ and the addon to bench/.snapshot-<pid>/ (inside the package, so dist's own requires
 * still resolve from node_modules): every trial of this run loads that copy.
 */
function snapshotBuild() {
  const dir = path.join(HERE, `.snapshot-${process.pid}`);
  const dist = path.join(ROOT, 'dist');
  if (!fs.existsSync(path.join(dist, 'index.mjs'))) return { env: {} };
  fs.cpSync(dist, path.join(dir, 'dist'), { recursive: true });
  const env = { BENCH_LEDGER_DIST: path.join(dir, 'dist', 'index.mjs') };
  const addon = path.join(ROOT, 'build', 'Release', 'geometric_ledger.node');
  let addonTime;
  if (fs.existsSync(addon)) {
    fs.copyFileSync(addon, path.join(dir, 'geometric_ledger.node'));
    env.GL_ADDON = path.join(dir, 'geometric_ledger.node');
    addonTime = fs.statSync(addon).mtime.toISOString();
  }
  const remove = () => fs.rmSync(dir, { recursive: true, force: true });
  process.on('exit', remove);
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { remove(); process.exit(130); });
  return { env, built: { dist: fs.statSync(path.join(dist, 'index.js')).mtime.toISOString(), addon: addonTime } };
}

function commandLine() {
  const rest = process.argv.slice(2).join(' ');
  if (process.env.npm_lifecycle_event === 'bench') return `npm run bench${rest ? ` -- ${rest}` : ''}`;
  return `node bench/run.mjs${rest ? ` ${rest}` : ''}`;
}

function loadResults(m) {
  try { return JSON.parse(fs.readFileSync(resultsFile(m), 'utf8')); } catch { return undefined; }
}

function writeOutputs() {
  const full = loadResults('full');
  const q = loadResults('quick');
  fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'docs', 'benchmarks.md'), renderReport({ full, quick: q }));
  const chartFrom = full ?? q;
  if (chartFrom) fs.writeFileSync(path.join(ROOT, 'docs', 'bench-chart.svg'), renderChart(chartFrom));
}

// ------------------------------------------------------------------ main
if (args['report-only']) {
  writeOutputs();
  const r = loadResults(modeName) ?? loadResults('full') ?? loadResults('quick');
  if (r) console.log(renderSummary(r));
  process.exit(0);
}

const list = jobs();
const commitAtStart = gitRev();
const snapshot = process.env.GL_ADDON || process.env.BENCH_LEDGER_DIST ? { env: {} } : snapshotBuild();
const totalTrials = list.reduce((s, j) => s + j.trials, 0);
const started = Date.now();
const t0 = performance.now();
const rows = new Map(); // id -> row
const load = { start: os.loadavg()[0], max: os.loadavg()[0] };
const skipped = new Map(); // contender/engine -> reason
const failures = [];
let done = 0;
console.error(`geometric-ledger bench (${modeName}): ${list.length} jobs, ${totalTrials} trials, each in a fresh process`);
for (const w of staleBuildWarning()) console.error(`warning: ${w}`);
if (load.start > 1.5) console.error(`warning: load average ${load.start.toFixed(2)} on ${os.cpus().length} cores: something else is running, numbers will be noisy`);

// Trials are interleaved (round r of every job, then round r+1) so that a slow phase of the machine
// spreads over all rows instead of landing on one.
const maxTrials = Math.max(...list.map((j) => j.trials));
for (let round = 0; round < maxTrials; round++) {
  for (const job of list) {
    if (round >= job.trials) continue;
    const who = job.contender ?? job.engine;
    done++;
    const tag = job.bench === 'ledger-ops' ? `${job.bench} ${job.engine} wal=${job.wal} ${job.ops.join(',')}`
      : job.bench === 'ledger-open' ? `${job.bench} ${job.engine} n=${job.n}` : `${job.bench} ${job.contender} ${job.mode}`;
    if (skipped.has(who)) continue;
    load.max = Math.max(load.max, os.loadavg()[0]);
    const res = await runChild(job);
    const secs = (res.childMs / 1000).toFixed(1);
    if (res.skipped) {
      skipped.set(who, res.skipped);
      console.error(`[${done}/${totalTrials}] ${tag}: SKIPPED (${res.skipped})`);
      continue;
    }
    if (res.error) {
      failures.push({ tag, round, error: res.error });
      console.error(`[${done}/${totalTrials}] ${tag}: FAILED ${res.error.slice(0, 300)}`);
      continue;
    }
    for (const r of res.results) {
      const id = rowId(job, r);
      let row = rows.get(id);
      if (!row) {
        row = { id, bench: job.bench, contender: job.contender, engine: job.engine, mode: job.mode, op: r.op, shape: r.shape,
          wal: job.wal, n: res.n ?? job.n, walOps: job.walOps, name: r.name, metric: r.metric ?? 'rate', unit: r.unit ?? 'ops/s',
          config: r.config, trials: [] };
        rows.set(id, row);
      }
      const { config, ...rest } = r;
      row.trials.push({ value: r.value ?? r.opsPerSec, childMs: res.childMs, ...rest });
    }
    const first = res.results[0];
    const v = first.metric === 'ms' ? `${first.value.toFixed(2)} ms` : fmtRate(first.value ?? first.opsPerSec);
    console.error(`[${done}/${totalTrials}] ${tag}: ${v}${res.results.length > 1 ? ` (+${res.results.length - 1} rows)` : ''} (${secs} s)`);
  }
}
const elapsedMs = performance.now() - t0;
load.end = os.loadavg()[0];

let run = {
  mode: modeName, command: commandLine(), date: new Date(started).toISOString(), elapsedMs, machine: machine(), load, commit: commitAtStart, built: snapshot.built,
  skipped: Object.fromEntries(skipped), failures, rows: [...rows.values()],
};
if (args.only) {
  // Keep the rows of the previous run of this mode that were not re-measured, and its metadata; this
  // partial run is listed under `reruns`.
  const prev = loadResults(modeName);
  if (prev) {
    const fresh = new Set(run.rows.map((r) => r.id));
    const ran = (c) => list.some((j) => (j.contender ?? j.engine) === c);
    run = {
      ...prev,
      rows: [...prev.rows.filter((r) => !fresh.has(r.id)), ...run.rows],
      skipped: { ...Object.fromEntries(Object.entries(prev.skipped ?? {}).filter(([c]) => !ran(c))), ...run.skipped },
      failures: [...(prev.failures ?? []).filter((f) => !list.some((j) => f.tag.includes(j.contender ?? j.engine))), ...run.failures],
      reruns: [...(prev.reruns ?? []), { command: run.command, date: run.date, elapsedMs: run.elapsedMs, commit: run.commit, built: run.built, load: run.load, rows: run.rows.map((r) => r.id) }],
    };
  }
}
if (!args['no-write']) {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  fs.writeFileSync(resultsFile(modeName), JSON.stringify(run, null, 1));
  writeOutputs();
}
console.log(renderSummary(run));
console.error(`done in ${(elapsedMs / 1000).toFixed(1)} s${failures.length ? `, ${failures.length} failed trials` : ''}` +
  `${args['no-write'] ? '' : '; wrote bench/results/' + modeName + '.json, docs/benchmarks.md, docs/bench-chart.svg'}`);
if (failures.length) process.exitCode = 1;
