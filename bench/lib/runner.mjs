// Shared by the long-running benchmarks (bench/latency.mjs, memory.mjs, unsynced.mjs). Each of them is a driver
// that runs every trial as a fresh child process (`node --expose-gc bench/<file>.mjs --child ...`); the children
// print one `@@RESULT {json}` line through runChild() of ./common.mjs. This file adds what those drivers need
// beyond ./common.mjs:
//   - which build to measure: `--lib <dir>/dist/index.js` (and `--before <dir>/dist/index.js`), e.g. a git
//     worktree of another commit, so that one script measures two builds (see bench/README.md);
//   - the machine, date and load average printed and stored with every result;
//   - memory readings from /proc (smaps_rollup, status, the ledger's own mappings in smaps);
//   - populating a ledger, streaming a subset of the seeded keys without holding all of them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { RESULT_PREFIX, INITIAL_BALANCE, BATCH, loadLedger, mintBufferRange, rng } from './common.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const BENCH_DIR = path.resolve(HERE, '..');
export const ROOT = path.resolve(BENCH_DIR, '..');

// ------------------------------------------------------------------ builds
/**
 * Which builds a driver measures: `--lib` (default: this checkout's dist/, or BENCH_LEDGER_DIST) and, when given,
 * `--before`. Each is { name, lib (path or undefined), commit, subject }. Paths are passed to the children on the
 * command line and never written to the results (only the commit).
 */
export function buildsFrom(args) {
  const out = [describeBuild('after', args.lib)];
  if (args.before) out.unshift(describeBuild('before', args.before));
  // --also <name>=<dist/index.js>[,<name>=<path>...]: more builds, e.g. experiments on top of --lib and --before
  if (args.also) {
    for (const spec of String(args.also).split(',')) {
      const [name, lib] = spec.split('=');
      out.push(describeBuild(name, lib));
    }
  }
  // --read-ahead-off: the --lib build once more, its ledgers opened with readAhead: false (MADV_RANDOM mappings)
  if (args['read-ahead-off']) {
    const lib = out.find((b) => b.name === 'after');
    out.push({ ...lib, name: 'after, readAhead false', childArgs: ['--read-ahead', 'off'] });
  }
  return out;
}

/** Child side: the open options a build's row adds (--read-ahead off). */
export function buildOpenOptions(args) {
  return args['read-ahead'] === 'off' ? { readAhead: false } : {};
}

function describeBuild(name, lib) {
  const file = lib ? path.resolve(String(lib)) : undefined;
  if (file && !fs.existsSync(file)) throw new Error(`${name}: ${lib} does not exist (build it first)`);
  const dir = file ? path.dirname(file) : ROOT;
  const git = (...a) => spawnSync('git', ['-C', dir, ...a], { encoding: 'utf8' }).stdout?.trim();
  const commit = git('rev-parse', '--short', 'HEAD') || '?';
  const dirty = git('status', '--porcelain', '--', ':/src', ':/native', ':/binding.gyp');
  return {
    name, lib: file, commit: dirty ? `${commit}+changes` : commit, subject: (git('log', '-1', '--format=%s') || '').slice(0, 80),
  };
}

/** Child side: imports the build named by `--lib` (a dist/index.js or .mjs), or this checkout's. */
export async function importLedger(args) {
  if (!args.lib) return loadLedger();
  return import(pathToFileURL(path.resolve(String(args.lib))).href);
}

/** True for builds with background checkpoints (issue 7): stats() reports checkpoints. */
export function hasBackgroundCheckpoints(ledger) {
  return typeof ledger.stats().checkpoints === 'number';
}

// ------------------------------------------------------------------ machine, date, load
export function machine() {
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

/** The load averages (1, 5, 15 min), as `uptime` prints them. */
export function load() {
  return os.loadavg().map((x) => +x.toFixed(2));
}

/** Prints the header every driver starts with (stderr) and returns it for the results file. */
export function header(title, builds) {
  const h = { bench: title, command: commandLine(), date: new Date().toISOString(), machine: machine(), loadAtStart: load(),
    builds: builds.map(({ lib, ...b }) => b) };
  const m = h.machine;
  process.stderr.write(`${title}: ${h.date}\n  ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB, ${m.platform}, node ${m.node}, tmp: ${m.fs}\n` +
    `  load average ${h.loadAtStart.join(', ')}${h.loadAtStart[0] > m.cores * 0.75 ? '  (busy machine: numbers will be noisy)' : ''}\n` +
    builds.map((b) => `  ${b.name}: ${b.commit} ${b.subject}\n`).join(''));
  return h;
}

function commandLine() {
  // Relative to the repository, without machine paths: --lib/--before show as the build they name.
  const argv = process.argv.slice(2).map((a) => a.replace(/(^|=)\/\S*?\/([^/]+)\/dist\//g, '$1<$2>/dist/'));
  return `node bench/${path.basename(process.argv[1])}${argv.length ? ' ' + argv.join(' ') : ''}`;
}

// ------------------------------------------------------------------ children
const PROGRESS_PREFIX = '@@PROGRESS ';
/** Child side: a progress line (stdout); the driver keeps the last one, e.g. of a child that gets killed. */
export function progress(obj) {
  process.stdout.write(PROGRESS_PREFIX + JSON.stringify(obj) + '\n');
}

/**
 * Runs one trial: `node --expose-gc <script> --child ...argv` in a fresh process, optionally inside a memory
 * cgroup (see cgroup()). Resolves with the child's result line plus { exit, signal, ms, stderrTail, progress (its last progress() line) }.
 */
export function runTrial(script, argv, { build, timeoutS = 1800, cgroup: cg, env = {} } = {}) {
  const nodeArgs = ['--expose-gc', script, '--child', ...argv, ...(build?.lib ? ['--lib', build.lib] : []), ...(build?.childArgs ?? [])];
  const childEnv = { ...process.env, ...env };
  if (build?.lib) delete childEnv.GL_ADDON; // the build's own addon (bindings finds <dir>/build/Release)
  const [cmd, cmdArgs] = cg
    ? ['/bin/sh', ['-c', `echo $$ > "${cg.procs}" && exec "$0" "$@"`, process.execPath, ...nodeArgs]]
    : [process.execPath, nodeArgs];
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(cmd, cmdArgs, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: childEnv });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => {
      err += d;
      if (process.env.BENCH_VERBOSE) process.stderr.write(d);
      if (err.length > 1 << 20) err = err.slice(-65536);
    });
    const limit = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000);
    child.on('close', (exit, signal) => {
      clearTimeout(limit);
      const line = out.split('\n').find((l) => l.startsWith(RESULT_PREFIX));
      let res;
      try { res = line ? JSON.parse(line.slice(RESULT_PREFIX.length)) : undefined; } catch { res = undefined; }
      const stderrTail = err.trim().split('\n').slice(-4).join(' | ').slice(0, 600);
      const last = out.split('\n').filter((l) => l.startsWith(PROGRESS_PREFIX)).pop();
      let progress;
      try { progress = last ? JSON.parse(last.slice(PROGRESS_PREFIX.length)) : undefined; } catch { progress = undefined; }
      resolve({ ...(res ?? { error: `no result (exit ${exit}${signal ? `, ${signal}` : ''})` }), exit, signal, ms: performance.now() - t0, stderrTail, progress });
    });
  });
}

/** Writes a driver's results to bench/results/<name>[-quick].json (unless --no-write); returns the path. */
export function writeResults(name, quick, obj) {
  const dir = path.join(BENCH_DIR, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}${quick ? '-quick' : ''}.json`);
  const text = JSON.stringify(obj, (k, v) => (typeof v === 'number' && !Number.isInteger(v) ? +v.toPrecision(4) : v), 1)
    // arrays of numbers and strings on one line, and objects of only such values
    .replace(/\[\s+([^[\]{}]*?)\s+\]/g, (_, body) => `[${body.split(/,\s+/).join(', ')}]`)
    .replace(/\{\s+([^[\]{}]*?)\s+\}/g, (m, body) => (body.length < 200 ? `{ ${body.split(/,\s+/).join(', ')} }` : m));
  fs.writeFileSync(file, text + '\n');
  return path.relative(ROOT, file);
}

// ------------------------------------------------------------------ memory
const KB = 1024;
/** Whole-process memory in MiB: smaps_rollup (Rss, Anonymous; file = Rss - Anonymous) and status (RssAnon, RssFile). */
export function processMemory() {
  const rollup = fieldsKb(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'));
  const status = fieldsKb(fs.readFileSync('/proc/self/status', 'utf8'));
  const mib = (kb) => +(kb / KB).toFixed(1);
  return {
    rss: mib(rollup.Rss), anon: mib(rollup.Anonymous), file: mib(rollup.Rss - rollup.Anonymous),
    rssAnon: mib(status.RssAnon), rssFile: mib(status.RssFile), rssShmem: mib(status.RssShmem),
  };
}

/**
 * The ledger's own mappings (files under `dir`, from /proc/self/smaps), in MiB: rss, anon (private pages changed
 * since they were read: they can only go to swap) and file (= rss - anon: clean page-cache pages the kernel may
 * reclaim), for the shard files and the index files.
 */
export function ledgerMappings(dir) {
  const real = fs.realpathSync(dir);
  const out = { data: { rss: 0, anon: 0, file: 0 }, index: { rss: 0, anon: 0, file: 0 } };
  let cur;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      const p = m[1];
      cur = p.startsWith(real + '/') ? (/\/index_\d+\.bin$/.test(p) ? out.index : /\/shard_\d+\.bin$/.test(p) ? out.data : undefined) : undefined;
      continue;
    }
    if (!cur) continue;
    const f = /^(Rss|Anonymous):\s+(\d+) kB/.exec(line);
    if (f) cur[f[1] === 'Rss' ? 'rss' : 'anon'] += Number(f[2]);
  }
  for (const k of ['data', 'index']) {
    const o = out[k];
    o.file = +((o.rss - o.anon) / KB).toFixed(1);
    o.rss = +(o.rss / KB).toFixed(1);
    o.anon = +(o.anon / KB).toFixed(1);
  }
  return out;
}

function fieldsKb(text) {
  const o = {};
  for (const l of text.split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(l);
    if (m) o[m[1]] = Number(m[2]);
  }
  return o;
}

/**
 * A memory cgroup of our own for one child (root only): v1 (memory.limit_in_bytes) or v2 (memory.max), whichever
 * is mounted. Returns { version, dir, procs, stats(), remove() } or throws with the reason.
 */
export function memoryCgroup(name, limitBytes) {
  const mounts = fs.readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' '));
  const v1 = mounts.find((m) => m[2] === 'cgroup' && m[3]?.split(',').includes('memory'));
  const v2 = mounts.find((m) => m[2] === 'cgroup2');
  let dir;
  let version;
  if (v1) {
    version = 1;
    dir = path.join(v1[1], name);
  } else if (v2 && fs.readFileSync(path.join(v2[1], 'cgroup.controllers'), 'utf8').includes('memory')) {
    version = 2;
    dir = path.join(v2[1], name);
  } else {
    throw new Error('no memory cgroup controller mounted');
  }
  if (fs.existsSync(dir)) fs.rmdirSync(dir);
  fs.mkdirSync(dir);
  const w = (f, v) => fs.writeFileSync(path.join(dir, f), String(v));
  const r = (f) => { try { return fs.readFileSync(path.join(dir, f), 'utf8'); } catch { return ''; } };
  if (version === 1) {
    w('memory.limit_in_bytes', limitBytes);
    try { w('memory.memsw.limit_in_bytes', limitBytes); } catch { /* no swap accounting */ }
  } else {
    w('memory.max', limitBytes);
    try { w('memory.swap.max', 0); } catch { /* no swap controller */ }
  }
  const mib = (b) => +(Number(b) / 2 ** 20).toFixed(1);
  return {
    version,
    procs: path.join(dir, 'cgroup.procs'),
    limitBytes,
    /** usage, peak, failures and OOM events so far; memory.stat's anon/file split (MiB). */
    stats() {
      const stat = Object.fromEntries(r('memory.stat').trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
      if (version === 1) {
        const oom = Object.fromEntries(r('memory.oom_control').trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
        return { usageMiB: mib(r('memory.usage_in_bytes')), peakMiB: mib(r('memory.max_usage_in_bytes')), failcnt: Number(r('memory.failcnt')),
          oomKills: oom.oom_kill ?? null, anonMiB: mib(stat.rss ?? 0), fileMiB: mib(stat.cache ?? 0), mappedFileMiB: mib(stat.mapped_file ?? 0), dirtyMiB: mib(stat.dirty ?? 0) };
      }
      const ev = Object.fromEntries(r('memory.events').trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
      return { usageMiB: mib(r('memory.current')), peakMiB: mib(r('memory.peak') || 0), failcnt: ev.max ?? null, oomKills: ev.oom_kill ?? null,
        anonMiB: mib(stat.anon ?? 0), fileMiB: mib(stat.file ?? 0), mappedFileMiB: mib(stat.file_mapped ?? 0), dirtyMiB: mib(stat.file_dirty ?? 0) };
    },
    remove() {
      for (let i = 0; i < 50; i++) {
        try { fs.rmdirSync(dir); return; } catch { spawnSync('sleep', ['0.1']); }
      }
    },
  };
}

// ------------------------------------------------------------------ ledgers and keys
/** Mints INITIAL_BALANCE to keys [0, count) in mintBatch calls of `chunk`; throws if any fails. */
export function populate(ledger, keys, count, chunk = 10_000) {
  let failed = 0;
  for (let s = 0; s < count; s += chunk) {
    const st = ledger.mintBatch(mintBufferRange(keys, s, Math.min(chunk, count - s), INITIAL_BALANCE));
    for (let i = 0; i < st.length; i++) if (st[i] !== 0) failed++;
  }
  if (failed) throw new Error(`populate: ${failed} mints failed`);
}

/**
 * One pass of transfers over all n accounts, each account once (perm[2i] -> perm[2i+1] of a random permutation),
 * in transferBatch calls of 1,000 with a turn of the event loop between them. Returns the number of transfers.
 */
export async function writeEveryAccount(ledger, keys, n) {
  const perm = Int32Array.from({ length: n }, (_, i) => i);
  const next = rng(5);
  for (let i = n - 1; i > 0; i--) {
    const j = next() % (i + 1);
    const x = perm[i]; perm[i] = perm[j]; perm[j] = x;
  }
  const buf = Buffer.alloc(BATCH * 72);
  for (let i = 0; i < BATCH; i++) buf.writeBigUInt64LE(1n, i * 72 + 64);
  let done = 0;
  for (let p = 0; p + 1 < n;) {
    let k = 0;
    for (; k < BATCH && p + 1 < n; k++, p += 2) {
      keys.copy(buf, k * 72, perm[p] * 32, perm[p] * 32 + 32);
      keys.copy(buf, k * 72 + 32, perm[p + 1] * 32, perm[p + 1] * 32 + 32);
    }
    const st = ledger.transferBatch(k === BATCH ? buf : buf.subarray(0, k * 72));
    for (let i = 0; i < k; i++) if (st[i] !== 0) throw new Error(`transfer failed with status ${st[i]}`);
    done += k;
    await yieldTurn();
  }
  return done;
}

/**
 * The keys `wanted` (ascending account indices) of makeKeys(n, seed), packed in that order, without building all
 * n keys: the same PRNG stream, kept only where wanted.
 */
export function someKeys(wanted, seed = 1) {
  const next = rng(seed);
  const out = Buffer.allocUnsafeSlow(wanted.length * 32);
  const u32 = new Uint32Array(out.buffer, out.byteOffset, wanted.length * 8);
  let j = 0;
  const last = wanted.length ? wanted[wanted.length - 1] : -1;
  for (let i = 0; i <= last; i++) {
    if (wanted[j] === i) {
      for (let w = 0; w < 8; w++) u32[j * 8 + w] = next();
      j++;
    } else {
      for (let w = 0; w < 8; w++) next();
    }
  }
  return out;
}

/**
 * This thread's scheduler counters (/proc/thread-self/schedstat): { runNs, waitNs } = time on a CPU and time
 * runnable but waiting for one. On a busy machine the wait is the part of a delay that other processes caused.
 * Returns undefined where the file does not exist.
 */
export function threadSchedstat() {
  let fd;
  try { fd = fs.openSync('/proc/thread-self/schedstat', 'r'); } catch { return undefined; }
  const buf = Buffer.alloc(96);
  return () => {
    const len = fs.readSync(fd, buf, 0, buf.length, 0);
    const [run, wait] = buf.latin1Slice(0, len).split(' ');
    return { runNs: BigInt(run), waitNs: BigInt(wait) };
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const yieldTurn = () => new Promise((r) => setImmediate(r));

/** Percentiles (ms) of a perf_hooks histogram recorded in nanoseconds. */
export function histMs(h) {
  if (h.count === 0) return { count: 0 };
  const ms = (ns) => +(Number(ns) / 1e6).toFixed(3);
  return { count: h.count, p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), p999: ms(h.percentile(99.9)), max: ms(h.max), mean: ms(h.mean) };
}
