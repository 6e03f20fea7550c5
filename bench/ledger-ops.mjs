// Ledger-only measurements (issue 2's list), one trial per process.
//
// Operation throughput:
//   node bench/ledger-ops.mjs --engine native|js --wal off|on|sync --op mint|transfer|get|balance \
//        --shape one|b1000|b10000 [--n 1000000] [--quick]
//   node bench/ledger-ops.mjs ... --wal on --ops transfer:b1000,get:one     (several rows, one process)
//     wal off : Ledger.open(dir, { wal: false })
//     wal on  : Ledger.open(dir, { wal: true, syncEvery: 1000 }), nothing awaited
//     wal sync: as `on`, plus `await ledger.sync()` after every 1,000 operations (one-by-one and b1000)
//               or after every batch (b10000: every 10,000 operations)
//   one-by-one: mint(key, 1) / transfer(a, b, 1) / get(key) / balance(key) on Buffer views of existing
//   accounts, 1,000 calls per timed iteration. Batches: mintBatch / transferBatch / getBatch on Buffers
//   built before timing (N x 40, N x 72, N x 32), cycled.
//
// Opening (fresh child processes do the opens; the numbers are the time of `await Ledger.open`):
//   node bench/ledger-ops.mjs --engine native --scenario open --n 1000000 --wal-ops 1000000
//     1. create, populate n accounts, close            -> open after a clean close (3 fresh processes)
//     2. delete index_*.bin                            -> open rebuilds the indexes (accounts/s)
//     3. a writer process opens, applies --wal-ops mints in batches of 10,000, then SIGKILLs itself
//                                                      -> open replays the WAL (records/s)
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  BATCH, INITIAL_BALANCE, parseArgs, intArg, makeKeys, keyViews, randomIndices, randomPairs, mintBuffer,
  mintBufferRange, transferBuffer, keyBuffer, tmpDir, removeDir, timeIt, runChild, budgetFor, loadLedger,
  openLedger, emit, gc, dirBytes, ledgerShape,
} from './lib/common.mjs';

const SELF = fileURLToPath(import.meta.url);
const args = parseArgs();
const quick = !!args.quick;
const engine = args.engine ?? 'native';
const n = intArg(args, 'n', quick ? 100_000 : 1_000_000);
const LOAD_CHUNK = 10_000;

async function populate(ledger, keys, count) {
  let failed = 0;
  for (let s = 0; s < count; s += LOAD_CHUNK) {
    const st = ledger.mintBatch(mintBufferRange(keys, s, Math.min(LOAD_CHUNK, count - s), INITIAL_BALANCE));
    for (let i = 0; i < st.length; i++) if (st[i] !== 0) failed++;
  }
  if (failed) throw new Error(`populate: ${failed} mints failed`);
}

function walOptions(wal) {
  return wal === 'off' ? { wal: false } : { wal: true, syncEvery: 1000 };
}

// ------------------------------------------------------------------ probe children
if (args.probe === 'open') {
  // A fresh process: import first (not timed), then time only Ledger.open.
  const mod = await loadLedger();
  const dir = args.dir;
  const t0 = performance.now();
  const ledger = await openLedger(mod, dir, { engine, ...walOptions(args.wal ?? 'on') });
  const openMs = performance.now() - t0;
  const accounts = ledger.stats().accounts;
  const t1 = performance.now();
  await ledger.close();
  emit({ openMs, closeMs: performance.now() - t1, accounts, recovery: ledger.recovery });
  process.exit(0);
}
if (args.probe === 'writer') {
  // Opens the ledger, applies --wal-ops mints to existing accounts in batches of 10,000, then kill -9.
  const mod = await loadLedger();
  const dir = args.dir;
  const ops = intArg(args, 'wal-ops', 0);
  const keys = makeKeys(n, 7);
  const ledger = await openLedger(mod, dir, { engine, wal: true, syncEvery: 1000 });
  const idx = randomIndices(LOAD_CHUNK, n, 21);
  const buf = mintBuffer(keys, idx, 1);
  const t0 = performance.now();
  for (let done = 0; done < ops; done += LOAD_CHUNK) {
    const part = Math.min(LOAD_CHUNK, ops - done);
    ledger.mintBatch(part === LOAD_CHUNK ? buf : buf.subarray(0, part * 40));
  }
  const s = ledger.stats();
  process.stderr.write(`writer: ${ops} mints in ${(performance.now() - t0).toFixed(0)} ms, walBytes ${s.walBytes}\n`);
  process.stdout.write(JSON.stringify({ writeMs: performance.now() - t0, walBytes: s.walBytes, lsn: String(s.lsn), checkpointLsn: String(s.checkpointLsn) }) + '\n');
  process.kill(process.pid, 'SIGKILL');
}

function probe(kind, dir, extra = []) {
  const r = spawnSync(process.execPath, [SELF, '--probe', kind, '--dir', dir, '--engine', engine, '--n', String(n), ...extra], {
    encoding: 'utf8', maxBuffer: 64 << 20,
  });
  if (kind === 'writer') {
    if (r.signal !== 'SIGKILL') throw new Error(`writer did not die by SIGKILL (status ${r.status}, signal ${r.signal}): ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop());
  }
  const line = r.stdout.split('\n').find((l) => l.startsWith('@@RESULT '));
  if (r.status !== 0 || !line) throw new Error(`probe ${kind} failed (status ${r.status}): ${r.stderr}`);
  return JSON.parse(line.slice('@@RESULT '.length));
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };

// ------------------------------------------------------------------ open / recovery scenario
if (args.scenario === 'open') {
  const walOps = intArg(args, 'wal-ops', quick ? 100_000 : 1_000_000);
  const probes = intArg(args, 'probes', 3);
  // Capacity: --aps (default 1M per shard: the same files for 10K, 1M and 10M accounts).
  const aps = intArg(args, 'aps', 1_000_000);
  await runChild({ bench: 'ledger-open', engine, n, walOps, aps }, async () => {
    const mod = await loadLedger();
    const dir = tmpDir(`open-${engine}`);
    try {
      const out = [];
      // 1. populate and close cleanly
      const keys = makeKeys(n, 7);
      let t = performance.now();
      const ledger = await openLedger(mod, dir, { engine, wal: true, syncEvery: 1000, shards: 16, accountsPerShard: aps });
      await populate(ledger, keys, n);
      const populateMs = performance.now() - t;
      t = performance.now();
      await ledger.close();
      const closeMs = performance.now() - t;
      const diskMB = dirBytes(dir) / 2 ** 20;
      const clean = [];
      for (let i = 0; i < probes; i++) clean.push(probe('open', dir));
      for (const p of clean) if (p.recovery.mode !== 'clean') throw new Error(`expected a clean open, got ${JSON.stringify(p.recovery)}`);
      out.push({
        name: 'open-clean', metric: 'ms', value: median(clean.map((p) => p.openMs)),
        probesMs: clean.map((p) => p.openMs), recoveryMs: clean.map((p) => p.recovery.ms), accounts: clean[0].accounts,
        populateMs, closeAfterPopulateMs: closeMs, diskMB, capacity: 16 * aps,
      });
      // 2. index rebuild
      const idxFiles = fs.readdirSync(dir).filter((f) => /^index_\d+\.bin$/.test(f));
      if (idxFiles.length === 0) throw new Error('no index_*.bin files to delete');
      for (const f of idxFiles) fs.rmSync(path.join(dir, f));
      const rb = probe('open', dir);
      if (rb.recovery.mode !== 'rebuild') throw new Error(`expected a rebuild, got ${JSON.stringify(rb.recovery)}`);
      out.push({
        name: 'index-rebuild', metric: 'rate', unit: 'accounts/s', value: (rb.accounts * 1000) / rb.openMs,
        openMs: rb.openMs, accounts: rb.accounts, shardsRebuilt: rb.recovery.shardsRebuilt, recovery: rb.recovery,
      });
      // 3. kill -9 after walOps mints, then replay
      const w = probe('writer', dir, ['--wal-ops', String(walOps)]);
      const rp = probe('open', dir);
      if (rp.recovery.mode !== 'replay') throw new Error(`expected a replay, got ${JSON.stringify(rp.recovery)}`);
      out.push({
        name: 'open-after-kill', metric: 'ms', value: rp.openMs, walOps,
        walRecordsReplayed: rp.recovery.walRecordsReplayed, walBytesAtKill: w.walBytes,
        recordsPerSec: (rp.recovery.walRecordsReplayed * 1000) / rp.openMs, recovery: rp.recovery, writerMs: w.writeMs,
      });
      return out;
    } finally {
      removeDir(dir);
    }
  });
  process.exit(process.exitCode ?? 0);
}

// ------------------------------------------------------------------ operation throughput
// --op X --shape Y runs one row; --ops X:Y,X:Y,... runs several rows in this process, one after the
// other on the same populated ledger (quick mode, to save the per-process setup).
const wal = args.wal ?? 'on';
const list = args.ops
  ? String(args.ops).split(',').map((x) => x.split(':'))
  : [[args.op ?? 'transfer', args.shape ?? 'b1000']];
const SHAPES = { one: 1, b1000: 1000, b10000: 10_000 };
if (!['off', 'on', 'sync'].includes(wal)) throw new Error('--wal off|on|sync');
for (const [op, shape] of list) {
  if (!['mint', 'transfer', 'get', 'balance'].includes(op)) throw new Error('op: mint|transfer|get|balance');
  if (!SHAPES[shape]) throw new Error('shape: one|b1000|b10000');
}

await runChild({ bench: 'ledger-ops', engine, wal, ops: list.map((x) => x.join(':')), n }, async () => {
  const mod = await loadLedger();
  const dir = tmpDir(`ops-${engine}`);
  try {
    const keys = makeKeys(n, 7);
    const ledger = await openLedger(mod, dir, { engine, ...walOptions(wal), ...ledgerShape(n) });
    await populate(ledger, keys, n);
    await ledger.checkpoint();
    // Warm: read every account once.
    const out = Buffer.alloc(128 * 10_000);
    for (let s = 0; s < n; s += LOAD_CHUNK) {
      const c = Math.min(LOAD_CHUNK, n - s);
      ledger.getBatch(keys.subarray(s * 32, (s + c) * 32), out.subarray(0, c * 128));
    }
    const views = list.some(([, shape]) => shape === 'one') ? keyViews(keys) : undefined;
    const results = [];
    for (const [op, shape] of list) results.push(await runOp(ledger, keys, views, out, op, shape));
    const t = performance.now();
    await ledger.close();
    for (const r of results) r.closeMs = performance.now() - t;
    return results;
  } finally {
    removeDir(dir);
  }
});

async function runOp(ledger, keys, views, out, op, shape) {
  const batch = SHAPES[shape];
  let failed = 0;
  const check = (st) => { for (let i = 0; i < st.length; i++) if (st[i] !== 0) failed++; };
  const syncing = wal === 'sync' && op !== 'get' && op !== 'balance';
  const perCall = shape === 'one' ? 1000 : batch;
  let fn;
  if (shape === 'one') {
    if (op === 'transfer') {
      const pairs = randomPairs(n, n, 13);
      let p = 0;
      const body = () => {
        for (let i = 0; i < 1000; i++) {
          if (p >= pairs.length) p = 0;
          ledger.transfer(views[pairs[p]], views[pairs[p + 1]], 1);
          p += 2;
        }
      };
      fn = syncing ? async () => { body(); await ledger.sync(); } : body;
    } else {
      const idx = randomIndices(n, n, 11);
      let p = 0;
      let sink = 0n;
      const body =
        op === 'mint' ? () => { for (let i = 0; i < 1000; i++) { if (p >= n) p = 0; ledger.mint(views[idx[p++]], 1); } }
          : op === 'get' ? () => { for (let i = 0; i < 1000; i++) { if (p >= n) p = 0; sink += ledger.get(views[idx[p++]]).balance; } }
            : () => { for (let i = 0; i < 1000; i++) { if (p >= n) p = 0; sink += ledger.balance(views[idx[p++]]); } };
      fn = syncing ? async () => { body(); await ledger.sync(); } : body;
    }
  } else {
    const pool = Math.max(1, Math.floor(n / batch));
    const bufs = [];
    if (op === 'transfer') {
      const pairs = randomPairs(pool * batch, n, 13);
      for (let b = 0; b < pool; b++) bufs.push(transferBuffer(keys, pairs.subarray(b * 2 * batch, (b + 1) * 2 * batch), 1));
    } else {
      const idx = randomIndices(pool * batch, n, 11);
      for (let b = 0; b < pool; b++) {
        const part = idx.subarray(b * batch, (b + 1) * batch);
        bufs.push(op === 'mint' ? mintBuffer(keys, part, 1) : keyBuffer(keys, part));
      }
    }
    let next = 0;
    const body =
      op === 'mint' ? () => check(ledger.mintBatch(bufs[next++ % pool]))
        : op === 'transfer' ? () => check(ledger.transferBatch(bufs[next++ % pool]))
          : () => { ledger.getBatch(bufs[next++ % pool], out.subarray(0, batch * 128)); };
    fn = syncing ? async () => { body(); await ledger.sync(); } : body;
  }
  let calls = 0;
  const inner = fn;
  fn = syncing ? async () => { calls++; await inner(); } : () => { calls++; inner(); };
  gc();
  const before = ledger.stats();
  const r = await timeIt(`${op}-${shape}`, fn, perCall, budgetFor(args, syncing ? 'durable' : 'steady'), syncing);
  const after = ledger.stats();
  if (failed) throw new Error(`${op} ${shape}: ${failed} operations failed`);
  return {
    ...r, op, shape, metric: 'rate', unit: 'ops/s', value: r.opsPerSec,
    fsyncs: after.fsyncs - before.fsyncs, opsIncludingWarmup: calls * perCall,
    fsyncsPer1kOps: ((after.fsyncs - before.fsyncs) * 1000) / (calls * perCall),
    walBytes: after.walBytes, accounts: after.accounts,
  };
}
