// Shared helpers for the benchmark children (bench/insert.mjs, get.mjs, transfer.mjs,
// ledger-ops.mjs). Every child is one trial in a fresh process: it builds its workload
// from a seeded PRNG (the same keys and pairs for every contender), times with tinybench
// and prints exactly one line `@@RESULT {json}` on stdout for bench/run.mjs.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Bench } from 'tinybench';

export const RESULT_PREFIX = '@@RESULT ';
export const BATCH = 1000;
export const INITIAL_BALANCE = 1_000_000_000; // every pre-populated account; transfers move 1

// ------------------------------------------------------------------ command line
/** Parses `--key value` and bare `--flag` arguments into an object (numbers stay strings). */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const k = a.slice(2);
    if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[k] = argv[++i];
    else out[k] = true;
  }
  return out;
}

export function intArg(args, name, dflt) {
  if (args[name] === undefined) return dflt;
  const v = Number(args[name]);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${name} must be a non-negative integer`);
  return v;
}

// ------------------------------------------------------------------ workload
/** sfc32: small, fast, seedable; the workload is identical for every contender. */
export function rng(seed) {
  let a = 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = seed >>> 0;
  const next = () => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    const t = (a + b + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 16; i++) next();
  return next;
}

/** count random 32-byte keys, packed, key i at i*32. Writing them also touches every page. */
export function makeKeys(count, seed = 1) {
  const next = rng(seed);
  const buf = Buffer.allocUnsafeSlow(count * 32);
  const u32 = new Uint32Array(buf.buffer, buf.byteOffset, count * 8);
  for (let i = 0; i < u32.length; i++) u32[i] = next();
  return buf;
}

/** One Buffer view per key (no copy), for APIs that take a key object per call. */
export function keyViews(keys, start = 0, count = keys.length / 32 - start) {
  const views = new Array(count);
  for (let i = 0; i < count; i++) views[i] = keys.subarray((start + i) * 32, (start + i + 1) * 32);
  return views;
}

/** count random account indices in [0, n). */
export function randomIndices(count, n, seed) {
  const next = rng(seed);
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) out[i] = next() % n;
  return out;
}

/** count random (from, to) pairs with from != to, as [from0, to0, from1, to1, ...]. */
export function randomPairs(count, n, seed) {
  const next = rng(seed);
  const out = new Int32Array(count * 2);
  for (let i = 0; i < count; i++) {
    const a = next() % n;
    let b = next() % n;
    while (b === a) b = next() % n;
    out[2 * i] = a;
    out[2 * i + 1] = b;
  }
  return out;
}

// Ledger wire formats (prebuilt outside the timed region).
export function mintBuffer(keys, indices, amount) {
  const n = indices.length;
  const buf = Buffer.allocUnsafeSlow(n * 40);
  for (let i = 0; i < n; i++) {
    keys.copy(buf, i * 40, indices[i] * 32, indices[i] * 32 + 32);
    buf.writeBigUInt64LE(BigInt(amount), i * 40 + 32);
  }
  return buf;
}
export function mintBufferRange(keys, start, count, amount) {
  const buf = Buffer.allocUnsafeSlow(count * 40);
  const amt = BigInt(amount);
  for (let i = 0; i < count; i++) {
    keys.copy(buf, i * 40, (start + i) * 32, (start + i + 1) * 32);
    buf.writeBigUInt64LE(amt, i * 40 + 32);
  }
  return buf;
}
export function transferBuffer(keys, pairs, amount) {
  const n = pairs.length / 2;
  const buf = Buffer.allocUnsafeSlow(n * 72);
  const amt = BigInt(amount);
  for (let i = 0; i < n; i++) {
    keys.copy(buf, i * 72, pairs[2 * i] * 32, pairs[2 * i] * 32 + 32);
    keys.copy(buf, i * 72 + 32, pairs[2 * i + 1] * 32, pairs[2 * i + 1] * 32 + 32);
    buf.writeBigUInt64LE(amt, i * 72 + 64);
  }
  return buf;
}
export function keyBuffer(keys, indices) {
  const n = indices.length;
  const buf = Buffer.allocUnsafeSlow(n * 32);
  for (let i = 0; i < n; i++) keys.copy(buf, i * 32, indices[i] * 32, indices[i] * 32 + 32);
  return buf;
}

// ------------------------------------------------------------------ files
const liveDirs = new Set();
export function tmpDir(tag) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `glbench-${tag}-`));
  liveDirs.add(dir);
  return dir;
}
export function removeDir(dir) {
  fs.rmSync(dir, { recursive: true, force: true });
  liveDirs.delete(dir);
}
function removeAll() {
  for (const d of liveDirs) fs.rmSync(d, { recursive: true, force: true });
  liveDirs.clear();
}
process.on('exit', removeAll);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { removeAll(); process.exit(130); });

export function dirBytes(dir) {
  try {
    return dirBytesOrThrow(dir);
  } catch {
    return NaN;
  }
}
function dirBytesOrThrow(dir) {
  let total = 0;
  for (const f of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, f.name);
    if (f.isDirectory()) total += dirBytesOrThrow(p);
    else total += fs.statSync(p).blocks * 512; // allocated, not apparent (shard files are sparse)
  }
  return total;
}

// ------------------------------------------------------------------ ledger loading
/**
 * Ledger capacity for a benchmark of n accounts: 16 shards of max(n, 65536) accounts, i.e. the
 * defaults (16 x 1M) at the full run's 1M accounts, and the same load factor (1/16) when --quick or
 * --n shrinks the workload.
 */
export function ledgerShape(n) {
  return { shards: 16, accountsPerShard: Math.max(n, 65536) };
}
// bench/run.mjs points BENCH_LEDGER_DIST (and GL_ADDON, read by the native engine) at a copy of the
// build taken when the run started, so every trial of a run measures the same code even if dist/ or
// build/ are rebuilt meanwhile.
export const DIST = process.env.BENCH_LEDGER_DIST
  ? pathToFileURL(process.env.BENCH_LEDGER_DIST)
  : new URL('../../dist/index.mjs', import.meta.url);
export async function loadLedger() {
  if (!fs.existsSync(DIST)) throw new Skip('dist/index.mjs not built (run `npm run build`)');
  return import(DIST.href);
}
/** Thrown when a contender is not available; the child reports { skipped: reason }. */
export class Skip extends Error {}

/** Opens a ledger; maps "engine not implemented" (INVALID_OPTIONS for engine:'js') to Skip. */
export async function openLedger(mod, dir, opts) {
  try {
    return await mod.Ledger.open(dir, opts);
  } catch (e) {
    if (opts.engine && opts.engine !== 'native' && e && e.code === 'INVALID_OPTIONS') {
      throw new Skip(`Ledger.open(dir, { engine: '${opts.engine}' }) throws INVALID_OPTIONS: engine not implemented yet (${e.message})`);
    }
    throw e;
  }
}

// ------------------------------------------------------------------ timing
export function gc() {
  if (typeof globalThis.gc === 'function') globalThis.gc();
}

/**
 * Times `fn` (one call = `opsPerCall` operations) with tinybench and returns ops/s
 * computed as total operations / total timed time (not the mean of per-call rates).
 *   budget: { time, iterations, warmupTime, warmupIterations } - tinybench options.
 */
export async function timeIt(name, fn, opsPerCall, budget, isAsync = fn.constructor.name === 'AsyncFunction') {
  gc();
  const bench = new Bench({
    time: budget.time,
    iterations: budget.iterations,
    warmup: budget.warmup !== false,
    warmupTime: budget.warmupTime ?? 0,
    warmupIterations: budget.warmupIterations ?? 0,
    throws: true,
  });
  // `async` is given explicitly: otherwise tinybench calls fn once, untimed, to find out.
  bench.add(name, fn, { async: isAsync });
  await bench.run();
  const task = bench.tasks[0];
  const r = task.result;
  if (r.state !== 'completed') throw r.error ?? new Error(`${name}: ${r.state}`);
  const runs = task.runs;
  const ms = r.totalTime;
  return {
    name,
    ops: runs * opsPerCall,
    ms,
    opsPerSec: (runs * opsPerCall * 1000) / ms,
    calls: runs,
    callMsP50: r.latency.p50,
    callMsMax: r.latency.max,
  };
}

/** Default tinybench budgets; --quick shrinks them. */
export function budgetFor(args, kind = 'steady') {
  const quick = !!args.quick;
  const t = args.time ? Number(args.time) : quick ? 250 : 2000;
  if (kind === 'durable') {
    return { time: t, iterations: quick ? 3 : 10, warmupTime: quick ? 30 : 200, warmupIterations: 2 };
  }
  return { time: t, iterations: quick ? 5 : 20, warmupTime: quick ? 60 : 300, warmupIterations: quick ? 3 : 10 };
}

// ------------------------------------------------------------------ output
export function emit(obj) {
  process.stdout.write(RESULT_PREFIX + JSON.stringify(obj) + '\n');
}

/** Runs main() and reports errors and skips as a result line (exit 0 for a skip). */
export async function runChild(meta, main) {
  const t0 = performance.now();
  try {
    const results = await main();
    emit({ ...meta, results, wallMs: performance.now() - t0, rssMB: process.memoryUsage().rss / 2 ** 20 });
  } catch (e) {
    if (e instanceof Skip) {
      emit({ ...meta, skipped: e.message });
      return;
    }
    process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
    emit({ ...meta, error: String(e && e.message ? e.message : e) });
    process.exitCode = 1;
  }
}

export function log(...a) {
  if (process.env.BENCH_VERBOSE) process.stderr.write(a.join(' ') + '\n');
}
