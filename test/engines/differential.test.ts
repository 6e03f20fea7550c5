// The differential test: random operation sequences applied to a native-engine ledger and a
// JS-engine ledger in lockstep (two directories, the same hash seed) must give the same status for
// every operation, the same account images and LSN at every step, the same log records (but for
// their timestamps), and the same account, index and manifest files after every close. Along the
// way the directories are reopened with the engines swapped, and "crashed" (a copy of the files as
// the kernel holds them, taken while open) and recovered each by the engine that did not write it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { BatchStatus } from '../../dist/index.js';
import {
  codeOf, fileDiffs, jsEngineAvailable, open, other, snapshot, state, stateDiff, tmpDir, walDiffs,
  type Engine, type Ledger,
} from './helpers';
import { amountFor, makeKeys, makeRng } from './workload.mjs';

interface Config {
  name: string;
  shards: number;
  aps: number;
  wal: boolean;
  syncEvery?: number;
  keys: number;
  steps: number;
  seeds: number[];
  /** most operations in a batch (default: 1,000 with 16 shards, else 60) */
  batch?: number;
  /** the ledger's maxAccounts (a full ledger answers CAPACITY_EXCEEDED) */
  maxAccounts?: number;
}

const CONFIGS: Config[] = [
  { name: 'wal on, 4 shards', shards: 4, aps: 200, wal: true, keys: 700, steps: 500, seeds: [1, 2, 3] },
  // 37 accounts: the last page of the account file is partial; the ledger fills up (maxAccounts).
  { name: 'wal on, 1 full shard, syncEvery 3', shards: 1, aps: 37, wal: true, syncEvery: 3, keys: 60, steps: 400, seeds: [4, 5], maxAccounts: 37 },
  // Shards of 50 that take 1,500 accounts each: account files grow, indexes double (incremental rehash) while
  // checkpoints, crashes and reopens happen; both engines must grow them the same way, file for file.
  { name: 'wal on, 2 shards that grow', shards: 2, aps: 50, wal: true, keys: 3000, steps: 250, seeds: [11], batch: 400 },
  { name: 'wal off, 3 shards', shards: 3, aps: 100, wal: false, keys: 330, steps: 500, seeds: [6, 7, 8] },
  { name: 'wal on, syncEvery 1, 2 shards', shards: 2, aps: 64, wal: true, syncEvery: 1, keys: 150, steps: 400, seeds: [9] },
  { name: 'wal on, 16 shards, large batches', shards: 16, aps: 1000, wal: true, keys: 9000, steps: 150, seeds: [10] },
];

const statusName = new Map(Object.entries(BatchStatus).map(([k, v]) => [v, k]));
const names = (st: Uint8Array) => [...st].map((s) => statusName.get(s) ?? String(s));
const seen = new Map<string, number>();
const count = (what: string, n = 1) => seen.set(what, (seen.get(what) ?? 0) + n);

/** ops at an odd byte offset sometimes: the engines must not care about alignment. */
function maybeUnaligned(rng: ReturnType<typeof makeRng>, b: Buffer): Uint8Array {
  if (!rng.chance(0.3)) return b;
  const c = Buffer.alloc(b.length + 1);
  b.copy(c, 1);
  return new Uint8Array(c.buffer, c.byteOffset + 1, b.length);
}

function damageIndex(file: string, kind: number, bit: number): void {
  if (kind === 0) {
    fs.rmSync(file);
    return;
  }
  const b = fs.readFileSync(file);
  if (kind === 1) {
    b[bit % 64] ^= 1 << (bit % 8);
  } else {
    // a bit of an entry page that holds something, if any (else the header)
    const pages = b.readUInt32LE(20);
    const base = 4096 + Math.ceil((pages * 4) / 4096) * 4096;
    const used: number[] = [];
    for (let at = base; at < b.length; at += 4096) if (b.subarray(at, at + 4096).some((x) => x !== 0)) used.push(at);
    const at = used.length ? used[bit % used.length] + ((bit >>> 8) % 4096) : bit % 64;
    b[at] ^= 1 << (bit % 8);
  }
  fs.writeFileSync(file, b);
}

async function run(cfg: Config, seed: number): Promise<void> {
  const rng = makeRng(seed * 7919 + 17);
  const keys = makeKeys(seed, cfg.keys);
  const dirs = [tmpDir('gl-diff-a'), tmpDir('gl-diff-b')];
  let engines: Engine[] = ['native', 'js'];
  const opts = { wal: cfg.wal, syncEvery: cfg.syncEvery, syncIntervalMs: 50, maxAccounts: cfg.maxAccounts };
  const create = { ...opts, shards: cfg.shards, accountsPerShard: cfg.aps, seed: (seed * 2654435761) >>> 0 };
  let ls: Ledger[] = [await open(dirs[0], engines[0], create), await open(dirs[1], engines[1], create)];
  let checkpointed = state(ls[0], keys); // what wal:false comes back to after a crash
  let step = 0;
  let what = 'open';
  const at = () => `${cfg.name}, seed ${seed}, step ${step} (${what}); ${dirs[0]} by ${engines[0]}, ${dirs[1]} by ${engines[1]}`;
  const pick = () => keys[rng.int(keys.length)];
  const same = (a: unknown, b: unknown) => expect(b, at()).toEqual(a);
  const sameState = () => {
    const d = stateDiff(state(ls[0], keys), state(ls[1], keys));
    expect(d, at()).toBe('');
  };
  const closeBoth = async () => {
    await Promise.all(ls.map((l) => l.close()));
    expect(fileDiffs(dirs[0], dirs[1]), at()).toEqual([]);
    expect(walDiffs(dirs[0], dirs[1]), at()).toEqual([]);
  };

  for (step = 0; step < cfg.steps; step++) {
    const r = rng.int(1000);
    if (r < 280) {
      const k = pick();
      const amount = amountFor(rng, false);
      what = 'mint';
      const codes = ls.map((l) => codeOf(() => l.mint(k, amount)));
      same(codes[0], codes[1]);
      count(codes[0]);
    } else if (r < 530) {
      const from = pick();
      const to = rng.chance(0.03) ? from : pick();
      const amount = amountFor(rng, false);
      what = 'transfer';
      const codes = ls.map((l) => codeOf(() => l.transfer(from, to, amount)));
      same(codes[0], codes[1]);
      count(codes[0]);
    } else if (r < 680) {
      const n = 1 + rng.int(cfg.batch ?? (cfg.shards >= 16 ? 1000 : 60));
      const b = Buffer.alloc(n * 40);
      for (let i = 0; i < n; i++) {
        pick().copy(b, i * 40);
        b.writeBigUInt64LE(amountFor(rng, true), i * 40 + 32);
      }
      const ops = maybeUnaligned(rng, b);
      what = `mintBatch of ${n}`;
      const st = ls.map((l) => names(l.mintBatch(ops)));
      same(st[0], st[1]);
      st[0].forEach((x) => count(x));
    } else if (r < 830) {
      const n = 1 + rng.int(cfg.batch ?? (cfg.shards >= 16 ? 1000 : 60));
      const b = Buffer.alloc(n * 72);
      for (let i = 0; i < n; i++) {
        const from = pick();
        from.copy(b, i * 72);
        (rng.chance(0.03) ? from : pick()).copy(b, i * 72 + 32);
        b.writeBigUInt64LE(amountFor(rng, true), i * 72 + 64);
      }
      const ops = maybeUnaligned(rng, b);
      what = `transferBatch of ${n}`;
      const st = ls.map((l) => names(l.transferBatch(ops)));
      same(st[0], st[1]);
      st[0].forEach((x) => count(x));
    } else if (r < 880) {
      const n = 1 + rng.int(20);
      const ks = maybeUnaligned(rng, Buffer.concat(Array.from({ length: n }, pick)));
      what = `getBatch of ${n}`;
      same(...(ls.map((l) => Buffer.from(l.getBatch(ks))) as [Buffer, Buffer]));
      const k = pick();
      same(...(ls.map((l) => l.get(k)) as [unknown, unknown]));
    } else if (r < 910) {
      what = 'sync';
      await Promise.all(ls.map((l) => l.sync()));
      if (!cfg.wal) checkpointed = state(ls[0], keys);
    } else if (r < 940) {
      what = 'checkpoint';
      await Promise.all(ls.map((l) => l.checkpoint()));
      checkpointed = state(ls[0], keys);
    } else if (r < 965) {
      what = 'close and reopen';
      count('reopen');
      await closeBoth();
      if (rng.chance(0.5)) engines = [engines[1], engines[0]];
      what = `reopen, ${dirs[0]} by ${engines[0]}`;
      ls = [await open(dirs[0], engines[0], opts), await open(dirs[1], engines[1], opts)];
      same(ls[0].recovery.mode, 'clean');
      same(ls[1].recovery.mode, 'clean');
      checkpointed = state(ls[0], keys);
    } else if (r < 990) {
      what = 'crash and recover with the other engine';
      count('crash');
      const copies = dirs.map(snapshot);
      expect(fileDiffs(copies[0], copies[1]), at()).toEqual([]);
      expect(walDiffs(copies[0], copies[1]), at()).toEqual([]);
      if (rng.chance(0.5)) {
        // The same damage to one index in both copies: both engines must rebuild it the same way.
        const file = `index_${String(rng.int(cfg.shards)).padStart(3, '0')}.bin`;
        const kind = rng.int(3);
        const bit = rng.u32();
        what += `, ${file} ${['deleted', 'header bit flipped', 'entry page bit flipped'][kind]}`;
        for (const c of copies) damageIndex(path.join(c, file), kind, bit);
      }
      const rec = [await open(copies[0], other(engines[0]), opts), await open(copies[1], other(engines[1]), opts)];
      const [ra, rb] = rec.map((l) => l.recovery);
      same({ ...ra, ms: 0 }, { ...rb, ms: 0 });
      if (rec[0].stats().shards.some((x) => x.indexRebuilds > 0)) count(ra.mode === 'rebuild' ? 'rebuild at open' : 'rebuild on first touch');
      const s0 = state(rec[0], keys);
      expect(stateDiff(s0, state(rec[1], keys)), at()).toBe('');
      expect(stateDiff(cfg.wal ? state(ls[0], keys) : checkpointed, s0), at()).toBe('');
      await Promise.all(rec.map((l) => l.close()));
      expect(fileDiffs(copies[0], copies[1]), at()).toEqual([]);
    } else {
      what = 'full state';
      sameState();
    }
    const [a, b] = ls.map((l) => l.stats());
    if (a.shards.some((x) => x.indexResizes > 0)) count('index resized');
    same({ lsn: a.lsn, checkpointLsn: a.checkpointLsn, walBytes: a.walBytes, readOnly: a.readOnly, shards: a.shards },
      { lsn: b.lsn, checkpointLsn: b.checkpointLsn, walBytes: b.walBytes, readOnly: b.readOnly, shards: b.shards });
    if (step % 25 === 0) sameState();
  }
  what = 'end';
  sameState();
  await closeBoth();
}

describe('differential: native and JS engines in lockstep', () => {
  beforeAll(async () => {
    if (!(await jsEngineAvailable())) throw new Error('the js engine is not registered in dist/ (npm run build)');
  });
  for (const cfg of CONFIGS) {
    for (const seed of cfg.seeds) {
      it(`${cfg.name}, seed ${seed}`, async () => {
        await run(cfg, seed);
      });
    }
  }
  it('the random walks reached every outcome they are meant to compare', () => {
    for (const what of ['OK', 'INVALID_AMOUNT', 'SAME_ACCOUNT', 'ACCOUNT_NOT_FOUND', 'INSUFFICIENT_FUNDS', 'OVERFLOW',
      'CAPACITY_EXCEEDED', 'crash', 'reopen', 'rebuild at open', 'rebuild on first touch', 'index resized']) {
      expect(seen.get(what) ?? 0, `${what} never happened: ${JSON.stringify([...seen])}`).toBeGreaterThan(0);
    }
  });
});
