// One trial of the point-read benchmark: n accounts (random 32-byte keys), random reads of
// existing accounts, 1,000 per batch.
//   node bench/get.mjs --contender <name> [--n 1000000] [--quick]
// Population is untimed; then every account is read once (warm caches and pages), then tinybench
// times batches drawn from n prebuilt random reads (cycled). Reads have no durability setting: the
// contender is opened with its 'fast' configuration.
import {
  BATCH, parseArgs, intArg, makeKeys, randomIndices, tmpDir, removeDir, timeIt, runChild, budgetFor,
} from './lib/common.mjs';
import { makeContender } from './lib/contenders.mjs';

const args = parseArgs();
const quick = !!args.quick;
const n = intArg(args, 'n', quick ? 100_000 : 1_000_000);
const name = args.contender;

await runChild({ bench: 'get', contender: name, mode: 'read', n }, async () => {
  const c = makeContender(name, 'fast', n);
  const dir = tmpDir(`get-${name}`);
  try {
    await c.open(dir);
    const keys = makeKeys(n, 7);
    await c.load(keys, 0, n);
    // Warm: read every account once, in order of creation.
    for (let s = 0; s < n; s += BATCH) await c.get(c.prepGet(keys, Int32Array.from({ length: BATCH }, (_, i) => s + i)));
    const pool = n / BATCH;
    const idx = randomIndices(n, n, 11);
    const prepared = [];
    for (let b = 0; b < pool; b++) prepared.push(c.prepGet(keys, idx.subarray(b * BATCH, (b + 1) * BATCH)));
    let next = 0;
    const fn = c.async
      ? async () => { await c.get(prepared[next++ % pool]); }
      : () => { c.get(prepared[next++ % pool]); };
    const r = await timeIt('get', fn, BATCH, budgetFor(args));
    if (c.ctx.failed) throw new Error(`${c.ctx.failed} reads missed`);
    await c.close();
    return [{ ...r, config: c.config }];
  } finally {
    removeDir(dir);
  }
});
