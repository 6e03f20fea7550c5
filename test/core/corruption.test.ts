import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { engines, key, Ledger, open, tmpDir } from './helpers';

const N = 400;

async function closedLedger(engine: 'native' | 'js'): Promise<string> {
  const dir = tmpDir();
  const l = await open(dir, engine, { shards: 2, accountsPerShard: 1000 });
  for (let i = 0; i < N; i++) l.mint(key(i), BigInt(i + 1));
  await l.close();
  return dir;
}

function expectAll(l: Ledger): void {
  for (let i = 0; i < N; i++) expect(l.balance(key(i))).toBe(BigInt(i + 1));
  expect(l.stats().accounts).toBe(N);
}

function indexEntriesOffset(file: string): number {
  const b = fs.readFileSync(file);
  const pages = b.readUInt32LE(20);
  return 4096 + Math.ceil((pages * 4) / 4096) * 4096;
}

describe.each(engines)('%s engine: damaged files', (engine) => {
  let ledger: Ledger | undefined;
  afterEach(async () => {
    await ledger?.close().catch(() => {});
    ledger = undefined;
  });

  const damages: [string, (f: string) => void][] = [
    ['deleted', (f) => fs.rmSync(f)],
    ['truncated', (f) => fs.truncateSync(f, 100)],
    ['header bit flipped', (f) => {
      const b = fs.readFileSync(f);
      b[16] ^= 1;
      fs.writeFileSync(f, b);
    }],
  ];
  for (const [what, damage] of damages) {
    it(`an index that is ${what} is rebuilt at open and the state is exact`, async () => {
      const dir = await closedLedger(engine);
      damage(path.join(dir, 'index_001.bin'));
      ledger = await Ledger.open(dir, { engine });
      expect(ledger.recovery.mode).toBe('rebuild');
      expect(ledger.recovery.shardsRebuilt).toBe(1);
      expectAll(ledger);
    });
  }

  it('an older valid copy of an index is stale and rebuilt', async () => {
    const dir = await closedLedger(engine);
    const old = fs.readFileSync(path.join(dir, 'index_000.bin'));
    ledger = await Ledger.open(dir, { engine });
    for (let i = N; i < N + 50; i++) ledger.mint(key(i), 1n);
    await ledger.close();
    fs.writeFileSync(path.join(dir, 'index_000.bin'), old);
    ledger = await Ledger.open(dir, { engine });
    expect(ledger.recovery.mode).toBe('rebuild');
    for (let i = N; i < N + 50; i++) expect(ledger.balance(key(i))).toBe(1n);
    expectAllButCount(ledger);
  });

  for (const [what, damage] of [
    ['zeroed', (b: Buffer, at: number) => b.fill(0, at, at + 4096)],
    ['bit-flipped', (b: Buffer, at: number) => { b[at + 100] ^= 0x04; }],
  ] as const) {
    it(`an index page that is ${what} is caught by its checksum on first use and rebuilt`, async () => {
      const dir = await closedLedger(engine);
      const file = path.join(dir, 'index_000.bin');
      const b = fs.readFileSync(file);
      const base = indexEntriesOffset(file);
      // damage every entry page that holds something, so any lookup meets one
      for (let at = base; at < b.length; at += 4096) {
        if (b.subarray(at, at + 4096).some((x) => x !== 0)) damage(b, at);
      }
      fs.writeFileSync(file, b);
      ledger = await Ledger.open(dir, { engine });
      expectAll(ledger);
      expect(ledger.stats().shards[0].indexRebuilds).toBeGreaterThanOrEqual(1);
      await ledger.close();
      ledger = await Ledger.open(dir, { engine });
      expect(ledger.recovery.mode).toBe('clean');
      expectAll(ledger);
      expect(ledger.stats().shards[0].indexRebuilds).toBe(0);
    });
  }

  it('bit rot in an account record is CORRUPTION naming shard and slot; other accounts still read', async () => {
    const dir = await closedLedger(engine);
    // find the record of key(7)
    let shard = -1;
    let slot = -1;
    for (const s of [0, 1]) {
      const b = fs.readFileSync(path.join(dir, `shard_00${s}.bin`));
      for (let o = 0; o + 128 <= b.length; o += 128) {
        if (b.subarray(o, o + 32).equals(key(7))) [shard, slot] = [s, o / 128];
      }
    }
    const file = path.join(dir, `shard_00${shard}.bin`);
    const b = fs.readFileSync(file);
    b[slot * 128 + 33] ^= 0x01; // one bit of the balance
    fs.writeFileSync(file, b);
    ledger = await Ledger.open(dir, { engine });
    const msg = new RegExp(`shard_00${shard}\\.bin slot ${slot}\\b`);
    expect(() => ledger!.balance(key(7))).toThrow(expect.objectContaining({ code: 'CORRUPTION', message: expect.stringMatching(msg) }));
    expect(() => ledger!.get(key(7))).toThrow(expect.objectContaining({ code: 'CORRUPTION' }));
    expect(() => ledger!.mint(key(7), 1n)).toThrow(expect.objectContaining({ code: 'CORRUPTION' }));
    expect(() => ledger!.transfer(key(7), key(8), 1n)).toThrow(expect.objectContaining({ code: 'CORRUPTION' }));
    expect(() => ledger!.transfer(key(8), key(7), 1n)).toThrow(expect.objectContaining({ code: 'CORRUPTION' }));
    expect(() => ledger!.getBatch(Buffer.concat([key(1), key(7)]))).toThrow(expect.objectContaining({ code: 'CORRUPTION' }));
    for (let i = 0; i < N; i++) if (i !== 7) expect(ledger.balance(key(i))).toBe(BigInt(i + 1));
  });
});

function expectAllButCount(l: Ledger): void {
  for (let i = 0; i < N; i++) expect(l.balance(key(i))).toBe(BigInt(i + 1));
}
