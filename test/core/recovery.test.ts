import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import {
  activeWal, DIST, dirDigest, engines, flipBit, garbage, key, Ledger, logRecords, MANUAL_SYNC, open, overwrite,
  snapshot, tmpDir,
} from './helpers';
import { crc32cUpdate, walFile } from '../../dist/format.js';

const WAL = 224;

/** Runs `ops` mints of 1 to key(i % keys), in order: balances after the first `k` of them. */
function mintModel(k: number, keys: number): bigint[] {
  const out = new Array<bigint>(keys).fill(0n);
  for (let i = 0; i < k; i++) out[i % keys] += BigInt(i + 1);
  return out;
}

function balances(l: Ledger, keys: number): bigint[] {
  return Array.from({ length: keys }, (_, i) => l.balance(key(i)));
}

/** "file ... offset N" in an error message, the way CORRUPTION names where the damage is. */
function names(file: string, offset: number): RegExp {
  return new RegExp(`${file.replace(/\./g, '\\.')}\\D{0,40}?offset ${offset}\\b`);
}

describe.each(engines)('%s engine: recovery', (engine) => {
  let ledger: Ledger | undefined;
  afterEach(async () => {
    await ledger?.close().catch(() => {});
    ledger = undefined;
  });

  /**
   * A crashed copy of a one-shard ledger: `synced` mints (mint i: i + 1 to key(i % 5)), sync(), then `after` more
   * mints, each of which carries the durable point `synced`. Record of LSN k at byte 224 k of the active log.
   */
  async function syncedLog(synced: number, after: number): Promise<{ dir: string; wal: string; file: string }> {
    const live = tmpDir();
    const l = await open(live, engine, { shards: 1, ...MANUAL_SYNC });
    try {
      for (let i = 0; i < synced; i++) l.mint(key(i % 5), BigInt(i + 1));
      await l.sync();
      for (let i = synced; i < synced + after; i++) l.mint(key(i % 5), BigInt(i + 1));
      const dir = snapshot(live);
      const recs = logRecords(dir);
      expect(recs.map((r) => r.lsn)).toEqual(Array.from({ length: synced + after }, (_, i) => BigInt(i + 1)));
      expect(recs.slice(synced).every((r) => r.durableLsn === BigInt(synced)), 'records after sync() carry its LSN').toBe(true);
      const wal = activeWal(dir);
      return { dir, wal, file: path.basename(wal) };
    } finally {
      await l.close();
    }
  }

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

  it('the active log is found through the manifest: a new ledger\'s epoch may be odd or even', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 2, ...MANUAL_SYNC });
    const wals = fs.readdirSync(dir).filter((f) => f.endsWith('.wal')).sort();
    expect(wals).toEqual(['shard_000.0.wal', 'shard_000.1.wal', 'shard_001.0.wal', 'shard_001.1.wal']);
    for (let i = 0; i < 10; i++) ledger.mint(key(i), 1n);
    const recs = logRecords(dir);
    expect(recs.length).toBe(10);
    const active = new Set([0, 1].map((s) => walFile(s, recs[0].epoch)));
    expect(recs.every((r) => active.has(r.file)), 'every record is in the file of the manifest epoch').toBe(true);
    expect(path.basename(activeWal(dir, recs[0].shard))).toBe(recs[0].file);
  });

  it('a damaged record that a later record proves durable is CORRUPTION naming file and offset, and changes no byte', async () => {
    const { dir, wal, file } = await syncedLog(60, 40);
    for (const k of [1, 30, 59, 60]) {
      const d = snapshot(dir);
      flipBit(path.join(d, file), WAL * k + 40); // the balance field of LSN k's account image
      const before = dirDigest(d);
      await expect(Ledger.open(d, { engine }), `LSN ${k}`).rejects.toMatchObject({
        code: 'CORRUPTION', message: expect.stringMatching(names(file, WAL * k)),
      });
      expect(dirDigest(d), `LSN ${k}: no byte changed`).toEqual(before);
      // and again: a failed open leaves nothing that makes the next one different
      await expect(Ledger.open(d, { engine })).rejects.toMatchObject({ code: 'CORRUPTION' });
      expect(dirDigest(d)).toEqual(before);
    }
    expect(fs.existsSync(wal)).toBe(true);
  });

  it('damage after the last proven-durable point is a torn tail, cut and reported', async () => {
    const { dir, file } = await syncedLog(60, 40);
    for (const k of [61, 62, 80, 100]) {
      const d = snapshot(dir);
      flipBit(path.join(d, file), WAL * k + 40);
      const l = await Ledger.open(d, { engine });
      expect(l.recovery.mode, `LSN ${k}`).toBe('replay');
      expect(l.stats().lsn, `LSN ${k}`).toBe(BigInt(k - 1));
      expect(l.recovery.walRecordsReplayed, `LSN ${k}`).toBe(k - 1);
      expect(l.recovery.walBytesDropped, `LSN ${k}`).toBe((100 - k + 1) * WAL);
      expect(balances(l, 5), `LSN ${k}`).toEqual(mintModel(k - 1, 5));
      await l.close();
    }
  });

  it('a damaged synced record is a torn tail when the records that proved it durable are gone with it', async () => {
    // D is what the surviving records carry: cut inside record 30, nothing after it says 1..60 were synced.
    const { dir, file } = await syncedLog(60, 40);
    fs.truncateSync(path.join(dir, file), WAL * 30 + 100);
    const l = await Ledger.open(dir, { engine });
    expect(l.stats().lsn).toBe(29n);
    expect(l.recovery.walBytesDropped).toBe(100);
    expect(balances(l, 5)).toEqual(mintModel(29, 5));
    await l.close();
  });

  // One bit in each field of a record. Every field is under the record's CRC, durable_lsn and the reserved bytes too.
  const FIELDS: [string, number][] = [
    ['magic', 0], ['timestamp', 5], ['type', 12], ['crc', 17], ['pubkey', 20], ['balance', 52], ['account crc', 144],
    ['lsn', 148], ['epoch', 156], ['shard', 164], ['slot', 168], ['legs', 172], ['leg', 176], ['amount', 180],
    ['durable_lsn', 188], ['durable_lsn high byte', 195], ['reserved', 196], ['reserved end', 223],
  ];
  it('a flipped bit in any field of a synced record is CORRUPTION naming file and offset', async () => {
    const { dir, file } = await syncedLog(60, 40);
    for (const [field, at] of FIELDS) {
      const d = snapshot(dir);
      flipBit(path.join(d, file), WAL * 30 + at);
      const before = dirDigest(d);
      await expect(Ledger.open(d, { engine }), field).rejects.toMatchObject({
        code: 'CORRUPTION', message: expect.stringMatching(names(file, WAL * 30)),
      });
      expect(dirDigest(d), field).toEqual(before);
    }
  });

  it('a flipped bit in any field of a record after the last proven-durable point is a torn tail', async () => {
    const { dir, file } = await syncedLog(60, 40);
    for (const [field, at] of FIELDS) {
      const d = snapshot(dir);
      flipBit(path.join(d, file), WAL * 98 + at); // record 98 of 100
      const l = await Ledger.open(d, { engine });
      expect(l.stats().lsn, field).toBe(97n);
      expect(l.recovery.walBytesDropped, field).toBe(3 * WAL);
      expect(balances(l, 5), field).toEqual(mintModel(97, 5));
      await l.close();
    }
  });

  it('repair: true opens with the valid prefix and reports what it dropped', async () => {
    const { dir, file } = await syncedLog(60, 40);
    flipBit(path.join(dir, file), WAL * 30 + 60, 0x01);
    await expect(Ledger.open(dir, { engine })).rejects.toMatchObject({ code: 'CORRUPTION' });
    const l = await Ledger.open(dir, { engine, repair: true });
    expect(l.stats().lsn).toBe(29n);
    expect(l.recovery.walRecordsReplayed).toBe(29);
    expect(l.recovery.walBytesDropped).toBe(71 * WAL);
    expect(l.recovery.reason).toMatch(new RegExp(`repair dropped ${71 * WAL} log bytes`));
    expect(balances(l, 5)).toEqual(mintModel(29, 5));
    l.mint(key(0), 1000n); // and it goes on from there
    await l.close();
    const again = await Ledger.open(dir, { engine });
    expect(again.recovery.mode).toBe('clean');
    expect(again.stats().lsn).toBe(30n);
    expect(balances(again, 5)).toEqual(mintModel(29, 5).map((b, i) => (i === 0 ? b + 1000n : b)));
    await again.close();
  });

  it('a WAL tail cut at every byte offset of its last records recovers an exact prefix', async () => {
    const { dir, file } = await syncedLog(20, 20);
    const full = fs.readFileSync(path.join(dir, file));
    const end = WAL * 41;
    for (let cut = end - 2 * WAL; cut <= end; cut++) {
      const d = snapshot(dir);
      fs.writeFileSync(path.join(d, file), full.subarray(0, cut));
      const l = await Ledger.open(d, { engine });
      const kept = Math.floor(cut / WAL) - 1;
      expect(l.stats().lsn, `cut at ${cut}`).toBe(BigInt(kept));
      expect(balances(l, 5), `cut at ${cut}`).toEqual(mintModel(kept, 5));
      expect(l.recovery.walBytesDropped, `cut at ${cut}`).toBe(cut % WAL);
      await l.close();
      fs.rmSync(d, { recursive: true, force: true });
    }
  });

  it('zeros appended are ignored, garbage is cut and reported', async () => {
    const { dir, file } = await syncedLog(20, 5);
    const records = fs.readFileSync(path.join(dir, file)).subarray(0, WAL * 26);
    const d1 = snapshot(dir);
    fs.writeFileSync(path.join(d1, file), Buffer.concat([records, Buffer.alloc(5000)]));
    let l = await Ledger.open(d1, { engine });
    expect(l.recovery.walBytesDropped).toBe(0);
    expect(balances(l, 5)).toEqual(mintModel(25, 5));
    await l.close();

    const d2 = snapshot(dir);
    fs.writeFileSync(path.join(d2, file), Buffer.concat([records, garbage(1000)]));
    l = await Ledger.open(d2, { engine });
    expect(l.recovery.walBytesDropped).toBe(1000);
    expect(balances(l, 5)).toEqual(mintModel(25, 5));
    await l.close();

    // garbage over the space the log had extended ahead of itself (the file keeps its length): whole records
    const d3 = snapshot(dir);
    overwrite(path.join(d3, file), WAL * 26, garbage(3 * WAL));
    l = await Ledger.open(d3, { engine });
    expect(l.recovery.walBytesDropped).toBe(3 * WAL);
    expect(balances(l, 5)).toEqual(mintModel(25, 5));
    await l.close();
  });

  it('damage a recovery cut is reported once: the next open is clean and a later crash drops nothing', async () => {
    // The log files are reused by later epochs (docs/durability.md: old records past the current ones are
    // "stale, never replayed, never counted as damage"). What the recovery cut must not come back either.
    const { dir, file } = await syncedLog(0, 10); // nothing synced: damage anywhere is a torn tail
    for (const k of [1, 5]) {
      const d = snapshot(dir);
      flipBit(path.join(d, file), WAL * k + 40);
      let l = await Ledger.open(d, { engine });
      expect(l.stats().lsn, `LSN ${k}`).toBe(BigInt(k - 1));
      expect(l.recovery.walBytesDropped, `LSN ${k}`).toBe((10 - k + 1) * WAL);
      await l.close();
      l = await Ledger.open(d, { engine });
      expect(l.recovery, `damage at LSN ${k}: the open after the recovery`).toMatchObject({ mode: 'clean', walBytesDropped: 0 });
      l.mint(key(0), 1n);
      l.mint(key(1), 1n);
      const crashed = snapshot(d);
      await l.close();
      const c = await Ledger.open(crashed, { engine });
      expect(c.recovery.walRecordsReplayed, `LSN ${k}`).toBe(2);
      expect(c.recovery.walBytesDropped, `damage at LSN ${k}: a crash after the recovery drops nothing`).toBe(0);
      await c.close();
    }
  });

  it('an all-zero record never passes its CRC', () => {
    const zero = new Uint8Array(WAL);
    const state = crc32cUpdate(crc32cUpdate(0xffffffff, zero, 0, 16), zero, 20, WAL);
    expect(~state >>> 0).not.toBe(0);
  });

  it('a cross-shard transfer missing one leg after the durable point is cut with everything after it', async () => {
    const dir = tmpDir();
    ledger = await open(dir, engine, { shards: 4, ...MANUAL_SYNC });
    const a = key(1000);
    ledger.mint(a, 100n);
    const shardOf = () => logRecords(dir).find((r) => r.lsn === ledger!.stats().lsn)!.shard; // of the last mint
    const shardOfA = shardOf();
    let b: Buffer | undefined;
    for (let i = 0; !b; i++) {
      ledger.mint(key(2000 + i), 1n);
      if (shardOf() !== shardOfA) b = key(2000 + i);
    }
    await ledger.sync();
    const lsnBefore = ledger.stats().lsn;
    ledger.transfer(a, b, 30n);
    ledger.mint(a, 5n);
    const crashed = snapshot(dir);
    const credit = logRecords(crashed).find((r) => r.lsn === lsnBefore + 1n && r.leg === 1)!;
    expect(credit.shard).not.toBe(shardOfA);
    fs.truncateSync(path.join(crashed, credit.file), credit.offset); // the credit leg is gone
    const l = await Ledger.open(crashed, { engine });
    expect(l.stats().lsn).toBe(lsnBefore);
    expect(l.balance(a)).toBe(100n);
    expect(l.balance(b)).toBe(1n);
    expect(l.recovery.walBytesDropped).toBe(2 * WAL); // the debit leg and the mint after it
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
    ledger = await open(dir, engine, { shards: 1, ...MANUAL_SYNC });
    for (let i = 0; i < 10; i++) ledger.mint(key(i), 1n);
    const oldFile = activeWal(dir);
    const oldRecords = fs.readFileSync(oldFile).subarray(WAL, WAL * 11);
    await ledger.checkpoint();
    expect(ledger.stats().checkpointLsn).toBe(10n);
    ledger.mint(key(0), 100n);
    const crashed = snapshot(dir);
    const cur = activeWal(crashed);
    expect(path.basename(cur)).not.toBe(path.basename(oldFile));
    // An older epoch's records after the current one in the active file, and after the header of the other
    // generation's file (the one the next checkpoint hands over to): as if they had been left there.
    overwrite(cur, WAL * 2, oldRecords);
    overwrite(path.join(crashed, path.basename(oldFile)), WAL, oldRecords);
    const l = await Ledger.open(crashed, { engine });
    expect(l.recovery.walRecordsReplayed).toBe(1);
    expect(l.recovery.walBytesDropped).toBe(0);
    expect(l.balance(key(0))).toBe(101n);
    expect(l.balance(key(1))).toBe(1n);
    expect(l.stats().lsn).toBe(11n);
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
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d) => String(d).includes('open') && resolve());
      child.on('exit', (code) => reject(new Error(`the child could not open the ledger (exit ${code})`)));
    });
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
