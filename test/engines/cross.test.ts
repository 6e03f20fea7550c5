// Cross-engine tests: a directory written by one engine opens in the other with the same state, after
// a clean close and after the writer was killed (-9, or by a GL_CRASH_AT crash point inside a
// checkpoint); the directory lock holds across engines; a failed fsync makes both engines read-only
// the same way.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  DIST, WRITER, fileDiffs, jsEngineAvailable, open, other, state, stateDiff, tmpDir, type Engine, type Ledger,
} from './helpers';
import { Model, flatOps, makeKeys, makePlan } from './workload.mjs';
import { readManifest, walFile, Wal, WalType, WAL_MAGIC } from '../../dist/format.js';

const ENGINES: Engine[] = ['native', 'js'];

interface ChildResult {
  code: number | null;
  signal: string | null;
  lines: string[];
  stderr: string;
}

/**
 * Runs writer.mjs; kills it with SIGKILL once it has acknowledged `killAt` operations (if given: the
 * kill lands wherever the child is by then, often inside an operation) or once it says it is `held`.
 */
function runWriter(args: Record<string, string | number>, killAt?: number, timeoutMs = 60_000): Promise<ChildResult> {
  const argv = [WRITER, '--module', DIST];
  for (const [k, v] of Object.entries(args)) argv.push(`--${k}`, String(v));
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.GL_CRASH_AT;
    delete env.GL_FAIL_FSYNC_AT;
    const p = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let buf = '';
    let stderr = '';
    const lines: string[] = [];
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        const m = /^(ack|ckpt) (\d+)/.exec(line);
        if ((killAt !== undefined && m && Number(m[2]) >= killAt) || (killAt !== undefined && line === 'done') ||
          line.startsWith('held ')) p.kill('SIGKILL');
      }
    });
    p.stderr.on('data', (d) => (stderr += d));
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, lines, stderr });
    });
  });
}

/** Last `<tag> <ops> <lsn>` line: [ops, lsn]. */
function last(lines: string[], tag: string): [number, number] {
  for (let i = lines.length - 1; i >= 0; i--) {
    const m = new RegExp(`^${tag} (\\d+) (\\d+)`).exec(lines[i]);
    if (m) return [Number(m[1]), Number(m[2])];
  }
  return [0, 0];
}

/** The model after the operations that bring its LSN to `lsn` (and any failing ones right after). */
function modelAt(seed: number, nkeys: number, ops: number, ckptEvery: number, lsn: number): Model | undefined {
  const plan = makePlan({ seed, ops, keys: nkeys, checkpointEvery: ckptEvery });
  const m = new Model(nkeys);
  if (lsn === 0) return m;
  for (const op of flatOps(plan)) {
    m.apply(op);
    if (m.lsn === lsn) return m;
  }
  return undefined;
}

function expectModel(l: Ledger, m: Model, keys: Buffer[], where: string): void {
  for (let i = 0; i < keys.length; i++) {
    const a = l.get(keys[i]);
    expect(a !== undefined, `${where}: account ${i} exists`).toBe(m.exists[i]);
    expect(a?.balance ?? 0n, `${where}: balance of account ${i}`).toBe(m.balance[i]);
  }
}

describe('cross-engine', () => {
  beforeAll(async () => {
    if (!(await jsEngineAvailable())) throw new Error('the js engine is not registered in dist/ (npm run build)');
  });

  for (const writer of ENGINES) {
    const reader = other(writer);

    it(`written by ${writer}, reopened by ${reader} and back: same state, clean opens`, async () => {
      const dir = tmpDir();
      const keys = makeKeys(11, 400);
      let l = await open(dir, writer, { shards: 3, accountsPerShard: 500 });
      for (let i = 0; i < 2000; i++) l.mint(keys[i % 400], BigInt(i + 1));
      for (let i = 0; i < 1000; i++) l.transfer(keys[i % 400], keys[(i * 7 + 1) % 400], 3n);
      const before = state(l, keys);
      await l.close();
      l = await open(dir, reader);
      expect(l.recovery.mode).toBe('clean');
      expect(stateDiff(before, state(l, keys))).toBe('');
      for (let i = 0; i < 500; i++) l.transfer(keys[i % 400], keys[(i * 3 + 1) % 400], 1n);
      const after = state(l, keys);
      await l.close();
      l = await open(dir, writer);
      expect(l.recovery.mode).toBe('clean');
      expect(stateDiff(after, state(l, keys))).toBe('');
      await l.close();
    });

    it(`grown by ${writer} from 2 x 50 to 12,000 accounts (files extended, indexes doubled), reopened by ${reader} and grown on: same state, clean opens, the same files`, async () => {
      const keys = makeKeys(13, 12_000);
      const dir = tmpDir();
      let l = await open(dir, writer, { shards: 2, accountsPerShard: 50 });
      const ops = Buffer.alloc(1000 * 40);
      for (let from = 0; from < 8000; from += 1000) {
        for (let j = 0; j < 1000; j++) {
          keys[from + j].copy(ops, j * 40);
          ops.writeBigUInt64LE(BigInt(from + j + 1), j * 40 + 32);
        }
        l.mintBatch(ops);
        if (from === 3000) await l.checkpoint();
      }
      for (let i = 0; i < 2000; i++) l.transfer(keys[i], keys[8000 + i], 1n);
      const grown = l.stats().shards;
      expect(grown.every((s) => s.capacity > 50 && s.indexResizes > 0)).toBe(true);
      const before = state(l, keys);
      await l.close();
      const copy = tmpDir();
      for (const f of fs.readdirSync(dir)) if (f !== 'LOCK') fs.copyFileSync(path.join(dir, f), path.join(copy, f));
      l = await open(dir, reader);
      expect(l.recovery.mode).toBe('clean');
      expect(l.stats().shards.map((s) => [s.accounts, s.capacity, s.indexCapacity]))
        .toEqual(grown.map((s) => [s.accounts, s.capacity, s.indexCapacity]));
      expect(stateDiff(before, state(l, keys))).toBe('');
      for (let i = 10_000; i < 12_000; i++) l.mint(keys[i], 7n);
      const after = state(l, keys);
      await l.close();
      l = await open(dir, writer);
      expect(l.recovery.mode).toBe('clean');
      expect(stateDiff(after, state(l, keys))).toBe('');
      await l.close();
      // The writer's own engine growing the copy the same way leaves the same files, byte for byte.
      l = await open(copy, writer);
      for (let i = 10_000; i < 12_000; i++) l.mint(keys[i], 7n);
      await l.close();
      expect(fileDiffs(dir, copy)).toEqual([]);
    });

    it(`a ${writer} ledger open in another process is LOCKED for ${reader}, until that process dies`, async () => {
      const dir = tmpDir();
      const child = spawn(process.execPath, ['-e', `
        require(${JSON.stringify(DIST)}).Ledger.open(${JSON.stringify(dir)}, { engine: '${writer}', shards: 2, accountsPerShard: 100 })
          .then((l) => { globalThis.held = l; console.log('open'); setInterval(() => {}, 1000); });`], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolve) => child.stdout!.on('data', (d) => String(d).includes('open') && resolve()));
      await expect(open(dir, reader)).rejects.toMatchObject({ code: 'LOCKED' });
      child.kill('SIGKILL');
      await new Promise((r) => child.on('exit', r));
      const l = await open(dir, reader);
      expect(l.recovery.mode).not.toBe('clean');
      await l.close();
    });

    it(`a ${reader} ledger open in this process is LOCKED for ${writer} in another process, until it closes`, async () => {
      const dir = tmpDir();
      const probe = () => new Promise<string>((resolve) => {
        const p = spawn(process.execPath, ['-e', `
          require(${JSON.stringify(DIST)}).Ledger.open(${JSON.stringify(dir)}, { engine: '${writer}' })
            .then((l) => l.close()).then(() => console.log('opened'), (e) => console.log(e.code));`], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        p.stdout.on('data', (d) => (out += d));
        p.on('exit', () => resolve(out.trim()));
      });
      const l = await open(dir, reader, { shards: 2, accountsPerShard: 100 });
      expect(await probe()).toBe('LOCKED');
      await l.close();
      expect(await probe()).toBe('opened');
    });

    // The native engine sees a JS holder through "pid starttime" in LOCK, its own pid included.
    it(`a ${writer} ledger open here is LOCKED for ${reader} in this process too`, async () => {
      const dir = tmpDir();
      const l = await open(dir, writer, { shards: 2, accountsPerShard: 100 });
      try {
        await expect(open(dir, reader)).rejects.toMatchObject({ code: 'LOCKED' });
      } finally {
        await l.close();
      }
      const l2 = await open(dir, reader);
      expect(l2.recovery.mode).toBe('clean');
      await l2.close();
    });

    for (const wal of [true, false]) {
      for (const [kill, syncEvery] of [[700, 1000], [2300, 4], [4100, 50]] as const) {
        it(`${writer} killed -9 after ${kill} ops (wal ${wal ? 'on' : 'off'}, syncEvery ${syncEvery}), recovered by ${reader}`, async () => {
          const dir = tmpDir();
          const seed = kill + (wal ? 1 : 2) + (writer === 'js' ? 10 : 20);
          const [nkeys, ops, ckptEvery] = [300, 6000, 1500];
          const args = { dir, engine: writer, seed, ops, keys: nkeys, wal: wal ? 1 : 0, 'sync-every': syncEvery, 'ckpt-every': ckptEvery };
          // wal on: killed wherever it is. wal off: killed between two operations (a kill inside a
          // checkpoint's image journal has its own test below).
          const r = wal ? await runWriter(args, kill) : await runWriter({ ...args, 'hold-at': kill });
          expect(r.signal, `${r.lines.slice(-3).join(' | ')} ${r.stderr}`).toBe('SIGKILL');
          const [, ackedLsn] = last(r.lines, 'ack');
          const [, ckptLsn] = last(r.lines, 'ckpt');
          const l = await open(dir, reader, { wal });
          const lsn = Number(l.stats().lsn);
          if (wal) expect(lsn, 'every acknowledged operation is back').toBeGreaterThanOrEqual(ackedLsn);
          else expect(lsn, 'back to the last checkpoint').toBe(ckptLsn);
          const m = modelAt(seed, nkeys, ops, ckptEvery, lsn);
          expect(m, `lsn ${lsn} is a prefix of the plan`).toBeDefined();
          expectModel(l, m!, makeKeys(seed, nkeys), `${writer} -> ${reader} at lsn ${lsn}`);
          // and the writer's engine agrees after the reader's recovery checkpoint
          await l.close();
          const l2 = await open(dir, writer, { wal });
          expect(l2.recovery.mode).toBe('clean');
          expectModel(l2, m!, makeKeys(seed, nkeys), `back in ${writer}`);
          await l2.close();
        });
      }
    }

    const POINTS = [
      'checkpoint:after-wal-sync', 'checkpoint:after-data-write', 'checkpoint:after-data-sync', 'checkpoint:after-index',
      'checkpoint:after-manifest', 'checkpoint:after-wal-reset',
    ];
    for (const wal of [true, false]) {
      it(`${writer} killed at every checkpoint crash point (wal ${wal ? 'on' : 'off'}), recovered by ${reader}`, async () => {
        // (a background checkpoint hands over first; with wal off every checkpoint is a foreground one)
        for (const point of wal ? ['checkpoint:after-handover', ...POINTS] : POINTS) {
          const dir = tmpDir();
          const seed = 77 + POINTS.indexOf(point);
          const [nkeys, ops, ckptEvery] = [200, 3000, 900];
          const r = await runWriter({
            dir, engine: writer, seed, ops, keys: nkeys, wal: wal ? 1 : 0, 'ckpt-every': ckptEvery, 'crash-at': point,
          });
          const where = `${writer} at ${point} -> ${reader}`;
          expect(r.signal, `${where}: ${r.lines.slice(-3).join(' | ')} ${r.stderr}`).toBe('SIGKILL');
          expect(r.stderr).toContain(`GL_CRASH_AT=${point}`);
          const [, crashLsn] = last(r.lines, 'crashing');
          const l = await open(dir, reader, { wal });
          const lsn = Number(l.stats().lsn);
          // wal on: everything acknowledged is in the log or the new checkpoint. wal off: the image
          // journal is durable at every crash point, so the checkpoint that was killed is rolled forward.
          expect(lsn, where).toBe(crashLsn);
          const m = modelAt(seed, nkeys, ops, ckptEvery, lsn);
          expectModel(l, m!, makeKeys(seed, nkeys), where);
          await l.close();
        }
      });
    }
  }

  for (const writer of ENGINES) {
    for (const reader of ENGINES) {
      // An incomplete wal:false image journal at LSN L is cut whole: the ledger comes back at the
      // last checkpoint's state and LSN, not L - 1.
      it(`wal off: a checkpoint killed while its image journal was half written (${writer}) comes back to the previous checkpoint (${reader})`, async () => {
        const dir = tmpDir();
        const seed = 4242;
        const [nkeys, ops, ckptEvery] = [200, 3000, 500];
        const r = await runWriter({
          dir, engine: writer, seed, ops, keys: nkeys, wal: 0, 'ckpt-every': ckptEvery, warmup: 800,
          'crash-at': 'checkpoint:after-wal-sync',
        });
        expect(r.signal, `${r.lines.slice(-3).join(' | ')} ${r.stderr}`).toBe('SIGKILL');
        const [, before] = last(r.lines, 'reopened'); // the close before the crash run checkpointed here
        const [, crashLsn] = last(r.lines, 'crashing');
        expect(crashLsn).toBeGreaterThan(before);
        // The journal reached the disk whole; take its last record away, as if the write had been torn.
        // It is in the active log files: those of the manifest's epoch.
        const manifest = readManifest(dir)!;
        const wals = Array.from({ length: manifest.shards }, (_, s) => path.join(dir, walFile(s, manifest.epoch)));
        const lastImage = wals.map((f) => {
          const b = fs.readFileSync(f);
          let at = -1;
          for (let o = 224; o + 224 <= b.length; o += 224) {
            if (b.readUInt32LE(o + Wal.MAGIC) === WAL_MAGIC && b.readBigUInt64LE(o + Wal.EPOCH) === manifest.epoch &&
              b.readUInt32LE(o + Wal.TYPE) === WalType.IMAGE) at = o;
          }
          return at;
        });
        const i = lastImage.indexOf(Math.max(...lastImage));
        expect(lastImage[i], 'the image journal is in an active log').toBeGreaterThan(0);
        fs.truncateSync(wals[i], lastImage[i]);
        const l = await open(dir, reader, { wal: false });
        expect(l.recovery.walBytesDropped).toBeGreaterThan(0);
        const m = modelAt(seed, nkeys, ops, ckptEvery, before)!;
        expectModel(l, m, makeKeys(seed, nkeys), `${writer} -> ${reader}`);
        expect(Number(l.stats().lsn)).toBe(before);
        await l.close();
      });
    }
  }

  for (const engine of ENGINES) {
    it(`${engine}: the n-th fsync failing makes the ledger read-only, and the other engine recovers it`, async () => {
      const dir = tmpDir();
      const keys = makeKeys(5, 10);
      let l = await open(dir, engine, { shards: 2, accountsPerShard: 100, syncIntervalMs: 100_000 });
      await l.close();
      process.env.GL_FAIL_FSYNC_AT = '1';
      try {
        l = await open(dir, engine, { syncIntervalMs: 100_000 });
      } finally {
        delete process.env.GL_FAIL_FSYNC_AT;
      }
      expect(l.recovery.mode).toBe('clean');
      l.mint(keys[0], 5n);
      l.mint(keys[1], 7n);
      await expect(l.sync()).rejects.toMatchObject({ code: 'IO_ERROR', message: expect.stringMatching(/fsync shard_00\d\.[01]\.wal/) });
      expect(l.stats().readOnly).toBe(true);
      expect(() => l.mint(keys[2], 1n)).toThrow(expect.objectContaining({ code: 'IO_ERROR' }));
      expect([...l.mintBatch(Buffer.alloc(40, 1))]).toEqual([9]);
      await expect(l.sync()).rejects.toMatchObject({ code: 'IO_ERROR' });
      await expect(l.checkpoint()).rejects.toMatchObject({ code: 'IO_ERROR' });
      await expect(l.close()).rejects.toMatchObject({ code: 'IO_ERROR' });
      // The two mints are in the log (in the kernel): a reopen replays them, with either engine.
      const l2 = await open(dir, other(engine));
      expect(l2.recovery.mode).toBe('replay');
      expect(l2.balance(keys[0])).toBe(5n);
      expect(l2.balance(keys[1])).toBe(7n);
      expect(l2.get(keys[2])).toBeUndefined();
      await l2.close();
      expect(fs.existsSync(dir)).toBe(true);
    });
  }
});
