import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { DIST, engines, key, Ledger, open, tmpDir } from './helpers';

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
