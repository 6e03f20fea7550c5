import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BatchStatus } from '../../dist/index.js';
import { engines, key, Ledger, mintOps, tmpDir, transferOps } from './helpers';

const MAX = (1n << 64n) - 1n;
const KEYS = 12;
const CAPACITY = 4; // per shard, 2 shards: a full shard is reachable

/** The ledger's rules in a dozen lines: the reference every step is checked against. */
class Model {
  balances = new Map<number, bigint>();
  perShard = new Map<number, number>();
  constructor(private shardOf: (k: number) => number) {}
  #create(k: number): boolean {
    if (this.balances.has(k)) return true;
    const s = this.shardOf(k);
    if ((this.perShard.get(s) ?? 0) >= CAPACITY) return false;
    this.perShard.set(s, (this.perShard.get(s) ?? 0) + 1);
    this.balances.set(k, 0n);
    return true;
  }
  mint(k: number, a: bigint): number {
    const cur = this.balances.get(k);
    if (cur !== undefined && cur + a > MAX) return BatchStatus.OVERFLOW;
    if (!this.#create(k)) return BatchStatus.CAPACITY_EXCEEDED;
    this.balances.set(k, this.balances.get(k)! + a);
    return BatchStatus.OK;
  }
  transfer(f: number, t: number, a: bigint): number {
    if (f === t) return BatchStatus.SAME_ACCOUNT;
    const from = this.balances.get(f);
    if (from === undefined) return BatchStatus.ACCOUNT_NOT_FOUND;
    if (from < a) return BatchStatus.INSUFFICIENT_FUNDS;
    const to = this.balances.get(t);
    if (to !== undefined && to + a > MAX) return BatchStatus.OVERFLOW;
    if (!this.#create(t)) return BatchStatus.CAPACITY_EXCEEDED;
    this.balances.set(f, from - a);
    this.balances.set(t, this.balances.get(t)! + a);
    return BatchStatus.OK;
  }
}

const amount = fc.oneof(fc.bigInt({ min: 1n, max: 1000n }), fc.constant(MAX), fc.bigInt({ min: 1n, max: MAX }));
const op = fc.oneof(
  fc.record({ kind: fc.constant('mint' as const), k: fc.nat(KEYS - 1), a: amount }),
  fc.record({ kind: fc.constant('transfer' as const), f: fc.nat(KEYS - 1), t: fc.nat(KEYS - 1), a: amount }),
  fc.record({ kind: fc.constant('mintBatch' as const), items: fc.array(fc.tuple(fc.nat(KEYS - 1), amount), { maxLength: 5 }) }),
  fc.record({ kind: fc.constant('transferBatch' as const), items: fc.array(fc.tuple(fc.nat(KEYS - 1), fc.nat(KEYS - 1), amount), { maxLength: 5 }) }),
  fc.record({ kind: fc.constant('reopen' as const) }),
  fc.record({ kind: fc.constant('checkpoint' as const) }),
);

describe.each(engines)('%s engine: model-based', (engine) => {
  it('random operations with random clean reopens match a pure-TypeScript model at every step', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 60 }), async (ops) => {
        const dir = tmpDir('gl-model');
        let l = await Ledger.open(dir, { engine, shards: 2, accountsPerShard: CAPACITY });
        // Capacity is per shard, so the model must know each key's shard.
        const shardOf = await learnShards(dir, engine);
        const m = new Model(shardOf);
        try {
          for (const o of ops) {
            if (o.kind === 'mint') {
              const want = m.mint(o.k, o.a);
              let got: number = BatchStatus.OK;
              try { l.mint(key(o.k), o.a); } catch (e) { got = BatchStatus[(e as { code: keyof typeof BatchStatus }).code]; }
              expect(got).toBe(want);
            } else if (o.kind === 'transfer') {
              const want = m.transfer(o.f, o.t, o.a);
              let got: number = BatchStatus.OK;
              try { l.transfer(key(o.f), key(o.t), o.a); } catch (e) { got = BatchStatus[(e as { code: keyof typeof BatchStatus }).code]; }
              expect(got).toBe(want);
            } else if (o.kind === 'mintBatch') {
              const want = o.items.map(([k, a]) => m.mint(k, a));
              expect([...l.mintBatch(mintOps(o.items.map(([k, a]) => [key(k), a])))]).toEqual(want);
            } else if (o.kind === 'transferBatch') {
              const want = o.items.map(([f, t, a]) => m.transfer(f, t, a));
              expect([...l.transferBatch(transferOps(o.items.map(([f, t, a]) => [key(f), key(t), a])))]).toEqual(want);
            } else if (o.kind === 'checkpoint') {
              await l.checkpoint();
            } else {
              await l.close();
              l = await Ledger.open(dir, { engine });
              expect(l.recovery.mode).toBe('clean');
            }
            for (let k = 0; k < KEYS; k++) expect(l.balance(key(k))).toBe(m.balances.get(k) ?? 0n);
          }
        } finally {
          await l.close();
        }
      }),
      { numRuns: 40 },
    );
  });
});

/** Which of the two shards each test key lands in, read off a throwaway ledger's files. */
async function learnShards(dir: string, engine: 'native' | 'js'): Promise<(k: number) => number> {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const seed = fs.readFileSync(path.join(dir, 'MANIFEST')).readUInt32LE(20);
  const probeDir = tmpDir('gl-probe');
  const probe = await Ledger.open(probeDir, { engine, shards: 2, accountsPerShard: KEYS, seed });
  const map = new Map<number, number>();
  for (let k = 0; k < KEYS; k++) {
    probe.mint(key(k), 1n);
    map.set(k, probe.stats().shards[0].accounts > [...map.values()].filter((s) => s === 0).length ? 0 : 1);
  }
  await probe.close();
  fs.rmSync(probeDir, { recursive: true, force: true });
  return (k) => map.get(k)!;
}
