import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
// @ts-ignore -- plain ESM module without type declarations
import { tmpDir as makeTmp } from '../support/tmp.mjs';
import { Ledger, LedgerError, type LedgerOptions } from '../../dist/index.js';
import { crc32cUpdate, readManifest, walFile, Wal, WAL_MAGIC, WAL_RECORD_SIZE } from '../../dist/format.js';

export { Ledger, LedgerError };
export const DIST = fileURLToPath(new URL('../../dist/index.js', import.meta.url));

/**
 * The engines the shared suites run against: both, unless GL_ENGINES (comma-separated) names fewer. The JS engine
 * is always built, so one that cannot open a ledger fails these tests, never drops out of them. Only the sanitizer
 * run (npm run test:asan) sets GL_ENGINES, to native: the sanitizers instrument the addon, which the JS engine
 * never loads, and its runs there would only repeat the normal run's, several times slower.
 */
export const engines: ('native' | 'js')[] = process.env.GL_ENGINES
  ? (['native', 'js'] as const).filter((e) => process.env.GL_ENGINES!.split(',').includes(e))
  : ['native', 'js'];

/** A new directory, removed after the test file (test/support/tmp.mjs). */
export function tmpDir(tag = 'gl'): string {
  return makeTmp(tag);
}

export function key(i: number): Buffer {
  // Deterministic but well spread keys.
  return createHash('sha256').update(`key-${i}`).digest();
}

export function randomKey(): Buffer {
  return randomBytes(32);
}

export async function open(dir: string, engine: 'native' | 'js', opts: LedgerOptions = {}): Promise<Ledger> {
  return Ledger.open(dir, { shards: 4, accountsPerShard: 1000, engine, ...opts });
}

/** A digest of every account image (via getBatch) plus the LSN: "the whole state". */
export function stateHash(l: Ledger, keys: Uint8Array[]): string {
  const all = Buffer.concat(keys);
  const images = l.getBatch(all);
  return createHash('sha256').update(images).update(String(l.stats().lsn)).digest('hex');
}

export function expectLedgerError(f: () => unknown, code: string): void {
  let thrown: unknown;
  try {
    f();
  } catch (e) {
    thrown = e;
  }
  if (!(thrown instanceof LedgerError)) throw new Error(`expected LedgerError ${code}, got ${String(thrown)}`);
  if (thrown.code !== code) throw new Error(`expected ${code}, got ${thrown.code}: ${thrown.message}`);
}

export function mintOps(entries: [Uint8Array, bigint][]): Buffer {
  const b = Buffer.alloc(entries.length * 40);
  entries.forEach(([k, a], i) => {
    b.set(k, i * 40);
    b.writeBigUInt64LE(a, i * 40 + 32);
  });
  return b;
}

export function transferOps(entries: [Uint8Array, Uint8Array, bigint][]): Buffer {
  const b = Buffer.alloc(entries.length * 72);
  entries.forEach(([f, t, a], i) => {
    b.set(f, i * 72);
    b.set(t, i * 72 + 32);
    b.writeBigUInt64LE(a, i * 72 + 64);
  });
  return b;
}

/**
 * What a crash would leave: the files as the kernel holds them now (the ledger may stay open). Also a plain
 * copy of a ledger directory, to damage one copy per case.
 */
export function snapshot(dir: string): string {
  const copy = tmpDir('gl-crash');
  for (const f of fs.readdirSync(dir)) if (f !== 'LOCK') fs.copyFileSync(path.join(dir, f), path.join(copy, f));
  return copy;
}

/**
 * A digest of every file of a ledger directory but LOCK (the lock a failed open may leave behind): name,
 * size and bytes. Equal digests: an open changed no byte on disk. `strict` also takes LOCK and each file's
 * modification time: for tools that must not even touch a file (verify).
 */
export function dirDigest(dir: string, strict = false): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of fs.readdirSync(dir).sort()) {
    if (f === 'LOCK' && !strict) continue;
    const file = path.join(dir, f);
    const b = fs.readFileSync(file);
    out[f] = `${b.length} ${createHash('sha256').update(b).digest('hex')}${strict ? ` ${fs.statSync(file).mtimeMs}` : ''}`;
  }
  return out;
}

/** The log file that records are appended to now (the manifest's epoch): do not hard-code `.0.wal`. */
export function activeWal(dir: string, shard = 0): string {
  return path.join(dir, walFile(shard, readManifest(dir)!.epoch));
}

export interface LogRecord {
  file: string; // name only, e.g. shard_001.0.wal
  offset: number;
  shard: number;
  epoch: bigint;
  type: number;
  lsn: bigint;
  legs: number;
  leg: number;
  durableLsn: bigint;
}

/** True when the 224 bytes at `o` are an intact log record (magic and CRC-32C). */
export function intactRecord(b: Buffer, o: number): boolean {
  if (o + WAL_RECORD_SIZE > b.length || b.readUInt32LE(o + Wal.MAGIC) !== WAL_MAGIC) return false;
  const state = crc32cUpdate(crc32cUpdate(0xffffffff, b, o, o + 16), b, o + 20, o + WAL_RECORD_SIZE);
  return (~state >>> 0) === b.readUInt32LE(o + Wal.CRC);
}

/**
 * The intact records after the header of every log file of `dir` whose epoch is live for its manifest (the
 * manifest's epoch and the next), in file order: where each LSN's legs are, and what durable point each carries.
 */
export function logRecords(dir: string): LogRecord[] {
  const epoch = readManifest(dir)!.epoch;
  const out: LogRecord[] = [];
  for (const file of fs.readdirSync(dir).filter((f) => /^shard_\d+\.[01]\.wal$/.test(f)).sort()) {
    const b = fs.readFileSync(path.join(dir, file));
    for (let o = WAL_RECORD_SIZE; o + WAL_RECORD_SIZE <= b.length; o += WAL_RECORD_SIZE) {
      if (!intactRecord(b, o)) continue;
      const e = b.readBigUInt64LE(o + Wal.EPOCH);
      if (e !== epoch && e !== epoch + 1n) continue;
      out.push({
        file, offset: o, shard: b.readUInt32LE(o + Wal.SHARD), epoch: e, type: b.readUInt32LE(o + Wal.TYPE),
        lsn: b.readBigUInt64LE(o + Wal.LSN), legs: b.readUInt32LE(o + Wal.LEGS), leg: b.readUInt32LE(o + Wal.LEG),
        durableLsn: b.readBigUInt64LE(o + Wal.DURABLE_LSN),
      });
    }
  }
  return out;
}

/** XORs `mask` into the byte at `offset` of `file`, in place. */
export function flipBit(file: string, offset: number, mask = 0x08): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    b[0] ^= mask;
    fs.writeSync(fd, b, 0, 1, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `bytes` over `file` at `offset`, in place (the file grows if it must). */
export function overwrite(file: string, offset: number, bytes: Uint8Array): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** Bytes that are no log record and no zeros. */
export function garbage(n: number): Buffer {
  const g = Buffer.alloc(n);
  for (let i = 0; i < n; i++) g[i] = (i * 131 + 7) & 0xff || 1;
  return g;
}

/** Options that make durability explicit: records become durable only at sync(), and no checkpoint starts by itself. */
export const MANUAL_SYNC: LedgerOptions = { syncEvery: 1_000_000, syncIntervalMs: 2 ** 31, checkpointIntervalMs: 0 };

/** Polls `f` until it is true or `ms` pass; returns whether it became true. */
export async function waitFor(f: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}
