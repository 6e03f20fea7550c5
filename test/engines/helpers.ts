import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
// @ts-ignore -- plain ESM module without type declarations
import { tmpDir as makeTmp } from '../support/tmp.mjs';
import { Ledger, LedgerError, type LedgerOptions } from '../../dist/index.js';

export { Ledger, LedgerError };
export type Engine = 'native' | 'js';
export const DIST = fileURLToPath(new URL('../../dist/index.js', import.meta.url));
export const WRITER = fileURLToPath(new URL('./writer.mjs', import.meta.url));
export const other = (e: Engine): Engine => (e === 'native' ? 'js' : 'native');

/** A new directory, removed after the test file (test/support/tmp.mjs). */
export function tmpDir(tag = 'gl-eng'): string {
  return makeTmp(tag);
}

export async function open(dir: string, engine: Engine, opts: LedgerOptions = {}): Promise<Ledger> {
  return Ledger.open(dir, { ...opts, engine });
}

/** The error code a call throws, or 'OK'. */
export function codeOf(f: () => unknown): string {
  try {
    f();
    return 'OK';
  } catch (e) {
    if (e instanceof LedgerError) return e.code;
    throw e;
  }
}

/** What a kill -9 would leave: the files as the kernel holds them now (the ledger stays open). */
export function snapshot(dir: string): string {
  const copy = tmpDir('gl-eng-crash');
  for (const f of fs.readdirSync(dir)) if (f !== 'LOCK') fs.copyFileSync(path.join(dir, f), path.join(copy, f));
  return copy;
}

export const STATE_FILES = /^(shard_\d+\.bin|index_\d+\.bin|MANIFEST|\.clean_shutdown)$/;

/** Names of the files that differ between two ledger directories (for the files matching `which`). */
export function fileDiffs(a: string, b: string, which = STATE_FILES): string[] {
  const names = new Set([...fs.readdirSync(a), ...fs.readdirSync(b)].filter((f) => which.test(f)));
  const out: string[] = [];
  for (const f of [...names].sort()) {
    const pa = path.join(a, f);
    const pb = path.join(b, f);
    if (!fs.existsSync(pa) || !fs.existsSync(pb)) {
      out.push(`${f}: only in ${fs.existsSync(pa) ? 'first' : 'second'}`);
      continue;
    }
    const x = fs.readFileSync(pa);
    const y = fs.readFileSync(pb);
    if (!x.equals(y)) {
      let at = 0;
      while (at < Math.min(x.length, y.length) && x[at] === y[at]) at++;
      out.push(`${f}: ${x.length} vs ${y.length} bytes, first difference at ${at}`);
    }
  }
  return out;
}

/**
 * Log files (both generations of every shard) compared record by record, except each record's timestamp
 * (bytes 4..12, informational), the durable LSN it carries (bytes 188..196: how far the group fsyncs had got,
 * which depends on timing) and, because it covers both, its CRC (bytes 16..20).
 */
export function walDiffs(a: string, b: string): string[] {
  const out: string[] = [];
  const wals = (d: string) => fs.readdirSync(d).filter((n) => n.endsWith('.wal')).sort();
  if (wals(a).join() !== wals(b).join()) out.push(`log files: ${wals(a).join(', ')} vs ${wals(b).join(', ')}`);
  for (const f of wals(a)) {
    if (!fs.existsSync(path.join(b, f))) continue;
    const x = fs.readFileSync(path.join(a, f));
    const y = fs.readFileSync(path.join(b, f));
    if (x.length !== y.length) {
      out.push(`${f}: ${x.length} vs ${y.length} bytes`);
      continue;
    }
    for (let o = 0; o < x.length; o += 224) {
      const end = Math.min(o + 224, x.length);
      for (let i = o; i < end; i++) {
        const r = i - o;
        if ((r >= 4 && r < 12) || (r >= 16 && r < 20) || (r >= 188 && r < 196)) continue;
        if (x[i] !== y[i]) {
          out.push(`${f}: record at ${o} differs at byte ${r}`);
          break;
        }
      }
      if (out.length > 5) return out;
    }
  }
  return out;
}

/** Every account image of `keys` (zeros where absent) and the LSN. */
export function state(l: Ledger, keys: Uint8Array[]): { images: Buffer; lsn: bigint } {
  const images = Buffer.from(l.getBatch(Buffer.concat(keys)));
  return { images, lsn: l.stats().lsn };
}

/** First account whose image differs, as text (or '' when equal). */
export function stateDiff(a: { images: Buffer; lsn: bigint }, b: { images: Buffer; lsn: bigint }): string {
  if (a.lsn !== b.lsn) return `lsn ${a.lsn} vs ${b.lsn}`;
  for (let o = 0; o < a.images.length; o += 128) {
    const x = a.images.subarray(o, o + 128);
    const y = b.images.subarray(o, o + 128);
    if (!x.equals(y)) {
      return `account #${o / 128}: balance ${x.readBigUInt64LE(32)} vs ${y.readBigUInt64LE(32)}, ` +
        `lsn ${x.readBigUInt64LE(40)} vs ${y.readBigUInt64LE(40)}, slot ${x.readUInt32LE(96)} vs ${y.readUInt32LE(96)}`;
    }
  }
  return '';
}

/** True when the JS engine is registered in the build under test. */
export async function jsEngineAvailable(): Promise<boolean> {
  const d = tmpDir('gl-eng-probe');
  try {
    const l = await Ledger.open(d, { engine: 'js', shards: 1, accountsPerShard: 16 });
    await l.close();
    return true;
  } catch {
    return false;
  }
}
