import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { DIST, engines, key, Ledger, MANUAL_SYNC, open, snapshot, tmpDir, waitFor } from './helpers';

describe.each(engines)('%s engine: lifecycle', (engine) => {
  it('close while sync() and checkpoint() are pending settles them all and keeps the data', async () => {
    const dir = tmpDir();
    const l = await open(dir, engine);
    for (let i = 0; i < 1000; i++) l.mint(key(i % 10), 1n);
    const syncs = [l.sync(), l.sync()];
    const ckpt = l.checkpoint();
    const closed = l.close();
    await Promise.all([...syncs, ckpt, closed]);
    const again = await Ledger.open(dir, { engine });
    expect(again.recovery.mode).toBe('clean');
    expect(again.balance(key(3))).toBe(100n);
    await again.close();
  });

  it('a ledger dropped without close is collected, releases its lock and loses nothing acknowledged', () => {
    const dir = tmpDir();
    const script = `
      const { Ledger } = require(${JSON.stringify(DIST)});
      const crypto = require('node:crypto');
      const key = (i) => crypto.createHash('sha256').update('key-' + i).digest();
      (async () => {
        let l = await Ledger.open(${JSON.stringify(dir)}, { engine: '${engine}', shards: 2, accountsPerShard: 100 });
        for (let i = 0; i < 50; i++) l.mint(key(i), 2n);
        l = undefined;
        for (let i = 0; i < 20; i++) { global.gc(); await new Promise((r) => setTimeout(r, 10)); }
        const again = await Ledger.open(${JSON.stringify(dir)}, { engine: '${engine}' });
        let total = 0n;
        for (let i = 0; i < 50; i++) total += again.balance(key(i));
        await again.close();
        console.log('total ' + total + ' mode ' + again.recovery.mode);
      })().catch((e) => { console.log('error ' + e.code + ' ' + e.message); process.exit(1); });`;
    const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' });
    expect(r.stdout.trim()).toBe('total 100 mode replay');
    expect(r.status).toBe(0);
  });

  it('worker threads each open their own ledger; the same directory is LOCKED across threads', async () => {
    const dirA = tmpDir();
    const dirB = tmpDir();
    const main = await open(dirA, engine);
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { Ledger } = require(workerData.dist);
      (async () => {
        const out = {};
        try { await Ledger.open(workerData.a, { engine: workerData.engine }); out.a = 'opened'; } catch (e) { out.a = e.code; }
        const l = await Ledger.open(workerData.b, { engine: workerData.engine, shards: 2, accountsPerShard: 100 });
        const k = new Uint8Array(32).fill(7);
        for (let i = 0; i < 100; i++) l.mint(k, 3n);
        out.balance = String(l.balance(k));
        await l.close();
        parentPort.postMessage(out);
      })().catch((e) => parentPort.postMessage({ error: String(e) }));`;
    const w = new Worker(code, { eval: true, workerData: { dist: DIST, a: dirA, b: dirB, engine } });
    const msg = await new Promise<Record<string, string>>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await w.terminate();
    expect(msg).toEqual({ a: 'LOCKED', balance: '300' });
    main.mint(key(1), 1n);
    await main.close();
    const b = await Ledger.open(dirB, { engine });
    expect(b.balance(new Uint8Array(32).fill(7))).toBe(300n);
    await b.close();
  });

  it('a failed fsync is never retried: sync rejects with IO_ERROR, writes stop, acknowledged data survives', async () => {
    const dir = tmpDir();
    let l = await open(dir, engine);
    l.mint(key(0), 1n);
    await l.close();
    process.env.GL_FAIL_FSYNC_AT = '1'; // read at open: every fsync from the first after it fails
    try {
      l = await Ledger.open(dir, { engine, syncEvery: 1_000_000, syncIntervalMs: 1_000_000 });
      expect(l.recovery.mode).toBe('clean');
      for (let i = 0; i < 20; i++) l.mint(key(i), 5n);
      await expect(l.sync()).rejects.toMatchObject({ code: 'IO_ERROR' });
      expect(l.stats().readOnly).toBe(true);
      expect(() => l.mint(key(1), 1n)).toThrow(expect.objectContaining({ code: 'IO_ERROR' }));
      expect([...l.mintBatch(Buffer.alloc(40, 1))]).toEqual([9]);
      await expect(l.sync()).rejects.toMatchObject({ code: 'IO_ERROR' });
      await expect(l.close()).rejects.toMatchObject({ code: 'IO_ERROR' });
    } finally {
      delete process.env.GL_FAIL_FSYNC_AT;
    }
    const again = await Ledger.open(dir, { engine });
    expect(again.recovery.mode).toBe('replay');
    expect(again.balance(key(0))).toBe(6n);
    for (let i = 1; i < 20; i++) expect(again.balance(key(i))).toBe(5n);
    await again.close();
  });

  const root = process.getuid?.() === 0;
  it.skipIf(!root)('a full disk fails writes with IO_ERROR, loses nothing acknowledged, and reopens once space is freed', async () => {
    const mnt = tmpDir('gl-enospc');
    const mount = (opts: string) => {
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', mnt], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
    };
    mount('size=12m');
    try {
      const dir = path.join(mnt, 'ledger');
      const l = await Ledger.open(dir, { engine, shards: 1, accountsPerShard: 20_000 });
      let acked = 0;
      let error: unknown;
      for (let i = 0; i < 200_000; i++) {
        try {
          l.mint(key(i % 20_000), 1n);
          acked++;
        } catch (e) {
          error = e;
          break;
        }
      }
      expect(error).toMatchObject({ code: 'IO_ERROR' });
      expect(acked).toBeGreaterThan(1000);
      await l.close().catch(() => {});
      spawnSync('mount', ['-o', 'remount,size=256m', mnt]);
      const again = await Ledger.open(dir, { engine });
      let total = 0n;
      for (let i = 0; i < 20_000; i++) total += again.balance(key(i));
      expect(total).toBe(BigInt(acked));
      await again.close();
    } finally {
      spawnSync('umount', ['-l', mnt]);
      fs.rmSync(mnt, { recursive: true, force: true });
    }
  });
});

describe.each(engines)('%s engine: background checkpoints', (engine) => {
  const tick = () => new Promise((r) => setImmediate(r));

  it('checkpoint() while one runs joins it: both resolve after the same commit', async () => {
    const l = await open(tmpDir(), engine, MANUAL_SYNC);
    try {
      for (let i = 0; i < 3000; i++) l.mint(key(i % 1000), 1n);
      const before = l.stats().checkpoints;
      const first = l.checkpoint();
      expect(l.stats().checkpointInProgress).toBe(true);
      const second = l.checkpoint();
      const seen: number[] = [];
      await Promise.all([first.then(() => seen.push(l.stats().checkpoints)), second.then(() => seen.push(l.stats().checkpoints))]);
      expect(seen).toEqual([before + 1, before + 1]);
      expect(l.stats().checkpoints).toBe(before + 1);
      expect(l.stats().checkpointLsn).toBe(3000n);
      // nothing changed since: a checkpoint has nothing to do and resolves without another commit
      await l.checkpoint();
      expect(l.stats().checkpoints).toBe(before + 1);
    } finally {
      await l.close();
    }
  });

  for (const wal of [true, false]) {
    it(`walBytes is 0 after a clean reopen (wal ${wal ? 'on' : 'off'})${wal ? '' : ' and stays 0: nothing is logged'}`, async () => {
      const dir = tmpDir();
      let l = await open(dir, engine, { ...MANUAL_SYNC, wal });
      l.mint(key(1), 5n);
      await l.close();
      l = await Ledger.open(dir, { engine, wal });
      try {
        expect(l.recovery.mode).toBe('clean');
        expect(l.stats().walBytes).toBe(0);
        l.mint(key(2), 5n);
        expect(l.stats().walBytes).toBe(wal ? 224 : 0);
      } finally {
        await l.close();
      }
    });
  }

  it('checkpointInProgress is true right after checkpoint() on a ledger with dirty pages and false once it resolves', async () => {
    const l = await open(tmpDir(), engine, MANUAL_SYNC);
    try {
      expect(l.stats().checkpointInProgress).toBe(false);
      for (let i = 0; i < 500; i++) l.mint(key(i), 1n);
      const p = l.checkpoint();
      expect(l.stats().checkpointInProgress).toBe(true);
      await p;
      const s = l.stats();
      expect(s.checkpointInProgress).toBe(false);
      expect(s.lastCheckpointAt).toBeGreaterThan(Date.now() - 60_000);
      expect(s.lastCheckpointAt).toBeLessThanOrEqual(Date.now());
      expect(s.lastCheckpointMs).toBeGreaterThanOrEqual(0);
    } finally {
      await l.close();
    }
  });

  it('walBytes counts the log since the last committed checkpoint and drops when one commits', async () => {
    const l = await open(tmpDir(), engine, MANUAL_SYNC);
    try {
      expect(l.stats().walBytes).toBe(0);
      for (let i = 0; i < 1000; i++) l.mint(key(i % 100), 1n);
      l.transfer(key(1), key(2), 1n); // two records
      expect(l.stats().walBytes).toBe(1002 * 224);
      const p = l.checkpoint();
      for (let i = 0; i < 10; i++) l.mint(key(i), 1n); // after the hand-over: in the next generation
      expect(l.stats().walBytes).toBe(1012 * 224);
      await p;
      expect(l.stats().walBytes).toBe(10 * 224);
      expect(l.stats().checkpointLsn).toBe(1001n);
    } finally {
      await l.close();
    }
  });

  it('operations issued during a checkpoint are all there after close and reopen, and after a crash', async () => {
    const dir = tmpDir();
    const l = await open(dir, engine, { shards: 4, accountsPerShard: 5000, ...MANUAL_SYNC });
    const balance = new Map<number, bigint>();
    const mint = (k: number, a: bigint) => {
      l.mint(key(k), a);
      balance.set(k, (balance.get(k) ?? 0n) + a);
    };
    const transfer = (f: number, t: number, a: bigint) => {
      l.transfer(key(f), key(t), a);
      balance.set(f, balance.get(f)! - a);
      balance.set(t, (balance.get(t) ?? 0n) + a);
    };
    let crashed: string;
    try {
      for (let i = 0; i < 4000; i++) mint(i, 100n);
      let settled = false;
      const p = l.checkpoint().then(() => (settled = true));
      let during = 0;
      do {
        for (let j = 0; j < 100; j++, during++) {
          if (during % 3 === 0) transfer(during % 4000, (during * 7 + 1) % 4000, 1n);
          else mint((during * 13) % 5000, 2n);
        }
        await tick();
      } while (!settled && during < 200_000);
      await p;
      expect(during).toBeGreaterThan(0);
      for (let i = 0; i < 300; i++) mint(i, 5n); // after the commit
      crashed = snapshot(dir);
    } finally {
      await l.close();
    }
    const expectAll = (x: Ledger, what: string) => {
      for (const [k, b] of balance) expect(x.balance(key(k)), `${what}: key ${k}`).toBe(b);
    };
    const again = await Ledger.open(dir, { engine });
    expect(again.recovery.mode).toBe('clean');
    expectAll(again, 'close and reopen');
    await again.close();
    const recovered = await Ledger.open(crashed, { engine });
    expect(recovered.recovery.mode).toBe('replay');
    expectAll(recovered, 'crash');
    await recovered.close();
  });

  it('a small checkpointEveryBytes makes checkpoints happen by themselves', async () => {
    const dir = tmpDir();
    const l = await open(dir, engine, { ...MANUAL_SYNC, checkpointEveryBytes: 4096 });
    try {
      const before = l.stats().checkpoints;
      for (let i = 0; i < 400; i++) {
        l.mint(key(i % 50), 1n); // 224 bytes each: past 4096 every 19 records
        if (i % 20 === 0) await tick();
      }
      expect(await waitFor(() => l.stats().checkpoints > before, 5000), 'a checkpoint committed').toBe(true);
      expect(l.stats().checkpointLsn).toBeGreaterThan(0n);
    } finally {
      await l.close();
    }
    const again = await Ledger.open(dir, { engine });
    for (let i = 0; i < 50; i++) expect(again.balance(key(i))).toBe(8n);
    await again.close();
  });

  it('checkpointIntervalMs: 200 makes a checkpoint happen within about a second with no call', async () => {
    const l = await open(tmpDir(), engine, { syncEvery: 1_000_000, syncIntervalMs: 2 ** 31, checkpointIntervalMs: 200 });
    try {
      const before = l.stats().checkpoints;
      for (let i = 0; i < 10; i++) l.mint(key(i), 1n);
      const t0 = Date.now();
      expect(await waitFor(() => l.stats().checkpoints > before, 1500), 'a checkpoint committed').toBe(true);
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(l.stats().checkpointLsn).toBe(10n);
      expect(l.stats().walBytes).toBe(0);
    } finally {
      await l.close();
    }
  });

  it('checkpointIntervalMs: 0 turns the timed checkpoint off', async () => {
    const l = await open(tmpDir(), engine, { syncEvery: 1_000_000, syncIntervalMs: 2 ** 31, checkpointIntervalMs: 0 });
    try {
      const before = l.stats().checkpoints;
      for (let i = 0; i < 10; i++) l.mint(key(i), 1n);
      await new Promise((r) => setTimeout(r, 700));
      expect(l.stats().checkpoints).toBe(before);
      expect(l.stats().checkpointLsn).toBe(0n);
    } finally {
      await l.close();
    }
  });
});
