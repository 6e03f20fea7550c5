// verifyLedger (src/verify.ts): read-only checks of a stopped ledger directory. Each damage is made on a
// closed ledger (or on a snapshot of a live one: what a crash leaves) by one of the engines, then verified.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { verifyLedger } from '../../dist/verify.js';
import {
  ACCOUNT_CRC_LEN, ACCOUNT_SIZE, Account, INDEX_HEADER_CRC_LEN, Index, Wal, crc32c,
  indexEntriesOffset, readManifest,
} from '../../dist/format.js';
import {
  dirDigest, engines, flipBit, key, Ledger, logRecords, MANUAL_SYNC, open, snapshot, tmpDir,
} from '../core/helpers';
import { MINTED, N, SHAPE, closedLedger, crashedLedger, slotOf, removedAfterEach } from './ledgers';



/** Rewrites bytes of a record and seals it again (valid checksum): damage no checksum can see. */
function resealAccount(file: string, slot: number, change: (rec: Buffer) => void): void {
  const b = fs.readFileSync(file);
  const rec = b.subarray(slot * ACCOUNT_SIZE, (slot + 1) * ACCOUNT_SIZE);
  change(rec);
  rec.writeUInt32LE(crc32c(rec, 0, ACCOUNT_CRC_LEN), Account.CRC);
  fs.writeFileSync(file, b);
}

describe.each(engines)('%s engine: verifyLedger', (engine) => {
  const made = removedAfterEach();

  it('a healthy closed ledger is clean: every account, index page and count checked, nothing written', async () => {
    const dir = await made(closedLedger(engine));
    const before = dirDigest(dir, true);
    const seen: number[] = [];
    const r = await verifyLedger(dir, { onProgress: (p) => seen.push(p.done / p.total) });
    expect(r.findings).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.atCheckpoint).toBe(true);
    expect(r.accounts).toBe(N);
    expect(r.checked.accountRecords).toBe(N);
    expect(r.balanceSum).toBe(MINTED);
    expect(r.checked.indexPages).toBe(SHAPE.shards * (readManifest(dir)!.indexCapacity / 512));
    expect(r.counts.checked).toBe(true);
    expect(r.log.records).toBe(0);
    expect(r.supply.checked).toBe(true);
    expect(r.supply.expected).toBe(MINTED);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.at(-1)).toBe(1);
    expect(dirDigest(dir, true)).toEqual(before);
  });

  it('a ledger whose shards grew (account files extended, indexes doubled) verifies clean', async () => {
    const dir = await made(Promise.resolve(tmpDir('gl-verify')));
    const l = await open(dir, engine, { shards: 2, accountsPerShard: 100 });
    const grown = 3000;
    for (let i = 0; i < grown; i++) l.mint(key(i), 2n);
    const shardStats = l.stats().shards;
    await l.close();
    expect(shardStats.every((s) => s.capacity > 100 && s.indexResizes > 0)).toBe(true);
    const r = await verifyLedger(dir);
    expect(r.findings).toEqual([]);
    expect(r.accounts).toBe(grown);
    expect(r.counts.checked).toBe(true);
    expect(r.supply).toMatchObject({ checked: true, expected: BigInt(grown * 2) });
  });

  it('a flipped bit in an account record is a finding naming the shard file and the record\'s offset', async () => {
    const dir = await made(closedLedger(engine));
    const { file, slot } = slotOf(dir, 17);
    flipBit(file, slot * ACCOUNT_SIZE + Account.LAMPORTS);
    const before = dirDigest(dir, true);
    const r = await verifyLedger(dir);
    expect(r.ok).toBe(false);
    expect(r.findings).toEqual([{ file: path.basename(file), offset: slot * ACCOUNT_SIZE, what: `slot ${slot}: checksum mismatch` }]);
    // Its balance is unknown: the supply is not compared with a sum that lacks it.
    expect(r.supply.checked).toBe(false);
    expect(dirDigest(dir, true)).toEqual(before);
  });

  it('a flipped bit in an index entry page is a finding naming the index file and the page\'s offset', async () => {
    const dir = await made(closedLedger(engine));
    const file = path.join(dir, 'index_001.bin');
    const pages = readManifest(dir)!.indexCapacity / 512;
    const page = 3;
    const at = indexEntriesOffset(pages) + page * 4096;
    flipBit(file, at + 100);
    const before = dirDigest(dir, true);
    const r = await verifyLedger(dir);
    expect(r.findings).toEqual([{ file: 'index_001.bin', offset: at, what: expect.stringMatching(/entry page 3: checksum mismatch/) }]);
    expect(dirDigest(dir, true)).toEqual(before);
  });

  it('an index whose count disagrees with the shard file (checksums intact) is the seed\'s account count drift', async () => {
    const dir = await made(closedLedger(engine));
    const file = path.join(dir, 'index_000.bin');
    const b = fs.readFileSync(file);
    const count = b.readUInt32LE(Index.COUNT);
    b.writeUInt32LE(count + 1, Index.COUNT);
    b.writeUInt32LE(crc32c(b, 0, INDEX_HEADER_CRC_LEN), Index.CRC);
    fs.writeFileSync(file, b);
    const r = await verifyLedger(dir);
    expect(r.findings).toEqual([{ file: 'index_000.bin', offset: Index.COUNT,
      what: `index counts ${count + 1} accounts, shard_000.bin holds ${count}` }]);
  });

  it('an index entry whose tag is not its record\'s key hash (every checksum resealed) is a finding at the entry', async () => {
    const dir = await made(closedLedger(engine));
    const file = path.join(dir, 'index_000.bin');
    const b = fs.readFileSync(file);
    const pages = b.readUInt32LE(Index.PAGES);
    const entriesAt = indexEntriesOffset(pages);
    let at = entriesAt;
    while (b.readUInt32LE(at) === 0) at += 8; // the first entry in use
    const page = Math.floor((at - entriesAt) / 4096);
    const slot = b.readUInt32LE(at) - 1;
    const tag = b.readUInt32LE(at + 4);
    b.writeUInt32LE((tag ^ 1) >>> 0, at + 4);
    const pageAt = entriesAt + page * 4096;
    b.writeUInt32LE(crc32c(b, pageAt, pageAt + 4096), 4096 + page * 4);
    b.writeUInt32LE(crc32c(b, 4096, 4096 + pages * 4), Index.TABLE_CRC);
    b.writeUInt32LE(crc32c(b, 0, INDEX_HEADER_CRC_LEN), Index.CRC);
    fs.writeFileSync(file, b);
    const r = await verifyLedger(dir);
    expect(r.findings).toEqual([{ file: 'index_000.bin', offset: at,
      what: `entry for slot ${slot} carries tag ${(tag ^ 1) >>> 0}, the record's key hashes to ${tag}` }]);
  });

  it(
    'a balance changed behind the ledger\'s back (checksum resealed) is supply drift against the manifest', async () => {
      const dir = await made(closedLedger(engine));
      const { file, slot } = slotOf(dir, 5);
      resealAccount(file, slot, (rec) => rec.writeBigUInt64LE(rec.readBigUInt64LE(Account.LAMPORTS) + 7n, Account.LAMPORTS));
      const r = await verifyLedger(dir);
      expect(r.supply.checked).toBe(true);
      expect(r.findings).toEqual([{ file: 'MANIFEST', offset: 0, what: expect.stringMatching(/drift 7$/) }]);
    });

  it('after a crash: the log is checked, replay is pending, and the drift checks say why they did not run', async () => {
    const dir = await made(crashedLedger(engine));
    const before = dirDigest(dir, true);
    const r = await verifyLedger(dir);
    expect(r.findings).toEqual([]);
    expect(r.atCheckpoint).toBe(false);
    expect(r.log.records).toBe(N);
    expect(r.log.replayable).toBe(N);
    expect(r.checked.logRecords).toBe(N);
    expect(r.counts.checked).toBe(false);
    expect(r.supply).toMatchObject({ checked: false, reason: expect.stringMatching(/not at a checkpoint/) });
    expect(r.notes.join('\n')).toMatch(/replays 300/);
    expect(dirDigest(dir, true)).toEqual(before);
  });

  it('a flipped bit in a synced log record is a finding naming the log file and the record\'s offset', async () => {
    const dir = await made(crashedLedger(engine));
    const first = logRecords(dir).find((r) => r.lsn === 1n)!;
    flipBit(path.join(dir, first.file), first.offset + Wal.AMOUNT);
    const before = dirDigest(dir, true);
    const r = await verifyLedger(dir);
    expect(r.ok).toBe(false);
    expect(r.findings).toHaveLength(1);
    expect(r.findings[0]).toMatchObject({ file: first.file, offset: first.offset });
    expect(r.findings[0].what).toMatch(/proves every operation up to LSN \d+ durable/);
    expect(dirDigest(dir, true)).toEqual(before);
    // The same damage fails the open with CORRUPTION: verify and recovery agree.
    await expect(Ledger.open(dir, { engine })).rejects.toMatchObject({ code: 'CORRUPTION' });
  });

  it('damage to the last, unsynced record is a torn tail: a note, not a finding (the open cuts it)', async () => {
    const dir = await made(crashedLedger(engine));
    const last = logRecords(dir).find((r) => r.lsn === BigInt(N))!;
    flipBit(path.join(dir, last.file), last.offset + Wal.AMOUNT);
    const r = await verifyLedger(dir);
    expect(r.findings).toEqual([]);
    expect(r.notes.join('\n')).toMatch(new RegExp(`${last.file.replace('.', '\\.')}: a torn or damaged tail at offset ${last.offset}`));
    expect(r.log.replayable).toBe(N - 1);
    const l = await Ledger.open(dir, { engine });
    expect(l.recovery.walBytesDropped).toBeGreaterThan(0);
    await l.close();
  });

  it('a damaged account record that the next replay rewrites is a note, not a finding', async () => {
    const dir = await made(crashedLedger(engine));
    // Nothing is checkpointed yet: the slot of the first account of shard 0 is zero in the file, and in the log.
    const rec = logRecords(dir).find((r) => r.shard === 0)!;
    const b = fs.readFileSync(path.join(dir, rec.file));
    const slot = b.readUInt32LE(rec.offset + Wal.SLOT);
    flipBit(path.join(dir, 'shard_000.bin'), slot * ACCOUNT_SIZE + Account.LAMPORTS);
    const r = await verifyLedger(dir);
    expect(r.findings).toEqual([]);
    expect(r.notes.join('\n')).toMatch(new RegExp(`shard_000\\.bin: slot ${slot} at offset ${slot * ACCOUNT_SIZE}: checksum mismatch; the next open's replay rewrites it`));
  });

  it('a damaged manifest is a finding at offset 0 of MANIFEST', async () => {
    const dir = await made(closedLedger(engine));
    flipBit(path.join(dir, 'MANIFEST'), 9);
    const r = await verifyLedger(dir);
    expect(r.ok).toBe(false);
    expect(r.findings).toEqual([{ file: 'MANIFEST', offset: 0, what: expect.stringMatching(/manifest is damaged/) }]);
  });

  it('refuses a ledger a live ledger holds (LOCKED), a missing directory and one without a ledger (INVALID_OPTIONS)', async () => {
    const dir = await made(closedLedger(engine));
    const l = await Ledger.open(dir, { engine });
    try {
      await expect(verifyLedger(dir)).rejects.toMatchObject({ code: 'LOCKED', message: expect.stringMatching(`process ${process.pid}`) });
    } finally {
      await l.close();
    }
    await expect(verifyLedger(path.join(dir, 'nope'))).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    const empty = await made(Promise.resolve(tmpDir('gl-verify')));
    await expect(verifyLedger(empty)).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringMatching(/holds no ledger/) });
    expect(fs.readdirSync(empty)).toEqual([]);
  });
});

