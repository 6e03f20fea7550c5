// The supply: total minted, kept exact in the MANIFEST (u128) at each checkpoint and by replay of the mints after
// it. model.test.ts checks it against a model at every step of random workloads and clean reopens; the durability
// harness (verifyRecovered) after every crash of the kill -9, power-cut and crash-point suites. Here: past 2^64,
// replay and rebuild from a live ledger's files, kill -9 and a wal:false journal for both engines, old manifests.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { crc32c, ManifestField, MANIFEST_FILE } from '../../dist/format.js';
import { dirDigest, engines, expectLedgerError, key, Ledger, MANUAL_SYNC, open, snapshot, tmpDir } from './helpers';
import { crashPointScenario, expectRulesHeld, killScenario, seeds, summary } from '../durability/helpers';

const U64_MAX = (1n << 64n) - 1n;

describe.each(engines)('%s engine: supply', (engine) => {
  it('counts past 2^64 across accounts, is committed with each checkpoint and read back on a clean reopen', async () => {
    const dir = tmpDir('gl-supply');
    let l = await open(dir, engine, MANUAL_SYNC);
    let minted = 0n;
    for (let i = 0; i < 5; i++) {
      l.mint(key(i), U64_MAX);
      minted += U64_MAX;
    }
    expectLedgerError(() => l.mint(key(0), 1n), 'OVERFLOW'); // refused: not minted
    l.transfer(key(0), key(9), 12345n); // moves, mints nothing
    expect(l.stats().supply).toBe(minted);
    await l.checkpoint();
    l.mint(key(7), 3n);
    minted += 3n;
    await l.close();
    const m = fs.readFileSync(path.join(dir, MANIFEST_FILE));
    expect(m.readBigUInt64LE(ManifestField.SUPPLY) | (m.readBigUInt64LE(ManifestField.SUPPLY + 8) << 64n)).toBe(minted);
    l = await open(dir, engine);
    try {
      expect(l.recovery.mode).toBe('clean');
      expect(l.stats().supply).toBe(minted);
      expect(minted > U64_MAX).toBe(true);
    } finally {
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('replay adds the mints after the checkpoint; an index rebuild keeps it', async () => {
    const dir = tmpDir('gl-supply');
    const l = await open(dir, engine, MANUAL_SYNC);
    let minted = 0n;
    const copies: string[] = [];
    try {
      for (let i = 0; i < 50; i++) {
        l.mint(key(i % 7), BigInt(i + 1));
        minted += BigInt(i + 1);
        if (i % 3 === 0) l.transfer(key(i % 7), key(100 + i), 1n);
      }
      await l.checkpoint();
      for (let i = 0; i < 30; i++) {
        l.mint(key(i % 11), 1000n + BigInt(i));
        minted += 1000n + BigInt(i);
      }
      // What kill -9 would leave: the files as the kernel holds them now.
      copies.push(snapshot(dir), snapshot(dir));
    } finally {
      await l.close();
    }
    try {
      const replayed = await Ledger.open(copies[0], { engine });
      expect(replayed.recovery.mode).toBe('replay');
      expect(replayed.stats().supply).toBe(minted);
      await replayed.close();
      fs.rmSync(path.join(copies[1], 'index_000.bin'));
      const rebuilt = await Ledger.open(copies[1], { engine });
      expect(rebuilt.recovery.mode).toBe('rebuild');
      expect(rebuilt.stats().supply).toBe(minted);
      await rebuilt.close();
    } finally {
      for (const d of [dir, ...copies]) fs.rmSync(d, { recursive: true, force: true });
    }
  });

  // The harness checks stats().supply against the model's total minted after each recovery.
  it('after kill -9 of a busy writer, supply is the total minted by the recovered operations', async () => {
    const [seed] = seeds(1, 71);
    const r = await killScenario({ seed, engine, mode: 'mixed', wal: true, ops: 1500, syncEvery: 64 });
    console.log(summary(r));
    expectRulesHeld(r);
  });

  it('with wal:false, a crash after the checkpoint journal is written takes the supply from the journal', async () => {
    const [seed] = seeds(1, 72);
    const r = await crashPointScenario({ seed, engine, point: 'checkpoint:after-data-sync', wal: false });
    console.log(summary(r));
    expectRulesHeld(r);
  });
});

describe('MANIFEST version', () => {
  it('a version-1 MANIFEST (before the supply) is refused with CORRUPTION and no byte changes', async () => {
    const dir = tmpDir('gl-supply');
    const l = await open(dir, engines[0]);
    l.mint(key(1), 5n);
    await l.close();
    // What the previous version wrote: version 1, zero where the supply is now.
    const file = path.join(dir, MANIFEST_FILE);
    const m = fs.readFileSync(file);
    m.writeUInt32LE(1, 4);
    m.fill(0, ManifestField.SUPPLY, ManifestField.SUPPLY + 16);
    m.writeUInt32LE(crc32c(m, 0, ManifestField.CRC), ManifestField.CRC);
    fs.writeFileSync(file, m);
    const before = dirDigest(dir);
    try {
      for (const engine of engines) {
        await expect(Ledger.open(dir, { engine })).rejects.toMatchObject({ code: 'CORRUPTION', message: expect.stringMatching(/version 1/) });
      }
      expect(dirDigest(dir)).toEqual(before);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
