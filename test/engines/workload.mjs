// Seeded workloads for the engine tests, and the model they are checked against. Plain ESM: the
// kill -9 child (writer.mjs) runs under bare node, the tests import it through vitest.
//
// A plan is a list of steps: single mints and transfers, mint/transfer batches, checkpoints and
// syncs. Every mint or transfer, alone or in a batch, is one operation. Capacity is never reached
// (the model does not know which shard a key lands in), everything else is: missing accounts,
// insufficient funds, transfers to self, zero amounts (batches only), overflow.
import { createHash } from 'node:crypto';

export const U64_MAX = (1n << 64n) - 1n;

export function makeRng(seed) {
  // mulberry32
  let a = (Number(seed) >>> 0) + 0x6d2b79f5;
  const u32 = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return {
    u32,
    int: (n) => Math.floor((u32() / 4294967296) * n),
    chance: (p) => u32() / 4294967296 < p,
    u64: () => (BigInt(u32()) << 32n) | BigInt(u32()),
  };
}

export function makeKeys(seed, n) {
  return Array.from({ length: n }, (_, i) => createHash('sha256').update(`engines-${seed}-${i}`).digest());
}

/** An amount for op kind `k`: mostly small, sometimes huge (overflow), zero only inside batches. */
export function amountFor(rng, inBatch) {
  const r = rng.int(100);
  if (inBatch && r < 3) return 0n;
  if (r < 6) return U64_MAX - BigInt(rng.int(1000));
  if (r < 9) return rng.u64() || 1n;
  return BigInt(1 + rng.int(1000));
}

/**
 * steps: { t: 'mint'|'transfer'|'mintBatch'|'transferBatch'|'checkpoint'|'sync', ops?: op[] }
 * op: { k: 'mint', to, amount } | { k: 'transfer', from, to, amount } (indexes into keys)
 */
export function makePlan({ seed, ops, keys, checkpointEvery = 0, batchMax = 40 }) {
  const rng = makeRng(seed);
  const steps = [];
  let n = 0;
  let sinceCkpt = 0;
  const op = (kind, inBatch) => {
    if (kind === 'mint' || rng.chance(0.05)) return { k: 'mint', to: rng.int(keys), amount: amountFor(rng, inBatch) };
    const from = rng.int(keys);
    const to = rng.chance(0.03) ? from : rng.int(keys);
    return { k: 'transfer', from, to, amount: amountFor(rng, inBatch) };
  };
  while (n < ops) {
    const r = rng.int(100);
    if (checkpointEvery && sinceCkpt >= checkpointEvery) {
      steps.push({ t: 'checkpoint' });
      sinceCkpt = 0;
      continue;
    }
    if (r < 3) {
      steps.push({ t: 'sync' });
      continue;
    }
    let step;
    // Early on, mostly mints so that transfers find money.
    const mintBias = n < ops / 5 ? 60 : 25;
    if (r < 3 + mintBias / 2) step = { t: 'mint', ops: [op('mint', false)] };
    else if (r < 3 + mintBias) step = { t: 'mintBatch', ops: Array.from({ length: 1 + rng.int(batchMax) }, () => op('mint', true)) };
    else if (r < 70) step = { t: 'transfer', ops: [op('transfer', false)] };
    else step = { t: 'transferBatch', ops: Array.from({ length: 1 + rng.int(batchMax) }, () => op('transfer', true)) };
    if (step.t === 'transfer' && step.ops[0].k === 'mint') step.t = 'mint';
    if (step.t === 'mintBatch') step.ops = step.ops.map((o) => (o.k === 'mint' ? o : { k: 'mint', to: o.to, amount: o.amount }));
    if (step.t === 'transferBatch') step.ops = step.ops.map((o) => (o.k === 'transfer' ? o : { k: 'transfer', from: o.to, to: (o.to + 1) % keys, amount: o.amount }));
    n += step.ops.length;
    sinceCkpt += step.ops.length;
    steps.push(step);
  }
  return steps;
}

export function mintOps(keys, ops) {
  const b = Buffer.alloc(ops.length * 40);
  ops.forEach((o, i) => {
    keys[o.to].copy(b, i * 40);
    b.writeBigUInt64LE(o.amount, i * 40 + 32);
  });
  return b;
}

export function transferOps(keys, ops) {
  const b = Buffer.alloc(ops.length * 72);
  ops.forEach((o, i) => {
    keys[o.from].copy(b, i * 72);
    keys[o.to].copy(b, i * 72 + 32);
    b.writeBigUInt64LE(o.amount, i * 72 + 64);
  });
  return b;
}

/** Balances and existence of every key; lsn = successful operations so far. */
export class Model {
  constructor(keys) {
    this.balance = new Array(keys).fill(0n);
    this.exists = new Array(keys).fill(false);
    this.lsn = 0;
  }
  /** Applies one op; returns its status name. */
  apply(op) {
    if (op.amount === 0n) return 'INVALID_AMOUNT';
    if (op.k === 'mint') {
      if (this.balance[op.to] + op.amount > U64_MAX) return 'OVERFLOW';
      this.balance[op.to] += op.amount;
      this.exists[op.to] = true;
      this.lsn++;
      return 'OK';
    }
    if (op.from === op.to) return 'SAME_ACCOUNT';
    if (!this.exists[op.from]) return 'ACCOUNT_NOT_FOUND';
    if (this.balance[op.from] < op.amount) return 'INSUFFICIENT_FUNDS';
    if (this.balance[op.to] + op.amount > U64_MAX) return 'OVERFLOW';
    this.balance[op.from] -= op.amount;
    this.balance[op.to] += op.amount;
    this.exists[op.to] = true;
    this.lsn++;
    return 'OK';
  }
}

/** Every operation of a plan, in order. */
export function flatOps(steps) {
  return steps.flatMap((s) => s.ops ?? []);
}
