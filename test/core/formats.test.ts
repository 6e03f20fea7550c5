// The TypeScript file layouts (src/format.ts) against the native ones (native/format.h, exported by the addon
// as `formats`), and against a record the native core wrote.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import * as F from '../../dist/format.js';
import { activeWal, intactRecord, key, MANUAL_SYNC, open, tmpDir } from './helpers';

const require = createRequire(import.meta.url);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The addon as src/native-engine.ts loads it: GL_ADDON, or `bindings` (build/Release). */
function addon(): { formats: Record<string, number> } {
  const override = process.env.GL_ADDON;
  return override ? require(path.resolve(override)) : require('bindings')({ bindings: 'geometric_ledger', module_root: ROOT });
}

/** The TypeScript value for a native name: "WAL_MAGIC" or "Wal.DURABLE_LSN". */
function tsValue(name: string): unknown {
  const [a, b] = name.split('.');
  const v = (F as Record<string, unknown>)[a];
  return b === undefined ? v : (v as Record<string, unknown> | undefined)?.[b];
}


describe('the TypeScript file layouts equal the native ones', () => {
  const formats = addon().formats;

  it('the addon exports the layouts', () => {
    expect(Object.keys(formats).length).toBeGreaterThan(30);
    for (const name of ['ACCOUNT_SIZE', 'Account.LAMPORTS', 'WAL_RECORD_SIZE', 'Wal.DURABLE_LSN', 'WalType.MINT', 'WAL_GENERATIONS']) {
      expect(formats, name).toHaveProperty([name]);
    }
  });

  it('every constant the addon exports has the same value in src/format.ts', () => {
    const differ = Object.entries(formats)
      .filter(([name, v]) => tsValue(name) !== v)
      .map(([name, v]) => `${name}: native ${v}, TypeScript ${String(tsValue(name))}`);
    expect(differ).toEqual([]);
  });

  it('src/format.ts has no log, account or index header field, and no record type, that the addon does not export', () => {
    const ts = [
      ...Object.keys(F.Account).map((k) => `Account.${k}`),
      ...Object.keys(F.Index).map((k) => `Index.${k}`),
      ...Object.keys(F.Wal).map((k) => `Wal.${k}`),
      ...Object.keys(F.WalType).map((k) => `WalType.${k}`),
    ];
    const missing = ts.filter((name) => !(name in formats));
    expect(missing).toEqual([]);
    // and the other way round: every field the addon exports is one TypeScript knows
    const known = new Set(ts);
    expect(Object.keys(formats).filter((n) => /^(Account|Index|Wal|WalType)\./.test(n) && !known.has(n))).toEqual([]);
  });

  it('the fields of each record are in order, do not overlap and fill it up to its checksum or reserved bytes', () => {
    const wal = Object.entries(F.Wal).sort((a, b) => a[1] - b[1]);
    expect(wal[0][1]).toBe(0);
    for (let i = 1; i < wal.length; i++) expect(wal[i][1], wal[i][0]).toBeGreaterThan(wal[i - 1][1]);
    expect(F.Wal.DURABLE_LSN + 8).toBeLessThanOrEqual(F.WAL_RECORD_SIZE);
    expect(F.Wal.ACCOUNT + F.ACCOUNT_SIZE).toBe(F.Wal.LSN);
    expect(F.Account.CRC).toBe(F.ACCOUNT_CRC_LEN);
    expect(F.Account.CRC + 4).toBe(F.ACCOUNT_SIZE);
  });

  it('the TypeScript offsets read the records the native core writes', async () => {
    const dir = tmpDir();
    const l = await open(dir, 'native', { shards: 1, ...MANUAL_SYNC });
    try {
      l.mint(key(1), 500n);
      await l.sync();
      l.mint(key(2), 700n);
      l.transfer(key(2), key(1), 30n);
      const manifest = F.readManifest(dir)!;
      const file = activeWal(dir);
      expect(path.basename(file)).toBe(F.walFile(0, manifest.epoch));
      expect(F.WAL_GENERATIONS).toBe(2);
      const b = fs.readFileSync(file);
      const W = F.WAL_RECORD_SIZE;
      expect(intactRecord(b, 0)).toBe(true);
      expect(b.readUInt32LE(F.Wal.TYPE)).toBe(F.WalType.HEADER);
      expect(b.readBigUInt64LE(F.Wal.EPOCH)).toBe(manifest.epoch);
      expect(b.readBigUInt64LE(F.Wal.DURABLE_LSN)).toBe(0n);
      const rec = (i: number) => {
        const o = W * i;
        expect(intactRecord(b, o), `record ${i}`).toBe(true);
        const a = o + F.Wal.ACCOUNT;
        return {
          magic: b.readUInt32LE(o + F.Wal.MAGIC), type: b.readUInt32LE(o + F.Wal.TYPE), lsn: b.readBigUInt64LE(o + F.Wal.LSN),
          epoch: b.readBigUInt64LE(o + F.Wal.EPOCH), shard: b.readUInt32LE(o + F.Wal.SHARD), legs: b.readUInt32LE(o + F.Wal.LEGS),
          leg: b.readUInt32LE(o + F.Wal.LEG), amount: b.readBigUInt64LE(o + F.Wal.AMOUNT), durable: b.readBigUInt64LE(o + F.Wal.DURABLE_LSN),
          reservedZero: b.subarray(o + F.Wal.DURABLE_LSN + 8, o + W).every((x) => x === 0),
          pubkey: Buffer.from(b.subarray(a + F.Account.PUBKEY, a + F.Account.PUBKEY + 32)),
          lamports: b.readBigUInt64LE(a + F.Account.LAMPORTS), accountLsn: b.readBigUInt64LE(a + F.Account.LSN),
          created: b.readBigUInt64LE(a + F.Account.CREATED_LSN), slot: b.readUInt32LE(a + F.Account.SLOT),
          version: b.readUInt32LE(a + F.Account.VERSION),
          accountCrcOk: b.readUInt32LE(a + F.Account.CRC) === F.crc32c(b, a, a + F.ACCOUNT_CRC_LEN),
          walSlot: b.readUInt32LE(o + F.Wal.SLOT),
        };
      };
      const common = { magic: F.WAL_MAGIC, epoch: manifest.epoch, shard: 0, reservedZero: true, version: F.ACCOUNT_VERSION, accountCrcOk: true };
      expect(rec(1)).toMatchObject({ ...common, type: F.WalType.MINT, lsn: 1n, legs: 1, leg: 0, amount: 500n, durable: 0n,
        pubkey: key(1), lamports: 500n, accountLsn: 1n, created: 1n, slot: 0, walSlot: 0 });
      expect(rec(2)).toMatchObject({ ...common, type: F.WalType.MINT, lsn: 2n, legs: 1, leg: 0, amount: 700n, durable: 1n,
        pubkey: key(2), lamports: 700n, accountLsn: 2n, created: 2n, slot: 1, walSlot: 1 });
      expect(rec(3)).toMatchObject({ ...common, type: F.WalType.DEBIT, lsn: 3n, legs: 2, leg: 0, amount: 30n, durable: 1n,
        pubkey: key(2), lamports: 670n, accountLsn: 3n, slot: 1 });
      expect(rec(4)).toMatchObject({ ...common, type: F.WalType.CREDIT, lsn: 3n, legs: 2, leg: 1, amount: 30n, durable: 1n,
        pubkey: key(1), lamports: 530n, accountLsn: 3n, slot: 0 });
    } finally {
      await l.close();
    }
  });
});
