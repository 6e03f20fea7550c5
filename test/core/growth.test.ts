// Shards that grow online (docs/durability.md, "Shards that grow"): accountsPerShard is only the initial
// capacity; the account files grow and the indexes double while the ledger runs, with background
// checkpoints going on; a full disk is IO_ERROR before anything changes; CAPACITY_EXCEEDED is left for the
// hard limit of a shard and for maxAccounts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BatchStatus } from '../../dist/index.js';
import { ACCOUNT_SIZE, Account, INDEX_HEADER_SIZE, MAX_ACCOUNTS_PER_SHARD, crc32c, shardFile } from '../../dist/format.js';
import { engines, expectLedgerError, key, Ledger, open, tmpDir } from './helpers';
// @ts-ignore -- plain ESM module without type declarations
import { makeRng } from '../fixtures/plan.mjs';

const TOTAL = 400_000;
const SINGLES = 40_000; // through mint(); the rest through mintBatch()
const BATCH = 10_000;
const amountOf = (i: number): bigint => BigInt((i % 997) + 1);
const root = process.getuid?.() === 0;

/** n distinct random keys (seeded), as views into one buffer: 400,000 sha256 digests cost seconds on a busy machine. */
function manyKeys(n: number): Buffer[] {
  const rng = makeRng(8);
  const all = Buffer.alloc(n * 32);
  for (let o = 0; o < all.length; o += 4) all.writeUInt32LE(rng.u32(), o);
  return Array.from({ length: n }, (_, i) => all.subarray(i * 32, i * 32 + 32));
}

/** Every balance of keys [0, n) equals amountOf(i) (one getBatch of 10,000 at a time). */
function expectBalances(l: Ledger, keys: Buffer[], n: number): void {
  let wrong = 0;
  let first = -1;
  for (let from = 0; from < n; from += BATCH) {
    const to = Math.min(n, from + BATCH);
    const out = l.getBatch(Buffer.concat(keys.slice(from, to)));
    const view = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    for (let i = from; i < to; i++) {
      if (view.readBigUInt64LE((i - from) * ACCOUNT_SIZE + Account.LAMPORTS) !== amountOf(i)) {
        wrong++;
        if (first < 0) first = i;
      }
    }
  }
  expect(wrong, `balances that are wrong (the first: account ${first})`).toBe(0);
}

describe.each(engines)('%s engine: shards that grow', (engine) => {
  it('a ledger created for 4 x 1,000 takes 400,000 distinct accounts through mint and mintBatch, with background checkpoints running, every balance exact; it reopens clean, grown', async () => {
    const keys = manyKeys(TOTAL + 1);
    const dir = tmpDir('gl-grow');
    let l = await open(dir, engine, { shards: 4, accountsPerShard: 1000 });
    const pending: Promise<void>[] = [];
    for (let i = 0; i < SINGLES; i++) {
      l.mint(keys[i], amountOf(i));
      // A background checkpoint now and then, not awaited: shards grow while it writes back.
      if (i % 15_000 === 7_000) pending.push(l.checkpoint());
    }
    const ops = Buffer.alloc(BATCH * 40);
    for (let from = SINGLES; from < TOTAL; from += BATCH) {
      for (let j = 0; j < BATCH; j++) {
        keys[from + j].copy(ops, j * 40);
        ops.writeBigUInt64LE(amountOf(from + j), j * 40 + 32);
      }
      const st = l.mintBatch(ops);
      expect(st.every((s) => s === BatchStatus.OK), `mintBatch at ${from}`).toBe(true);
      if ((from / BATCH) % 7 === 3) pending.push(l.checkpoint());
    }
    await Promise.all(pending);
    expectBalances(l, keys, TOTAL);
    const s = l.stats();
    expect(s.accounts).toBe(TOTAL);
    for (const sh of s.shards) {
      expect(sh.capacity).toBeGreaterThanOrEqual(sh.accounts);
      expect(sh.accounts).toBeGreaterThan(1000);
      // From 2,048 entries: doubled at least five times to hold about 100,000 accounts at a load of at most 1/2.
      expect(sh.indexCapacity).toBeGreaterThanOrEqual(2 * sh.accounts);
      expect(sh.indexResizes).toBeGreaterThanOrEqual(5);
    }
    const shape = s.shards.map((x) => [x.accounts, x.capacity, x.indexCapacity]);
    await l.close();
    for (let n = 0; n < 4; n++) {
      expect(fs.statSync(path.join(dir, shardFile('shard', n, 'bin'))).size).toBe(shape[n][1] * ACCOUNT_SIZE);
    }
    l = await Ledger.open(dir, { engine });
    expect(l.recovery.mode).toBe('clean');
    expect(l.stats().shards.map((x) => [x.accounts, x.capacity, x.indexCapacity])).toEqual(shape);
    expectBalances(l, keys, TOTAL);
    // and it goes on growing after the reopen
    l.mint(keys[TOTAL], 5n);
    expect(l.balance(keys[TOTAL])).toBe(5n);
    await l.close();
  });

  it('maxAccounts caps the whole ledger, not a shard: shards still grow below it, and the limit is an option of each open', async () => {
    const dir = tmpDir('gl-grow-max');
    let l = await open(dir, engine, { shards: 2, accountsPerShard: 10, maxAccounts: 500 });
    for (let i = 0; i < 500; i++) l.mint(key(i), 1n);
    expect(l.stats().shards.every((x) => x.capacity > 10)).toBe(true);
    expectLedgerError(() => l.mint(key(500), 1n), 'CAPACITY_EXCEEDED');
    expectLedgerError(() => l.transfer(key(0), key(500), 1n), 'CAPACITY_EXCEEDED');
    l.mint(key(0), 1n); // an existing account still takes credits
    await l.close();
    l = await Ledger.open(dir, { engine });
    l.mint(key(500), 1n); // no maxAccounts given this time
    expect(l.stats().accounts).toBe(501);
    await l.close();
    await expect(Ledger.open(tmpDir(), { engine, maxAccounts: 0 })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    await expect(Ledger.open(tmpDir(), { engine, accountsPerShard: MAX_ACCOUNTS_PER_SHARD + 1 }))
      .rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
  });

  it('a shard at the hard limit of 2^27 accounts answers CAPACITY_EXCEEDED and changes nothing', async () => {
    // A shard of 2^27 slots (a sparse 16 GiB file) whose committed index says it holds 2^27 accounts:
    // the one case where growth has nowhere to go.
    const dir = tmpDir('gl-grow-limit');
    let l = await open(dir, engine, { shards: 1, accountsPerShard: MAX_ACCOUNTS_PER_SHARD });
    l.mint(key(0), 7n);
    await l.close();
    const file = path.join(dir, shardFile('index', 0, 'bin'));
    const fd = fs.openSync(file, 'r+');
    const h = Buffer.alloc(INDEX_HEADER_SIZE);
    fs.readSync(fd, h, 0, h.length, 0);
    const COUNT = 16; // IndexHeader.count (docs/formats.md); the header's CRC covers bytes [0, 60)
    const CRC = 60;
    h.writeUInt32LE(MAX_ACCOUNTS_PER_SHARD, COUNT);
    h.writeUInt32LE(crc32c(h, 0, CRC), CRC);
    fs.writeSync(fd, h, 0, h.length, 0);
    fs.closeSync(fd);
    l = await Ledger.open(dir, { engine });
    expect(l.recovery.mode).toBe('clean');
    expect(l.stats().shards[0]).toMatchObject({ accounts: MAX_ACCOUNTS_PER_SHARD, capacity: MAX_ACCOUNTS_PER_SHARD });
    const lsn = l.stats().lsn;
    expectLedgerError(() => l.mint(key(1), 1n), 'CAPACITY_EXCEEDED');
    expect([...l.mintBatch(Buffer.concat([key(2), Buffer.alloc(8, 1)]))]).toEqual([BatchStatus.CAPACITY_EXCEEDED]);
    l.mint(key(0), 1n);
    expect(l.balance(key(0))).toBe(8n);
    expect(l.stats().lsn).toBe(lsn + 1n);
    expect(fs.statSync(path.join(dir, shardFile('shard', 0, 'bin'))).size).toBe(MAX_ACCOUNTS_PER_SHARD * ACCOUNT_SIZE);
    await l.close();
  });

  it.skipIf(!root)('a full disk when a shard must grow is IO_ERROR for that call, changes nothing, and the ledger goes on', async () => {
    const mnt = tmpDir('gl-grow-enospc');
    const mount = (opts: string) => {
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', mnt], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
    };
    mount('size=6m');
    try {
      const dir = path.join(mnt, 'ledger');
      // No log: the account file's growth is the only allocation operations make.
      const l = await Ledger.open(dir, { engine, shards: 1, accountsPerShard: 1000, wal: false });
      let acked = 0;
      let error: unknown;
      let before = l.stats();
      let capacity = before.shards[0].capacity;
      for (let i = 0; i < 200_000; i++) {
        // The state before each call that must grow the shard (the only ones that can fail).
        if (i === capacity) before = l.stats();
        try {
          l.mint(key(i), amountOf(i));
          acked++;
          if (i === capacity) capacity = l.stats().shards[0].capacity;
        } catch (e) {
          error = e;
          break;
        }
      }
      expect(error).toMatchObject({ code: 'IO_ERROR' });
      expect(acked).toBeGreaterThan(1000);
      const after = l.stats();
      expect(after.lsn).toBe(before.lsn);
      expect(after.shards[0]).toEqual(before.shards[0]);
      expect(after.readOnly).toBe(false);
      expect(l.balance(key(acked))).toBe(0n);
      l.mint(key(0), 1n); // existing accounts go on
      spawnSync('mount', ['-o', 'remount,size=256m', mnt]);
      l.mint(key(acked), amountOf(acked)); // and once there is room, the shard grows
      await l.close();
      const again = await Ledger.open(dir, { engine });
      expect(again.recovery.mode).toBe('clean');
      for (let i = 0; i <= acked; i++) expect(again.balance(key(i))).toBe(amountOf(i) + (i === 0 ? 1n : 0n));
      await again.close();
    } finally {
      spawnSync('umount', ['-l', mnt]);
      fs.rmSync(mnt, { recursive: true, force: true });
    }
  });
});
