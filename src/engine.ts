/**
 * What the Ledger needs from an engine: the native core (native/addon.cpp) and
 * the pure-TypeScript one implement this same surface. The Ledger validates
 * every argument before calling in, so engines may assume well-formed input:
 * keys are 32-byte Uint8Arrays, amounts are bigints or safe integers >= 1,
 * batch buffers are whole multiples of their record size.
 *
 * Operations return a status byte (BatchStatus) instead of throwing; the
 * recovery primitives and checkpoint throw LedgerError.
 */
import type { Manifest } from './format';

export interface EngineOptions {
  wal: boolean;
  syncEvery: number;
  syncIntervalMs: number;
}

export interface ReplayResult {
  records: number;
  droppedBytes: number;
  lastLsn: bigint;
}

export interface EngineStats {
  lsn: bigint;
  durableLsn: bigint;
  checkpointLsn: bigint;
  walBytes: number;
  fsyncs: number;
  readOnly: boolean;
  shards: { accounts: number; capacity: number; indexRebuilds: number }[];
}

export interface EngineCore {
  /** Writes the files of a new ledger (empty shards, indexes, logs, manifest). */
  create(m: Manifest): void;
  /** Maps the shards; returns, per shard, whether its index file is valid for `m`. */
  open(m: Manifest, o: EngineOptions): boolean[];
  /** True when every log is exactly a header of the manifest's epoch (nothing to replay). */
  logsHeaderOnly(): boolean;
  /**
   * Replays the logs up to the global cut; inserts into the indexes marked valid. `repair` keeps the
   * valid prefix of a log damaged in the middle instead of failing with CORRUPTION.
   */
  replay(indexValid: boolean[], repair: boolean): ReplayResult;
  rebuildIndex(shard: number): void;
  /** Starts background syncing; operations may follow. */
  start(): void;

  mint(key: Uint8Array, amount: bigint | number): number;
  transfer(from: Uint8Array, to: Uint8Array, amount: bigint | number): number;
  /** Copies the 128-byte image into `out`; OK, ACCOUNT_NOT_FOUND or CORRUPTION. */
  get(key: Uint8Array, out: Uint8Array): number;
  mintBatch(ops: Uint8Array, statuses: Uint8Array): void;
  transferBatch(ops: Uint8Array, statuses: Uint8Array): void;
  /** Throws CORRUPTION for a damaged record. */
  getBatch(keys: Uint8Array, out: Uint8Array): void;
  sync(): Promise<void>;
  /** `force`: checkpoint even when nothing changed (to start a fresh log epoch). */
  checkpoint(force: boolean): void;
  close(): void;
  stats(): EngineStats;
  /** What the last CORRUPTION status was about (file and slot). */
  detail(): string;
}

export interface Engine {
  name: 'native' | 'js';
  /** Takes the directory lock (LOCKED when held). */
  newCore(dir: string): EngineCore;
}
