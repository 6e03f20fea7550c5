// The ledgers the operations tests (verify, the CLI) look at: one stopped cleanly, one left as kill -9 leaves it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach } from 'vitest';
import { ACCOUNT_SIZE } from '../../dist/format.js';
import { key, MANUAL_SYNC, open, snapshot, tmpDir } from '../core/helpers';

export const N = 300;
export const SHAPE = { shards: 2, accountsPerShard: 1000 };
/** What N accounts holding 1 .. N add up to. */
export const MINTED = BigInt((N * (N + 1)) / 2);

/** A closed ledger of N accounts, account i holding i + 1. */
export async function closedLedger(engine: 'native' | 'js', tag = 'gl-ops'): Promise<string> {
  const dir = tmpDir(tag);
  const l = await open(dir, engine, SHAPE);
  for (let i = 0; i < N; i++) l.mint(key(i), BigInt(i + 1));
  await l.close();
  return dir;
}

/**
 * What a crash leaves: a snapshot of a live ledger whose checkpoint holds nothing and whose logs hold N mints,
 * all synced but the last 10 (so every record but those is proven durable by a later one).
 */
export async function crashedLedger(engine: 'native' | 'js', tag = 'gl-ops'): Promise<string> {
  const dir = tmpDir(tag);
  const l = await open(dir, engine, { ...SHAPE, ...MANUAL_SYNC });
  try {
    for (let i = 0; i < N - 10; i++) l.mint(key(i), BigInt(i + 1));
    await l.sync();
    for (let i = N - 10; i < N; i++) l.mint(key(i), BigInt(i + 1));
    return snapshot(dir);
  } finally {
    await l.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The shard file and slot of account `i` (any shard), found by its key. */
export function slotOf(dir: string, i: number): { file: string; slot: number } {
  for (let s = 0; s < SHAPE.shards; s++) {
    const file = path.join(dir, `shard_00${s}.bin`);
    const b = fs.readFileSync(file);
    for (let slot = 0; slot * ACCOUNT_SIZE < b.length; slot++) {
      if (b.subarray(slot * ACCOUNT_SIZE, slot * ACCOUNT_SIZE + 32).equals(key(i))) return { file, slot };
    }
  }
  throw new Error(`account ${i} is in no shard file`);
}

/**
 * Inside a describe: `made(promise of a directory)` resolves to the directory and removes it after each test.
 */
export function removedAfterEach(): (p: Promise<string>) => Promise<string> {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  return async (p) => {
    const d = await p;
    dirs.push(d);
    return d;
  };
}
