// One trial of the transfer benchmark: n accounts (random 32-byte keys) holding 1e9 each; a transfer
// reads two balances and writes both (amount 1, random from != to); 1,000 transfers per
// batch/transaction.
//   node bench/transfer.mjs --contender <name> --mode durable|fast [--n 1000000] [--quick]
// Population is untimed, every account is read once to warm up, then tinybench times batches
// drawn from n prebuilt random transfers (cycled).
import {
  BATCH, INITIAL_BALANCE, parseArgs, intArg, makeKeys, randomPairs, tmpDir, removeDir, timeIt, runChild,
  budgetFor, dirBytes,
} from './lib/common.mjs';
import { makeContender, balanceOf } from './lib/contenders.mjs';

const args = parseArgs();
const quick = !!args.quick;
const n = intArg(args, 'n', quick ? 100_000 : 1_000_000);
const name = args.contender;
const mode = args.mode ?? 'durable';

await runChild({ bench: 'transfer', contender: name, mode, n }, async () => {
  const c = makeContender(name, mode, n);
  const dir = tmpDir(`transfer-${name}`);
  try {
    await c.open(dir);
    const keys = makeKeys(n, 7);
    await c.load(keys, 0, n);
    for (let s = 0; s < n; s += BATCH) await c.get(c.prepGet(keys, Int32Array.from({ length: BATCH }, (_, i) => s + i)));
    const pool = n / BATCH;
    const pairs = randomPairs(n, n, 13);
    const prepared = [];
    for (let b = 0; b < pool; b++) prepared.push(c.prepTransfer(keys, pairs.subarray(b * 2 * BATCH, (b + 1) * 2 * BATCH)));
    let next = 0;
    const fn = c.async
      ? async () => { await c.transfer(prepared[next++ % pool]); }
      : () => { c.transfer(prepared[next++ % pool]); };
    const r = await timeIt('transfer', fn, BATCH, budgetFor(args, mode === 'durable' ? 'durable' : 'steady'));
    if (c.ctx.failed) throw new Error(`${c.ctx.failed} transfers failed`);
    // Check: replay the applied batches (warm-up included) on an array of deltas and compare a
    // sample of balances with the store.
    const delta = new Int32Array(n);
    for (let b = 0; b < next; b++) {
      const p = b % pool;
      for (let i = p * 2 * BATCH; i < (p + 1) * 2 * BATCH; i += 2) { delta[pairs[i]]--; delta[pairs[i + 1]]++; }
    }
    for (let i = 0; i < 200; i++) {
      const a = pairs[i];
      const got = await balanceOf(c, keys, a);
      if (got !== INITIAL_BALANCE + delta[a]) throw new Error(`check failed: account ${a} has ${got}, expected ${INITIAL_BALANCE + delta[a]}`);
    }
    const extra = c.stats ? c.stats() : {};
    await c.close();
    return [{ ...r, batchesApplied: next, diskMB: dirBytes(dir) / 2 ** 20, config: c.config, ...extra }];
  } finally {
    removeDir(dir);
  }
});
