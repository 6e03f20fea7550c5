// The record tap replication reads (Ledger.setTap / drainTap): in both engines, exactly the MINT, DEBIT and CREDIT
// records the log gets, byte for byte, in LSN order, whole transactions per drain; nothing while off.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Ledger, engines, expectLedgerError, key, mintOps, tmpDir, transferOps } from '../core/helpers';
import { Wal, WAL_RECORD_SIZE, readManifest, walFile } from '../../dist/format.js';

/** Every record after the header of the manifest's epoch's log files, keyed by `lsn:leg`. */
function logged(dir: string): Map<string, Buffer> {
  const epoch = readManifest(dir)!.epoch;
  const out = new Map<string, Buffer>();
  for (let shard = 0; ; shard++) {
    const file = path.join(dir, walFile(shard, epoch));
    if (!fs.existsSync(file)) break;
    const b = fs.readFileSync(file);
    for (let o = WAL_RECORD_SIZE; o + WAL_RECORD_SIZE <= b.length; o += WAL_RECORD_SIZE) {
      if (b.readBigUInt64LE(o + Wal.EPOCH) !== epoch || b.readUInt32LE(o + Wal.TYPE) === 0) continue;
      out.set(`${b.readBigUInt64LE(o + Wal.LSN)}:${b.readUInt32LE(o + Wal.LEG)}`, b.subarray(o, o + WAL_RECORD_SIZE));
    }
  }
  return out;
}

describe.each(engines)('record tap (%s engine)', (engine) => {
  it('hands over exactly the records the log got, byte for byte, in LSN order; nothing while off', async () => {
    const dir = tmpDir('tap');
    const l = await Ledger.open(dir, { shards: 4, accountsPerShard: 1000, engine, checkpointIntervalMs: 0 });
    l.mint(key(0), 100n); // before the tap: never handed over
    expect(l.drainTap().length).toBe(0);
    l.setTap(true);
    l.mint(key(1), 50n);
    l.transfer(key(0), key(2), 30n);
    expect(() => l.transfer(key(9), key(2), 1n)).toThrow(); // refused: writes nothing, taps nothing
    l.mintBatch(mintOps([[key(3), 5n], [key(4), 6n]]));
    l.transferBatch(transferOps([[key(1), key(3), 10n], [key(8), key(3), 1n], [key(2), key(0), 5n]]));
    const first = Buffer.from(l.drainTap());
    l.transfer(key(3), key(4), 1n);
    const second = Buffer.from(l.drainTap());
    expect(l.drainTap().length).toBe(0);
    l.setTap(false);
    l.mint(key(5), 1n);
    expect(l.drainTap().length).toBe(0);
    // lsn 2 mint, 3 transfer, 4-5 mints, 6-7 transfers (the one from key 8 refused), 8 transfer
    const tapped = Buffer.concat([first, second]);
    expect(first.length).toBe(9 * WAL_RECORD_SIZE);
    expect(second.length).toBe(2 * WAL_RECORD_SIZE);
    const log = logged(dir);
    const seen: string[] = [];
    for (let o = 0; o < tapped.length; o += WAL_RECORD_SIZE) {
      const id = `${tapped.readBigUInt64LE(o + Wal.LSN)}:${tapped.readUInt32LE(o + Wal.LEG)}`;
      seen.push(id);
      expect(log.get(id), `record ${id} in the log`).toBeDefined();
      expect(tapped.subarray(o, o + WAL_RECORD_SIZE).equals(log.get(id)!)).toBe(true);
    }
    expect(seen).toEqual(['2:0', '3:0', '3:1', '4:0', '5:0', '6:0', '6:1', '7:0', '7:1', '8:0', '8:1']);
    await l.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the tap needs the log: wal: false refuses it (INVALID_OPTIONS)', async () => {
    const dir = tmpDir('tap-nowal');
    const l = await Ledger.open(dir, { shards: 2, accountsPerShard: 1000, engine, wal: false });
    expectLedgerError(() => l.setTap(true), 'INVALID_OPTIONS');
    await l.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
