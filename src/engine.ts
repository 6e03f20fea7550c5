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
// `trigger` arguments are Counter.TRIGGER_* (src/counters.ts): what started a checkpoint, for the metrics.

export interface EngineOptions {
  wal: boolean;
  syncEvery: number;
  syncIntervalMs: number;
  /** Most log records that may be unsynced at once; a write past it waits for the group fsync. */
  maxUnsyncedRecords: number;
  /** Log bytes since the last hand-over at which a write starts a background checkpoint. */
  checkpointEveryBytes: number;
  /** Accounts the whole ledger may hold (0: only the hard limit of each shard); creating one more is CAPACITY_EXCEEDED. */
  maxAccounts: number;
  /** False: no read-ahead on the file mappings (native; the JS engine maps nothing and ignores it). */
  readAhead: boolean;
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
  /** Total minted by the operations up to lsn (u128). */
  supply: bigint;
  /** Log bytes (records after the headers) since the last committed checkpoint, both generations. */
  walBytes: number;
  /** Checkpoints committed since open (foreground and background). */
  checkpoints: number;
  checkpointInProgress: boolean;
  /** Duration of the last committed checkpoint, hand-over to commit (0 before the first). */
  lastCheckpointMs: number;
  /** When the last checkpoint committed, ms since the Unix epoch (0 before the first). */
  lastCheckpointAt: number;
  fsyncs: number;
  readOnly: boolean;
  /**
   * Per shard: accounts, capacity (slots of the account file, which grows), index rebuilds, the index's
   * capacity (entries) and how many times it has doubled since open.
   */
  shards: { accounts: number; capacity: number; indexRebuilds: number; indexCapacity: number; indexResizes: number }[];
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
  /**
   * Foreground checkpoint (docs/durability.md): open (recovery, creation) and close, when no operation can
   * run. Waits for a background checkpoint in progress first. `force`: even when nothing changed.
   */
  checkpointSync(force: boolean, trigger: number): void;
  /**
   * Background checkpoint: hands over on this thread, writes back off it; resolves once committed. Joins
   * one in progress. Resolves at once when there is nothing to do. With wal:false: a foreground one.
   */
  checkpoint(trigger: number): Promise<void>;
  /**
   * While paused the engine's own policy (checkpointEveryBytes) starts no checkpoint: a backup is copying the files
   * of the last committed one. The Ledger holds back the ones it starts itself.
   */
  pauseCheckpoints(paused: boolean): void;
  /**
   * Per shard, the byte offset where the records written to the kernel end in the log file appends go to now
   * (header included). Between calls nothing is staged, so this is the log up to the current LSN.
   */
  logEnds(): number[];
  /**
   * Replication's record tap (src/replication.ts): while on, a copy of every MINT, DEBIT and CREDIT record the
   * log gets is kept, in LSN order, until drainTap() hands them over (whole 224-byte records) and empties it.
   */
  setTap(on: boolean): void;
  drainTap(): Uint8Array;
  /** Counter.SLOTS values (src/counters.ts): a fresh snapshot, read on scrape. */
  counters(): Float64Array;
  /**
   * Housekeeping on the JS thread, a slice of at most about a millisecond: the native engine gives pages a
   * committed checkpoint wrote back to the kernel (MADV_DONTNEED). Returns true while work remains.
   */
  maintain(): boolean;
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
