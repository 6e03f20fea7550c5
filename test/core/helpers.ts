import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Ledger, LedgerError, type LedgerOptions } from '../../dist/index.js';

export { Ledger, LedgerError };
export const DIST = fileURLToPath(new URL('../../dist/index.js', import.meta.url));

/** Engines the shared suite runs against: every engine this build can open. */
export const engines: ('native' | 'js')[] = (() => {
  const out: ('native' | 'js')[] = ['native'];
  const probe = fs.mkdtempSync(path.join(os.tmpdir(), 'gl-probe-'));
  // The JS engine registers itself when present; an unknown engine is INVALID_OPTIONS at once.
  const child = spawnSync(process.execPath, ['-e', `
    require(${JSON.stringify(DIST)}).Ledger.open(${JSON.stringify(probe)}, { engine: 'js', shards: 1, accountsPerShard: 16 })
      .then(l => l.close()).then(() => process.exit(0), () => process.exit(1));`]);
  fs.rmSync(probe, { recursive: true, force: true });
  if (child.status === 0) out.push('js');
  return out;
})();

export function tmpDir(tag = 'gl'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `${tag}-`));
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
