import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BatchStatus } from '../../dist/index.js';
import { resultName } from '../../dist/counters.js';
import { engines, key, Ledger, mintOps, tmpDir, transferOps } from './helpers';

const MAX = (1n << 64n) - 1n;
const KEYS = 12;
const CAPACITY = 4; // initial per shard, 2 shards: shards grow
const MAX_ACCOUNTS = 7; // the ledger's maxAccounts: a full ledger is reachable

/** The ledger's rules in a dozen lines: the reference every step is checked against. */
class Model {
  balances = new Map<number, bigint>();
  perShard = new Map<number, number>();
  /** Total minted: what stats().supply must say. */
  minted = 0n;
  /** Operations since the ledger's last open by op and result: what counters().operations must say. */
  counts = { mint: {} as Record<string, number>, transfer: {} as Record<string, number> };
  constructor(private shardOf: (k: number) => number) {}
  #count(op: 'mint' | 'transfer', status: number): number {
    const r = resultName(status);
    this.counts[op][r] = (this.counts[op][r] ?? 0) + 1;
    return status;
  }
  #create(k: number): boolean {
    if (this.balances.has(k)) return true;
    const s = this.shardOf(k);
    if (this.balances.size >= MAX_ACCOUNTS) return false;
    this.perShard.set(s, (this.perShard.get(s) ?? 0) + 1);
    this.balances.set(k, 0n);
    return true;
  }
  mint(k: number, a: bigint): number {
    const st = this.#mint(k, a);
    if (st === BatchStatus.OK) this.minted += a;
    return this.#count('mint', st);
  }
  transfer(f: number, t: number, a: bigint): number {
    return this.#count('transfer', this.#transfer(f, t, a));
  }
  #mint(k: number, a: bigint): number {
    const cur = this.balances.get(k);
    if (cur !== undefined && cur + a > MAX) return BatchStatus.OVERFLOW;
    if (!this.#create(k)) return BatchStatus.CAPACITY_EXCEEDED;
    this.balances.set(k, this.balances.get(k)! + a);
    return BatchStatus.OK;
  }
  #transfer(f: number, t: number, a: bigint): number {
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

// Mostly small amounts, so that most operations succeed (and log); the edges now and then.
const amount = fc.oneof(
  { weight: 6, arbitrary: fc.bigInt({ min: 1n, max: 1000n }) },
  { weight: 1, arbitrary: fc.constant(MAX) },
  { weight: 1, arbitrary: fc.bigInt({ min: 1n, max: MAX }) },
);
/**
 * The commands. `explicit`: how much checkpoint() calls weigh; with 0, background checkpoints start only from
 * writes passing a small checkpointEveryBytes (each call hands over, which starts that count again).
 */
function commands(explicit: number) {
  return fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('mint' as const), k: fc.nat(KEYS - 1), a: amount }) },
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('transfer' as const), f: fc.nat(KEYS - 1), t: fc.nat(KEYS - 1), a: amount }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('mintBatch' as const), items: fc.array(fc.tuple(fc.nat(KEYS - 1), amount), { maxLength: 12 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('transferBatch' as const), items: fc.array(fc.tuple(fc.nat(KEYS - 1), fc.nat(KEYS - 1), amount), { maxLength: 12 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('reopen' as const) }) },
    // checkpoint(), awaited at once
    { weight: explicit, arbitrary: fc.record({ kind: fc.constant('checkpoint' as const) }) },
    // A background checkpoint: started and left running while the next commands go on ...
    { weight: 2 * explicit, arbitrary: fc.record({ kind: fc.constant('startCheckpoint' as const) }) },
    // ... and awaited later (every checkpoint() promise still pending).
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('awaitCheckpoints' as const) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('sync' as const) }) },
    // A turn of the event loop: the JS engine's write-back runs in such turns.
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('tick' as const) }) },
  );
}
const list = (explicit: number, maxLength: number) => fc.array(commands(explicit), { minLength: 1, maxLength, size: 'max' });

/**
 * A run: its commands and ledger options. A small checkpointEveryBytes makes writes start background
 * checkpoints by themselves (a record is 224 bytes: 4096 bytes are 18 records, 8192 bytes 36); a small maxUnsyncedRecords
 * makes writes wait for the group fsync. Half the runs call checkpoint() often; the other half never, so that
 * the log grows past checkpointEveryBytes.
 */
const maxUnsyncedRecords = fc.constantFrom(4, 32, undefined);
// The ledger's hash seed, from a few (each key's shard is learnt once per seed and engine).
const HASH_SEEDS = [0x2545f491, 0x9e3779b9, 7, 0xdeadbeef];
const hashSeed = fc.nat(HASH_SEEDS.length - 1);
const run = fc.oneof(
  fc.record({ ops: list(1, 80), checkpointEveryBytes: fc.constantFrom(4096, 8192, undefined), maxUnsyncedRecords, hashSeed }),
  fc.record({ ops: list(0, 120), checkpointEveryBytes: fc.constant(4096), maxUnsyncedRecords, hashSeed }),
);

/** A checkpoint() promise still pending, and what the ledger was when it was called. */
interface Pending {
  promise: Promise<void>;
  /** A checkpoint was running: the call joins it, and resolves when that one commits. */
  joined: boolean;
  lsn: bigint;
  checkpointLsn: bigint;
  checkpoints: number;
}

describe.each(engines)('%s engine: model-based', (engine) => {
  // What the runs exercised, checked at the end: a model test that never had a checkpoint running while it
  // went on, or never had a write start one, would prove nothing about them.
  const seen = { running: 0, byWrites: 0 };
  it('random operations, background checkpoints started and awaited later or started by writes, and clean reopens match a pure-TypeScript model at every step (balances, supply, operation counts by result)', async () => {
    await fc.assert(
      fc.asyncProperty(run, async ({ ops, ...k }) => {
        const dir = tmpDir('gl-model');
        const options = { engine, maxAccounts: MAX_ACCOUNTS, ...(k.checkpointEveryBytes ? { checkpointEveryBytes: k.checkpointEveryBytes } : {}),
          ...(k.maxUnsyncedRecords ? { maxUnsyncedRecords: k.maxUnsyncedRecords } : {}) };
        let l = await Ledger.open(dir, { ...options, shards: 2, accountsPerShard: CAPACITY, seed: HASH_SEEDS[k.hashSeed] });
        // Capacity is per shard, so the model must know each key's shard.
        const shardOf = await learnShards(HASH_SEEDS[k.hashSeed], engine);
        const m = new Model(shardOf);
        let pending: Pending[] = [];
        const start = (): void => {
          const s = l.stats();
          const p: Pending = {
            promise: l.checkpoint(), joined: s.checkpointInProgress, lsn: s.lsn, checkpointLsn: s.checkpointLsn, checkpoints: s.checkpoints,
          };
          p.promise.catch(() => {}); // awaited (and its rejection reported) later
          pending.push(p);
        };
        // Every pending checkpoint() resolves (none rejects); one that started a checkpoint resolves once a
        // checkpoint covering every operation before the call has committed.
        const settle = async (): Promise<void> => {
          const all = pending;
          pending = [];
          for (const p of all) {
            await p.promise;
            if (!p.joined && l) {
              const s = l.stats();
              expect(s.checkpointLsn).toBeGreaterThanOrEqual(p.lsn);
              if (p.lsn > p.checkpointLsn) expect(s.checkpoints).toBeGreaterThan(p.checkpoints); // else nothing to do
            }
          }
        };
        try {
          for (const o of ops) {
            const before = l.stats();
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
              // Not joined: a checkpoint covering every operation before the call has committed.
              if (!before.checkpointInProgress) expect(l.stats().checkpointLsn).toBe(before.lsn);
            } else if (o.kind === 'startCheckpoint') {
              start();
            } else if (o.kind === 'awaitCheckpoints') {
              await settle();
            } else if (o.kind === 'sync') {
              const lsn = l.stats().lsn;
              await l.sync();
              expect(l.stats().durableLsn).toBeGreaterThanOrEqual(lsn);
            } else if (o.kind === 'tick') {
              await new Promise((r) => setImmediate(r));
            } else {
              // close() lets a running background checkpoint finish: the promises of checkpoint() resolve.
              await l.close();
              const all = pending;
              pending = [];
              await Promise.all(all.map((p) => p.promise));
              l = await Ledger.open(dir, options);
              expect(l.recovery.mode).toBe('clean');
              m.counts = { mint: {}, transfer: {} }; // counters start again at each open
            }
            for (let k = 0; k < KEYS; k++) expect(l.balance(key(k))).toBe(m.balances.get(k) ?? 0n);
            const s = l.stats();
            if (s.checkpointInProgress) seen.running++;
            const write = o.kind === 'mint' || o.kind === 'transfer' || o.kind === 'mintBatch' || o.kind === 'transferBatch';
            if (write && !before.checkpointInProgress && (s.checkpointInProgress || s.checkpoints > before.checkpoints)) seen.byWrites++;
            expect(s.accounts).toBe(m.balances.size);
            expect(s.supply).toBe(m.minted);
            expect(l.counters().operations).toEqual(m.counts);
            expect(s.durableLsn).toBeLessThanOrEqual(s.lsn);
            expect(s.checkpointLsn).toBeLessThanOrEqual(s.lsn);
          }
          await settle();
          for (let k = 0; k < KEYS; k++) expect(l.balance(key(k))).toBe(m.balances.get(k) ?? 0n);
        } finally {
          await l.close();
          await Promise.allSettled(pending.map((p) => p.promise));
          fs.rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 40 },
    );
    expect(seen.running, 'steps that ended with a background checkpoint running').toBeGreaterThan(0);
    expect(seen.byWrites, 'background checkpoints that writes started').toBeGreaterThan(0);
    console.log(`${engine}: ${seen.running} steps ended with a checkpoint running, ${seen.byWrites} checkpoints started by writes`);
  });
});

/** Which of the two shards each test key lands in with hash seed `seed`, read off a throwaway ledger's stats. */
const learnt = new Map<string, (k: number) => number>();
async function learnShards(seed: number, engine: 'native' | 'js'): Promise<(k: number) => number> {
  const known = learnt.get(`${engine}:${seed}`);
  if (known) return known;
  const probeDir = tmpDir('gl-probe');
  const probe = await Ledger.open(probeDir, { engine, shards: 2, accountsPerShard: KEYS, seed });
  const map = new Map<number, number>();
  for (let k = 0; k < KEYS; k++) {
    probe.mint(key(k), 1n);
    map.set(k, probe.stats().shards[0].accounts > [...map.values()].filter((s) => s === 0).length ? 0 : 1);
  }
  await probe.close();
  fs.rmSync(probeDir, { recursive: true, force: true });
  const shardOf = (k: number): number => map.get(k)!;
  learnt.set(`${engine}:${seed}`, shardOf);
  return shardOf;
}
