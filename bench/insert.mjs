// One trial of the insert benchmark: new accounts, random 32-byte keys, 1,000 per batch/transaction.
//   node bench/insert.mjs --contender native|js|lmdb|better-sqlite3|classic-level --mode durable|fast [--n 1000000] [--quick]
// The store starts empty. Untimed warm-up inserts (2% of n, at least 20 batches) also measure the
// cost of one batch; the timed run then inserts all n accounts (--quick: at most about 2 s worth of
// batches by that estimate). ops/s = accounts / time.
import {
  BATCH, parseArgs, intArg, makeKeys, tmpDir, removeDir, timeIt, runChild, dirBytes, gc,
} from './lib/common.mjs';
import { makeContender, balanceOf } from './lib/contenders.mjs';

const args = parseArgs();
const quick = !!args.quick;
const n = intArg(args, 'n', quick ? 100_000 : 1_000_000);
const name = args.contender;
const mode = args.mode ?? 'durable';
// Quick mode caps the timed inserts at 2 x 1 s by the warm-up's estimate of a batch (the warm-up is
// slower than steady state, hence the factor); the full run inserts all n accounts for every contender.
const capMs = args['cap-ms'] !== undefined ? intArg(args, 'cap-ms', 0) : quick ? 1000 : Infinity;

await runChild({ bench: 'insert', contender: name, mode, n }, async () => {
  const c = makeContender(name, mode, n);
  const dir = tmpDir(`insert-${name}`);
  try {
    await c.open(dir);
    const warm = Math.max(20 * BATCH, Math.ceil(n / 50 / BATCH) * BATCH);
    const keys = makeKeys(n + warm, 7);
    // Warm-up: JIT, allocator, the store's first pages. Keys n..n+warm-1 (not reused by the timed run).
    let t = 0;
    for (let s = 0; s < warm; s += BATCH) {
      if (s === Math.floor(warm / BATCH / 2) * BATCH) t = performance.now(); // calibrate on the second half
      await c.insert(c.prepInsert(keys, n + s, BATCH));
    }
    const perBatchMs = (performance.now() - t) / (warm / BATCH - Math.floor(warm / BATCH / 2));
    const batches = Math.min(n / BATCH, Math.max(quick ? 3 : 10, Math.ceil((2 * capMs) / perBatchMs)));
    const prepared = [];
    for (let b = 0; b < batches; b++) prepared.push(c.prepInsert(keys, b * BATCH, BATCH));
    gc();
    let next = 0;
    const take = () => {
      if (next >= prepared.length) throw new Error('insert: ran out of prepared batches');
      return prepared[next++];
    };
    const fn = c.async ? async () => { await c.insert(take()); } : () => { c.insert(take()); };
    const r = await timeIt('insert', fn, BATCH, { time: 0, iterations: batches, warmup: false });
    // Check: a few of the inserted accounts hold the initial balance.
    for (const i of [0, batches * BATCH - 1, Math.floor((batches * BATCH) / 2)]) {
      const b = await balanceOf(c, keys, i);
      if (b !== 1_000_000_000) throw new Error(`check failed: account ${i} has ${b}`);
    }
    if (c.ctx.failed) throw new Error(`${c.ctx.failed} inserts failed`);
    const extra = c.stats ? c.stats() : {};
    await c.close();
    return [{ ...r, accountsAfter: warm + batches * BATCH, diskMB: dirBytes(dir) / 2 ** 20, config: c.config, ...extra }];
  } finally {
    removeDir(dir);
  }
});
