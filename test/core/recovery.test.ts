import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { DIST, engines, key, Ledger, open, tmpDir } from './helpers';
import { crc32cUpdate } from '../../dist/format.js';

const WAL = 224;

/** What a crash would leave: the files as the kernel holds them now (the ledger stays open). */
function snapshot(dir: string): string {
  const copy = tmpDir('gl-crash');
  for (const f of fs.readdirSync(dir)) if (f !== 'LOCK') fs.copyFileSync(path.join(dir, f), path.join(copy, f));
  return copy;
}

function walRecords(file: string): number {
  const b = fs.readFileSync(file);
  let n = 0;
  for (let o = WAL; o + WAL <= b.length; o += WAL) if (b.readUInt32LE(o) === 0x57314c47) n++;
  return n;
}

/** Runs `ops` mints of 1 to key(i % keys), in order: balances after the first `k` of them. */
function mintModel(k: number, keys: number): bigint[] {
  const out = new Array<bigint>(keys).fill(0n);
  for (let i = 0; i < k; i++) out[i % keys] += BigInt(i + 1);
  return out;
}

function balances(l: Ledger, keys: number): bigint[] {
  return Array.from({ length: keys }, (_, i) => l.balance(key(i)));
}

describe.each(engines)('%s engine: recovery', (engine) => {
  let ledger: Ledger | undefined;
  afterEach(async () => {
    await ledger?.close().catch(() => {});
    ledger = undefined;
  });

  it('a clean close reopens in the clean mode with every account', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine);
    for (let i = 0; i < 500; i++) ledger.mint(key(i % 50), BigInt(i + 1));
    await ledger.close();
    ledger = await Ledger.open(dir, { engine });
    expect(ledger.recovery).toMatchObject({ mode: 'clean', walRecordsReplayed: 0, walBytesDropped: 0, shardsRebuilt: 0 });
    expect(balances(ledger, 50)).toEqual(mintModel(500, 50));
  });

  it('a checkpoint empties the log and a crash after it replays only what followed', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine);
    for (let i = 0; i < 300; i++) ledger.mint(key(i % 30), BigInt(i + 1));
    await ledger.checkpoint();
    expect(ledger.stats().checkpointLsn).toBe(300n);
    for (let i = 300; i < 400; i++) ledger.mint(key(i % 30), BigInt(i + 1));
    const crashed = snapshot(dir);
    const l2 = await Ledger.open(crashed, { engine });
    expect(l2.recovery.mode).toBe('replay');
    expect(l2.recovery.walRecordsReplayed).toBe(100);
    expect(balances(l2, 30)).toEqual(mintModel(400, 30));
    await l2.close();
  });

  it('a WAL tail cut at every byte offset of its last records recovers an exact prefix', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 1, syncEvery: 100_000 });
    const N = 40;
    for (let i = 0; i < N; i++) ledger.mint(key(i % 7), BigInt(i + 1));
    const crashed = snapshot(dir);
    const wal = path.join(crashed, 'shard_000.wal');
    const full = fs.readFileSync(wal);
    const end = WAL * (N + 1);
    for (let cut = end - 3 * WAL; cut <= end; cut++) {
      const d = tmpDir('gl-cut');
      for (const f of fs.readdirSync(crashed)) fs.copyFileSync(path.join(crashed, f), path.join(d, f));
      fs.writeFileSync(path.join(d, 'shard_000.wal'), full.subarray(0, cut));
      const l = await Ledger.open(d, { engine });
      const kept = Math.floor(cut / WAL) - 1;
      expect(l.stats().lsn, `cut at ${cut}`).toBe(BigInt(kept));
      expect(balances(l, 7), `cut at ${cut}`).toEqual(mintModel(kept, 7));
      expect(l.recovery.walBytesDropped, `cut at ${cut}`).toBe(cut % WAL);
      await l.close();
      fs.rmSync(d, { recursive: true, force: true });
    }
  });

  it('zeros appended to the log are ignored and garbage is cut and reported', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 1 });
    for (let i = 0; i < 20; i++) ledger.mint(key(i % 5), BigInt(i + 1));
    const crashed = snapshot(dir);
    const wal = path.join(crashed, 'shard_000.wal');
    const records = fs.readFileSync(wal).subarray(0, WAL * 21);
    fs.writeFileSync(wal, Buffer.concat([records, Buffer.alloc(5000)]));
    let l = await Ledger.open(crashed, { engine });
    expect(l.recovery.walBytesDropped).toBe(0);
    expect(balances(l, 5)).toEqual(mintModel(20, 5));
    await l.close();

    const crashed2 = snapshot(dir);
    const garbage = Buffer.alloc(1000);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 7) & 0xff;
    fs.writeFileSync(path.join(crashed2, 'shard_000.wal'), Buffer.concat([records, garbage]));
    l = await Ledger.open(crashed2, { engine });
    expect(l.recovery.walBytesDropped).toBe(1000);
    expect(balances(l, 5)).toEqual(mintModel(20, 5));
    await l.close();
  });

  it('a damaged record followed by more than a sync window of valid records fails with CORRUPTION', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 1, syncEvery: 1 }); // window: 64 records
    for (let i = 0; i < 100; i++) ledger.mint(key(i % 5), BigInt(i + 1));
    const crashed = snapshot(dir);
    const wal = path.join(crashed, 'shard_000.wal');
    const b = fs.readFileSync(wal);
    b[WAL * 5 + 40] ^= 0x10; // inside record 5's account image; 95 valid records follow
    fs.writeFileSync(wal, b);
    await expect(Ledger.open(crashed, { engine })).rejects.toMatchObject({
      code: 'CORRUPTION',
      message: expect.stringMatching(/shard_000\.wal.*offset 1120/),
    });
    // A damaged record near the end (within one window) is a torn tail instead.
    const crashed2 = snapshot(dir);
    const b2 = fs.readFileSync(path.join(crashed2, 'shard_000.wal'));
    b2[WAL * 96 + 40] ^= 0x10; // record 96 of 100: 4 valid records follow
    fs.writeFileSync(path.join(crashed2, 'shard_000.wal'), b2);
    const l = await Ledger.open(crashed2, { engine });
    expect(l.stats().lsn).toBe(95n);
    expect(l.recovery.walBytesDropped).toBe(5 * WAL);
    expect(balances(l, 5)).toEqual(mintModel(95, 5));
    await l.close();
  });

  const FIELDS: [string, number][] = [
    ['magic', 0], ['timestamp', 5], ['type', 12], ['crc', 17], ['pubkey', 20], ['balance', 52], ['account crc', 144],
    ['lsn', 148], ['epoch', 156], ['shard', 164], ['slot', 168], ['legs', 172], ['leg', 176], ['amount', 180],
    ['window', 188], ['reserved', 200],
  ];
  it('a flipped bit in any field of a record near the end is a torn tail, cut and reported', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 1, syncEvery: 1 }); // window: 64 records
    for (let i = 0; i < 100; i++) ledger.mint(key(i % 5), BigInt(i + 1));
    const crashed = snapshot(dir);
    const good = fs.readFileSync(path.join(crashed, 'shard_000.wal'));
    for (const [field, at] of FIELDS) {
      const d = tmpDir('gl-flip');
      for (const f of fs.readdirSync(crashed)) fs.copyFileSync(path.join(crashed, f), path.join(d, f));
      const b = Buffer.from(good);
      b[WAL * 98 + at] ^= 0x08; // record 98 of 100
      fs.writeFileSync(path.join(d, 'shard_000.wal'), b);
      const l = await Ledger.open(d, { engine });
      expect(l.stats().lsn, field).toBe(97n);
      expect(l.recovery.walBytesDropped, field).toBe(3 * WAL);
      expect(balances(l, 5), field).toEqual(mintModel(97, 5));
      await l.close();
    }
  });

  it('a flipped bit in any field of a record deep in the log is CORRUPTION naming file and offset', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 1, syncEvery: 1 });
    for (let i = 0; i < 100; i++) ledger.mint(key(i % 5), BigInt(i + 1));
    const crashed = snapshot(dir);
    const good = fs.readFileSync(path.join(crashed, 'shard_000.wal'));
    for (const [field, at] of FIELDS) {
      const b = Buffer.from(good);
      b[WAL * 5 + at] ^= 0x08;
      fs.writeFileSync(path.join(crashed, 'shard_000.wal'), b);
      await expect(Ledger.open(crashed, { engine }), field).rejects.toMatchObject({
        code: 'CORRUPTION',
        message: expect.stringMatching(/shard_000\.wal: damaged record at offset 1120/),
      });
    }
  });

  it('repair is explicit: it keeps the valid prefix of a log damaged in the middle and says what it dropped', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 1, syncEvery: 1 });
    for (let i = 0; i < 100; i++) ledger.mint(key(i % 5), BigInt(i + 1));
    const crashed = snapshot(dir);
    const b = fs.readFileSync(path.join(crashed, 'shard_000.wal'));
    b[WAL * 5 + 60] ^= 0x01;
    fs.writeFileSync(path.join(crashed, 'shard_000.wal'), b);
    await expect(Ledger.open(crashed, { engine })).rejects.toMatchObject({ code: 'CORRUPTION' });
    const l = await Ledger.open(crashed, { engine, repair: true });
    expect(l.stats().lsn).toBe(4n);
    expect(l.recovery.walBytesDropped).toBe(96 * WAL);
    expect(l.recovery.reason).toMatch(/repair dropped 21504 log bytes/);
    expect(balances(l, 5)).toEqual(mintModel(4, 5));
    await l.close();
    const again = await Ledger.open(crashed, { engine });
    expect(again.recovery.mode).toBe('clean');
    await again.close();
  });

  it('an all-zero record never passes its CRC', () => {
    const zero = new Uint8Array(WAL);
    const state = crc32cUpdate(crc32cUpdate(0xffffffff, zero, 0, 16), zero, 20, WAL);
    expect(~state >>> 0).not.toBe(0);
  });

  it('a cross-shard transfer missing one leg is cut with everything after it', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 4 });
    // find two keys in different shards: their first log records land in different files
    const a = key(1000);
    ledger.mint(a, 100n);
    const walOf = (d: string) => fs.readdirSync(d).filter((f) => f.endsWith('.wal')).map((f) => path.join(d, f));
    const counts = () => walOf(dir).map(walRecords);
    const shardOfA = counts().findIndex((n) => n === 1);
    let b: Buffer | undefined;
    for (let i = 0; !b; i++) {
      const before = counts();
      ledger.mint(key(2000 + i), 1n);
      const after = counts();
      if (after.findIndex((n, j) => n !== before[j]) !== shardOfA) b = key(2000 + i);
    }
    const lsnBefore = ledger.stats().lsn;
    ledger.transfer(a, b, 30n);
    ledger.mint(a, 5n);
    const crashed = snapshot(dir);
    // remove the credit leg: the last record of b's shard file
    const bShard = counts().findIndex((n, j) => j !== shardOfA && n > 0 && walRecords(walOf(dir)[j]) > 0 &&
      fs.readFileSync(walOf(dir)[j]).readUInt32LE(WAL * n + 12) === 4);
    const bWal = walOf(crashed)[bShard];
    const n = walRecords(bWal);
    fs.truncateSync(bWal, WAL * n); // drop its last record (the credit)
    const l = await Ledger.open(crashed, { engine });
    expect(l.stats().lsn).toBe(lsnBefore);
    expect(l.balance(a)).toBe(100n);
    expect(l.balance(b)).toBe(1n);
    expect(l.recovery.walBytesDropped).toBeGreaterThanOrEqual(2 * WAL); // the debit leg and the later mint
    await l.close();
  });

  it('a stale clean-shutdown marker never skips replay', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine);
    ledger.mint(key(1), 10n);
    await ledger.close();
    const marker = fs.readFileSync(path.join(dir, '.clean_shutdown'));
    ledger = await Ledger.open(dir, { engine });
    ledger.mint(key(1), 5n);
    ledger.mint(key(2), 7n);
    const crashed = snapshot(dir);
    fs.writeFileSync(path.join(crashed, '.clean_shutdown'), marker);
    const l = await Ledger.open(crashed, { engine });
    expect(l.recovery.mode).toBe('replay');
    expect(l.recovery.reason).toMatch(/stale/);
    expect(l.balance(key(1))).toBe(15n);
    expect(l.balance(key(2))).toBe(7n);
    await l.close();
  });

  it('records from before a checkpoint are never replayed', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 1 });
    for (let i = 0; i < 10; i++) ledger.mint(key(i), 1n);
    const oldLog = fs.readFileSync(path.join(dir, 'shard_000.wal')).subarray(0, WAL * 11);
    await ledger.checkpoint();
    ledger.mint(key(0), 100n);
    const crashed = snapshot(dir);
    // an old epoch's records after the current ones, as if truncation had been lost
    const cur = fs.readFileSync(path.join(crashed, 'shard_000.wal')).subarray(0, WAL * 2);
    fs.writeFileSync(path.join(crashed, 'shard_000.wal'), Buffer.concat([cur, oldLog.subarray(WAL)]));
    const l = await Ledger.open(crashed, { engine });
    expect(l.recovery.walRecordsReplayed).toBe(1);
    expect(l.recovery.walBytesDropped).toBe(0);
    expect(l.balance(key(0))).toBe(101n);
    expect(l.balance(key(1))).toBe(1n);
    await l.close();
  });

  it('wal:false returns exactly to the last checkpoint after a crash', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { wal: false });
    for (let i = 0; i < 100; i++) ledger.mint(key(i % 10), BigInt(i + 1));
    await ledger.checkpoint();
    for (let i = 100; i < 150; i++) ledger.mint(key(i % 10), BigInt(i + 1));
    const crashed = snapshot(dir);
    const l = await Ledger.open(crashed, { engine, wal: false });
    expect(balances(l, 10)).toEqual(mintModel(100, 10));
    expect(l.stats().lsn).toBe(100n);
    await l.close();
  });

  it('the directory lock holds across processes and dies with its holder', async () => {
    const dir = tmpDir();
    const child = spawn(process.execPath, ['-e', `
      require(${JSON.stringify(DIST)}).Ledger.open(${JSON.stringify(dir)}, { engine: '${engine}', shards: 2, accountsPerShard: 100 })
        .then((l) => { globalThis.held = l; console.log('open'); setInterval(() => {}, 1000); });`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout!.on('data', (d) => String(d).includes('open') && resolve()));
    await expect(Ledger.open(dir, { engine })).rejects.toMatchObject({ code: 'LOCKED' });
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    ledger = await Ledger.open(dir, { engine });
    expect(ledger.recovery.mode).not.toBe('clean');
  });

  it('a second open in the same process is LOCKED until the first closes', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine);
    await expect(Ledger.open(dir, { engine })).rejects.toMatchObject({ code: 'LOCKED' });
    await ledger.close();
    ledger = await Ledger.open(dir, { engine });
    expect(ledger.recovery.mode).toBe('clean');
  });
});
