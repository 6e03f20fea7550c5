// Online backup: a copy of a running ledger at exactly its `lsn`, which opens clean; a failure leaves nothing.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { dirDigest, engines, expectLedgerError, key, Ledger, open, tmpDir } from './helpers';

const root = process.getuid?.() === 0;
if (!root) console.warn('backup.test.ts: the full-disk test is SKIPPED: mounting a tmpfs needs root');

const ACCOUNTS = 200;
type Op = { k: 'mint'; to: number; amount: bigint } | { k: 'transfer'; from: number; to: number; amount: bigint };

/** Balances and total minted after the first `n` operations of `ops` (each one succeeded: LSN i + 1). */
function modelAfter(ops: Op[], n: number): { bal: bigint[]; minted: bigint } {
  const bal = new Array<bigint>(ACCOUNTS).fill(0n);
  let minted = 0n;
  for (const op of ops.slice(0, n)) {
    if (op.k === 'mint') {
      bal[op.to] += op.amount;
      minted += op.amount;
    } else {
      bal[op.from] -= op.amount;
      bal[op.to] += op.amount;
    }
  }
  return { bal, minted };
}

describe.each(engines)('%s engine: backup', (engine) => {
  it('a backup taken under load holds exactly the state at its lsn, opens clean, and operations go on meanwhile', async () => {
    const dir = tmpDir('gl-backup');
    const dest = path.join(tmpDir('gl-backup-dest'), 'copy');
    const l = await open(dir, engine, { checkpointEveryBytes: 64 * 1024 });
    // The operations that succeeded, in order: on a new ledger the i-th has LSN i + 1.
    const done: Op[] = [];
    const bal = new Array<bigint>(ACCOUNTS).fill(0n);
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const step = (): void => {
      const to = rnd(ACCOUNTS);
      if (rnd(4) === 0) {
        const amount = BigInt(1 + rnd(1000));
        l.mint(key(to), amount);
        bal[to] += amount;
        done.push({ k: 'mint', to, amount });
      } else {
        const from = rnd(ACCOUNTS);
        const amount = BigInt(1 + rnd(50));
        if (from === to || bal[from] < amount) return;
        l.transfer(key(from), key(to), amount);
        bal[from] -= amount;
        bal[to] += amount;
        done.push({ k: 'transfer', from, to, amount });
      }
    };
    let running = true;
    let maxGapMs = 0;
    let opsDuringBackup = 0;
    let backingUp = false;
    const load = (async () => {
      let last = performance.now();
      while (running) {
        for (let i = 0; i < 50; i++) step();
        if (backingUp) opsDuringBackup += 50;
        await new Promise((r) => setImmediate(r));
        const now = performance.now();
        if (backingUp) maxGapMs = Math.max(maxGapMs, now - last);
        last = now;
      }
    })();
    try {
      while (done.length < 5000) await new Promise((r) => setTimeout(r, 5));
      const progress: { bytes: number; total: number }[] = [];
      const before = Date.now();
      backingUp = true;
      const b = await l.backup(dest, { onProgress: (p) => progress.push(p) });
      backingUp = false;
      while (done.length < Number(b.lsn) + 2000) await new Promise((r) => setTimeout(r, 5));
      running = false;
      await load;
      console.log(`${engine}: backup at lsn ${b.lsn} of ${b.bytes} bytes in ${b.ms.toFixed(1)} ms; ` +
        `${opsDuringBackup} operations meanwhile, longest event-loop gap ${maxGapMs.toFixed(1)} ms`);

      expect(opsDuringBackup).toBeGreaterThan(0);
      expect(b.lsn).toBeGreaterThanOrEqual(5000n);
      expect(b.bytes).toBeGreaterThan(0);
      expect(progress.at(-1)).toEqual({ bytes: b.bytes, total: b.bytes });
      expect(l.lastBackupAt).toBeGreaterThanOrEqual(before);
      // The source went on: it holds every operation.
      expect(l.stats().lsn).toBe(BigInt(done.length));
      for (let i = 0; i < ACCOUNTS; i++) expect(l.balance(key(i))).toBe(bal[i]);

      const want = modelAfter(done, Number(b.lsn));
      const copy = await Ledger.open(dest, { engine });
      try {
        expect(copy.recovery.mode).toBe('clean');
        const s = copy.stats();
        expect(s.lsn).toBe(b.lsn);
        expect(s.supply).toBe(want.minted);
        for (let i = 0; i < ACCOUNTS; i++) expect(copy.balance(key(i))).toBe(want.bal[i]);
        // A restored copy is a ledger like any other: it takes operations.
        copy.mint(key(0), 1n);
        await copy.sync();
      } finally {
        await copy.close();
      }
    } finally {
      running = false;
      await load;
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(path.dirname(dest), { recursive: true, force: true });
    }
  });

  it('bad destinations and options are INVALID_OPTIONS and write nothing', async () => {
    const dir = tmpDir('gl-backup');
    const l = await open(dir, engine);
    const other = tmpDir('gl-backup-dest');
    try {
      l.mint(key(1), 1n);
      fs.writeFileSync(path.join(other, 'keep'), 'x');
      const before = dirDigest(dir);
      for (const dest of [other, dir, path.join(dir, 'sub'), path.dirname(dir) === dir ? dir : path.join(dir, '..', path.basename(dir)),
        path.join(other, 'keep'), '']) {
        await expect(l.backup(dest), dest).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      }
      await expect(l.backup(42 as unknown as string)).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      await expect(l.backup(path.join(other, 'x'), { onProgress: 1 as unknown as () => void })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
      expect(fs.readdirSync(other)).toEqual(['keep']);
      expect(fs.existsSync(path.join(dir, 'sub'))).toBe(false);
      expect(dirDigest(dir)).toEqual(before);
      await l.close();
      await expect(l.backup(path.join(other, 'y'))).rejects.toMatchObject({ code: 'CLOSED' });
    } finally {
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(other, { recursive: true, force: true });
    }
  });

  it.skipIf(!root)('a backup onto a full disk fails with IO_ERROR, removes its partial copy, and the ledger goes on', async () => {
    const dir = tmpDir('gl-backup');
    const mnt = tmpDir('gl-backup-full');
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
    // 4 shards of 20,000 accounts: 2.5 MB each, more than the 1 MiB there is.
    const l = await open(dir, engine, { accountsPerShard: 20_000 });
    try {
      for (let i = 0; i < 100; i++) l.mint(key(i), 1n);
      const dest = path.join(mnt, 'copy');
      await expect(l.backup(dest)).rejects.toMatchObject({ code: 'IO_ERROR' });
      expect(fs.existsSync(dest)).toBe(false);
      // In a directory that was there (empty): the files it wrote are removed, the directory stays.
      fs.mkdirSync(path.join(mnt, 'empty'));
      await expect(l.backup(path.join(mnt, 'empty'))).rejects.toMatchObject({ code: 'IO_ERROR' });
      expect(fs.readdirSync(path.join(mnt, 'empty'))).toEqual([]);
      expect(l.lastBackupAt).toBe(0);
      // Checkpoints were held back only during the backup.
      l.mint(key(1), 1n);
      await l.checkpoint();
      expect(l.stats().checkpointLsn).toBe(101n);
      expect(l.stats().readOnly).toBe(false);
    } finally {
      await l.close();
      spawnSync('umount', ['-l', mnt]);
      fs.rmSync(mnt, { recursive: true, force: true });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
