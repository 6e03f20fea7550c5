import { afterEach, describe, expect, it } from 'vitest';
import bs58 from 'bs58';
import { BatchStatus } from '../../dist/index.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  dirDigest, engines, expectLedgerError, key, Ledger, mintOps, open, stateHash, tmpDir, transferOps,
} from './helpers';

const MAX = (1n << 64n) - 1n;

describe.each(engines)('%s engine: operations', (engine) => {
  let ledger: Ledger | undefined;
  afterEach(async () => {
    await ledger?.close();
    ledger = undefined;
  });

  it('mint creates an account and transfer moves funds both ways or not at all', async () => {
    ledger = await open(tmpDir(), engine);
    const [a, b] = [key(1), key(2)];
    ledger.mint(a, 100n);
    ledger.transfer(a, b, 40);
    expect(ledger.balance(a)).toBe(60n);
    expect(ledger.balance(b)).toBe(40n);
    const acct = ledger.get(b)!;
    expect(Buffer.from(acct.pubkey).equals(b)).toBe(true);
    expect(acct.balance).toBe(40n);
    expect(acct.lsn).toBe(2n);
    expect(acct.createdLsn).toBe(2n);
    expect(ledger.get(key(3))).toBeUndefined();
    expect(ledger.balance(key(3))).toBe(0n);
  });

  it('accepts base58 strings and byte views at any offset', async () => {
    ledger = await open(tmpDir(), engine);
    const k = key(7);
    const padded = Buffer.alloc(40);
    k.copy(padded, 5);
    ledger.mint(new Uint8Array(padded.buffer, padded.byteOffset + 5, 32), 5n);
    ledger.mint(bs58.encode(k), 6);
    expect(ledger.balance(k)).toBe(11n);
    expect(ledger.balance(bs58.encode(k))).toBe(11n);
  });

  it('every rejected call throws its code and changes nothing', async () => {
    ledger = await open(tmpDir(), engine, { shards: 1, accountsPerShard: 2, maxAccounts: 2 });
    const l = ledger;
    const [a, b, c] = [key(1), key(2), key(3)];
    l.mint(a, 10n);
    l.mint(b, MAX);
    const keys = [a, b, c];
    const before = stateHash(l, keys);
    const cases: [string, () => unknown][] = [
      ['INVALID_PUBKEY', () => l.mint(new Uint8Array(31), 1n)],
      ['INVALID_PUBKEY', () => l.mint(new Uint8Array(33), 1n)],
      ['INVALID_PUBKEY', () => l.mint('not base58 0OIl', 1n)],
      ['INVALID_PUBKEY', () => l.mint(bs58.encode(Buffer.alloc(31, 1)), 1n)],
      ['INVALID_PUBKEY', () => l.mint(42 as never, 1n)],
      ['INVALID_PUBKEY', () => l.mint(new Uint16Array(16) as never, 1n)],
      ['INVALID_PUBKEY', () => l.get(null as never)],
      ['INVALID_PUBKEY', () => l.balance(undefined as never)],
      ['INVALID_PUBKEY', () => l.transfer(a, 'x', 1n)],
      ['INVALID_AMOUNT', () => l.mint(a, 0n)],
      ['INVALID_AMOUNT', () => l.mint(a, 0)],
      ['INVALID_AMOUNT', () => l.mint(a, -1n)],
      ['INVALID_AMOUNT', () => l.mint(a, -1)],
      ['INVALID_AMOUNT', () => l.mint(a, 1.5)],
      ['INVALID_AMOUNT', () => l.mint(a, Number.NaN)],
      ['INVALID_AMOUNT', () => l.mint(a, Number.POSITIVE_INFINITY)],
      ['INVALID_AMOUNT', () => l.mint(a, 2 ** 53)],
      ['INVALID_AMOUNT', () => l.mint(a, 1n << 64n)],
      ['INVALID_AMOUNT', () => l.mint(a, '5' as never)],
      ['INVALID_AMOUNT', () => l.transfer(a, b, 0n)],
      ['SAME_ACCOUNT', () => l.transfer(a, a, 1n)],
      ['ACCOUNT_NOT_FOUND', () => l.transfer(c, a, 1n)],
      ['INSUFFICIENT_FUNDS', () => l.transfer(a, b, 11n)],
      ['OVERFLOW', () => l.transfer(a, b, 1n)],
      ['OVERFLOW', () => l.mint(b, 1n)],
      ['CAPACITY_EXCEEDED', () => l.mint(c, 1n)],
      ['CAPACITY_EXCEEDED', () => l.transfer(a, c, 1n)],
      ['INVALID_BATCH', () => l.mintBatch(new Uint8Array(41))],
      ['INVALID_BATCH', () => l.transferBatch(new Uint8Array(71))],
      ['INVALID_BATCH', () => l.getBatch(new Uint8Array(33))],
      ['INVALID_BATCH', () => l.getBatch(new Uint8Array(32), new Uint8Array(127))],
      ['INVALID_BATCH', () => l.mintBatch('abc' as never)],
    ];
    for (const [code, f] of cases) {
      expectLedgerError(f, code);
      expect(stateHash(l, keys), code).toBe(before);
    }
  });

  it('checks transfer errors in the documented order', async () => {
    ledger = await open(tmpDir(), engine);
    const [a, b] = [key(1), key(2)];
    expectLedgerError(() => ledger!.transfer(new Uint8Array(1), b, 0n), 'INVALID_PUBKEY');
    expectLedgerError(() => ledger!.transfer(a, a, 0n), 'INVALID_AMOUNT');
    expectLedgerError(() => ledger!.transfer(a, a, 5n), 'SAME_ACCOUNT');
    expectLedgerError(() => ledger!.transfer(a, b, 5n), 'ACCOUNT_NOT_FOUND');
    ledger.mint(a, 4n);
    expectLedgerError(() => ledger!.transfer(a, b, 5n), 'INSUFFICIENT_FUNDS');
  });

  it('batches apply op by op and report each status', async () => {
    ledger = await open(tmpDir(), engine);
    const [a, b, c] = [key(1), key(2), key(3)];
    const ms = ledger.mintBatch(mintOps([[a, 10n], [b, 0n], [a, 5n], [c, MAX], [c, 1n]]));
    expect([...ms]).toEqual([BatchStatus.OK, BatchStatus.INVALID_AMOUNT, BatchStatus.OK, BatchStatus.OK, BatchStatus.OVERFLOW]);
    const ts = ledger.transferBatch(transferOps([
      [a, b, 15n], [a, b, 1n], [b, a, 5n], [b, b, 1n], [key(9), a, 1n], [b, c, 1n], [b, key(4), 0n],
    ]));
    expect([...ts]).toEqual([BatchStatus.OK, BatchStatus.INSUFFICIENT_FUNDS, BatchStatus.OK, BatchStatus.SAME_ACCOUNT,
      BatchStatus.ACCOUNT_NOT_FOUND, BatchStatus.OVERFLOW, BatchStatus.INVALID_AMOUNT]);
    expect(ledger.balance(a)).toBe(5n);
    expect(ledger.balance(b)).toBe(10n);
    const images = ledger.getBatch(Buffer.concat([a, key(99), b]));
    const view = Buffer.from(images.buffer, images.byteOffset, images.length);
    expect(view.readBigUInt64LE(32)).toBe(5n);
    expect(view.subarray(128, 256).every((x) => x === 0)).toBe(true);
    expect(view.subarray(256, 288).equals(b)).toBe(true);
    expect(view.readBigUInt64LE(256 + 32)).toBe(10n);
    const out = new Uint8Array(3 * 128 + 10);
    expect(ledger.getBatch(Buffer.concat([a, key(99), b]), out)).toBe(out);
  });

  it('a ledger at its maxAccounts answers CAPACITY_EXCEEDED and keeps every account it holds', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 1, accountsPerShard: 300, maxAccounts: 300 });
    for (let i = 0; i < 300; i++) ledger.mint(key(i), BigInt(i + 1));
    expectLedgerError(() => ledger!.mint(key(300), 1n), 'CAPACITY_EXCEEDED');
    const ms = ledger.mintBatch(mintOps([[key(301), 1n], [key(0), 1n]]));
    expect([...ms]).toEqual([BatchStatus.CAPACITY_EXCEEDED, BatchStatus.OK]);
    await ledger.close();
    ledger = await Ledger.open(dir, { engine, maxAccounts: 300 });
    expect(ledger.recovery.mode).toBe('clean');
    for (let i = 0; i < 300; i++) expect(ledger.balance(key(i))).toBe(BigInt(i + 1) + (i === 0 ? 1n : 0n));
    expect(ledger.stats().shards[0].loadFactor).toBe(1);
    expectLedgerError(() => ledger!.mint(key(300), 1n), 'CAPACITY_EXCEEDED');
  });

  it('use after close is CLOSED and close is idempotent', async () => {
    const l = await open(tmpDir(), engine);
    l.mint(key(1), 1n);
    const p1 = l.close();
    const p2 = l.close();
    await Promise.all([p1, p2]);
    expectLedgerError(() => l.mint(key(1), 1n), 'CLOSED');
    expectLedgerError(() => l.get(key(1)), 'CLOSED');
    await expect(l.sync()).rejects.toMatchObject({ code: 'CLOSED' });
    await expect(l.checkpoint()).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('invalid options are INVALID_OPTIONS; reopen keeps the manifest shape', async () => {
    const dir = tmpDir();
    for (const bad of [{ shards: 0 }, { shards: 1.5 }, { accountsPerShard: -1 }, { shards: '4' }, { syncEvery: 0 }, { wal: 'yes' }, { readAhead: 'no' }]) {
      await expect(Ledger.open(tmpDir(), { engine, ...bad } as never)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    }
    const l = await open(dir, engine, { shards: 3, accountsPerShard: 500 });
    await l.close();
    await expect(open(dir, engine, { shards: 5 })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    ledger = await Ledger.open(dir, { engine });
    expect(ledger.stats().shards.length).toBe(3);
    expect(ledger.stats().shards[0].capacity).toBe(500);
  });

  it('sync resolves with everything durable and concurrent callers share fsyncs', async () => {
    ledger = await open(tmpDir(), engine, { syncEvery: 1_000_000, syncIntervalMs: 100_000 });
    for (let i = 0; i < 100; i++) ledger.mint(key(i), 1n);
    const before = ledger.stats().fsyncs;
    await Promise.all(Array.from({ length: 20 }, () => ledger!.sync()));
    const s = ledger.stats();
    expect(s.durableLsn).toBe(s.lsn);
    expect(s.fsyncs - before).toBeGreaterThanOrEqual(1);
    expect(s.fsyncs - before).toBeLessThanOrEqual(2);
  });

  it('invalid maxUnsyncedRecords, checkpointEveryBytes and checkpointIntervalMs are INVALID_OPTIONS and change nothing', async () => {
    const bad: Record<string, unknown>[] = [
      // a transfer logs two records: a bound below 2 could never admit one
      ...[0, 1, -4, 2.5, Number.NaN, Number.POSITIVE_INFINITY, '64', 2 ** 41, null].map((v) => ({ maxUnsyncedRecords: v })),
      ...[0, 1, 4095, -4096, 4096.5, Number.NaN, '65536', 2 ** 49, true].map((v) => ({ checkpointEveryBytes: v })),
      ...[-1, 0.5, Number.NaN, '200', 2 ** 31 + 1, {}].map((v) => ({ checkpointIntervalMs: v })),
    ];
    // a new ledger: nothing is created
    for (const b of bad) {
      const dir = path.join(tmpDir(), 'ledger');
      await expect(Ledger.open(dir, { engine, ...b } as never), JSON.stringify(b)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      expect(fs.existsSync(dir), JSON.stringify(b)).toBe(false);
    }
    // an existing one: no byte changes, and it still opens clean
    const dir = tmpDir();
    const l = await open(dir, engine);
    l.mint(key(1), 5n);
    await l.close();
    const before = dirDigest(dir);
    for (const b of bad) {
      await expect(Ledger.open(dir, { engine, ...b } as never), JSON.stringify(b)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      expect(dirDigest(dir), JSON.stringify(b)).toEqual(before);
    }
    // the smallest values that are allowed
    ledger = await Ledger.open(dir, { engine, maxUnsyncedRecords: 2, checkpointEveryBytes: 4096, checkpointIntervalMs: 0 });
    expect(ledger.recovery.mode).toBe('clean');
    expect(ledger.balance(key(1))).toBe(5n);
  });

  it('never lets more than maxUnsyncedRecords log records go unsynced (default 8 x syncEvery)', async () => {
    ledger = await open(tmpDir(), engine, { syncEvery: 4, syncIntervalMs: 100_000 });
    let max = 0n;
    for (let i = 0; i < 3000; i++) {
      ledger.mint(key(i % 50), 1n); // one record each
      const s = ledger.stats();
      if (s.lsn - s.durableLsn > max) max = s.lsn - s.durableLsn;
    }
    expect(max).toBeLessThanOrEqual(32n);
    expect(max).toBeGreaterThan(0n);
  });

  it('maxUnsyncedRecords bounds unsynced records, not operations: a transfer is two', async () => {
    ledger = await open(tmpDir(), engine, { syncEvery: 1_000_000, syncIntervalMs: 2 ** 31, maxUnsyncedRecords: 10 });
    for (let i = 0; i < 20; i++) ledger.mint(key(i), 1000n);
    let max = 0n;
    const note = () => {
      const s = ledger!.stats();
      if (s.lsn - s.durableLsn > max) max = s.lsn - s.durableLsn;
    };
    for (let i = 0; i < 500; i++) {
      ledger.mint(key(i % 20), 1n);
      note();
      ledger.transfer(key(i % 20), key((i + 7) % 20), 1n);
      note();
    }
    // mint, transfer, mint, ...: 10 records hold at most 7 operations (a bound on operations would allow 10)
    expect(max).toBeLessThanOrEqual(7n);
    expect(max).toBeGreaterThan(0n);
    const s = ledger.stats();
    ledger.mint(key(0), 1n);
    await ledger.sync();
    expect(ledger.stats().durableLsn).toBe(s.lsn + 1n);
  });

  it('syncIntervalMs makes a lone write durable without sync()', async () => {
    ledger = await open(tmpDir(), engine, { syncEvery: 1_000_000, syncIntervalMs: 50 });
    ledger.mint(key(1), 1n);
    const deadline = Date.now() + 3000;
    while (ledger.stats().durableLsn < 1n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(ledger.stats().durableLsn).toBe(1n);
  });
});
