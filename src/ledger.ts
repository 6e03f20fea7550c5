import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomInt } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { decodeWith, type Account } from './account';
import { checkAmount } from './amount';
import { BatchStatus, LedgerError, errorFor } from './errors';
import type { Engine, EngineCore, EngineOptions, EngineStats } from './engine';
import {
  ACCOUNT_SIZE, MANIFEST_FILE, MARKER_FILE, MAX_ACCOUNTS_PER_SHARD, MINT_OP_SIZE, TRANSFER_OP_SIZE, WAL_RECORD_SIZE,
  type Manifest, readManifest, readMarker, removeMarker, shardFile, walFile, writeMarker,
} from './format';
import { Counter, decodeCounters, statusOfCode, type LedgerCounters } from './counters';
import { keyBytes, type Pubkey } from './pubkey';
import { nativeEngine } from './native-engine';

export interface Progress {
  phase: 'replay' | 'rebuild';
  done: number;
  total: number;
}

export interface LedgerOptions {
  shards?: number;
  /** Initial capacity of each shard (default 1,000,000); shards grow as they fill, up to MAX_ACCOUNTS_PER_SHARD. */
  accountsPerShard?: number;
  /** Most accounts the ledger may hold (not kept in the directory: give it at every open); past it CAPACITY_EXCEEDED. */
  maxAccounts?: number;
  wal?: boolean;
  syncEvery?: number;
  syncIntervalMs?: number;
  /**
   * Most log records that may be unsynced at once (default 8 x syncEvery): a write that would pass it waits for
   * the group fsync. A power cut loses at most this many records of acknowledged operations.
   */
  maxUnsyncedRecords?: number;
  /** Log bytes since the last checkpoint that start a background checkpoint (default 64 MiB). */
  checkpointEveryBytes?: number;
  /** A background checkpoint this long after the last one when the log holds anything (default 60,000; 0: off). */
  checkpointIntervalMs?: number;
  /**
   * Read-ahead when the native engine faults in a page of its account and index files (default true). Set it to
   * false for a ledger larger than the memory it runs in: accounts are reached by hash, and read-ahead then only
   * evicts pages in use (measured in the README). The JS engine maps nothing and ignores it.
   */
  readAhead?: boolean;
  onProgress?: (p: Progress) => void;
  engine?: 'native' | 'js';
  /**
   * Accept a log that is damaged in the middle: keep its valid prefix, drop the rest and report it
   * (recovery.walBytesDropped, recovery.reason). Operations that were synced can be lost this way, so
   * it is never the default: without it such a log fails the open with CORRUPTION.
   */
  repair?: boolean;
  /** Hash seed for a new ledger (default: random). Tests use it to compare engines file for file. */
  seed?: number;
  /**
   * SIGTERM and SIGINT stop new writes (CLOSED), let pending sync()s settle, close() (checkpoint and marker), then
   * exit the process with 128 + the signal's number (143, 130). Default false.
   */
  handleSignals?: boolean;
}

export interface BackupProgress {
  /** Bytes copied so far, of `total`. */
  bytes: number;
  total: number;
}

export interface BackupOptions {
  onProgress?: (p: BackupProgress) => void;
}

export interface BackupResult {
  /** The copy holds the state after exactly the operations up to this LSN. */
  lsn: bigint;
  bytes: number;
  ms: number;
}

export interface Recovery {
  mode: 'new' | 'clean' | 'replay' | 'rebuild';
  ms: number;
  walRecordsReplayed: number;
  walBytesDropped: number;
  shardsRebuilt: number;
  reason: string;
}

export interface ShardStats {
  accounts: number;
  /** Accounts the shard holds before its file grows again. */
  capacity: number;
  loadFactor: number;
  indexRebuilds: number;
  /** Entries of the shard's index (a power of two; it doubles past a load factor of one half). */
  indexCapacity: number;
  /** Times the index has doubled since open. */
  indexResizes: number;
}

export type { LedgerCounters } from './counters';

export interface LedgerStats extends Omit<EngineStats, 'shards'> {
  accounts: number;
  shards: ShardStats[];
}

const MAX_SHARDS = 4096;
/** Default unsynced bound, in groups of syncEvery records (measured: docs/durability.md). */
const DEFAULT_UNSYNCED_GROUPS = 8;
const DEFAULT_CHECKPOINT_EVERY_BYTES = 64 * 1024 * 1024;
const DEFAULT_CHECKPOINT_INTERVAL_MS = 60_000;
/** How often the ledger looks after its checkpoint policy and gives written-back pages back. */
const HOUSEKEEPING_MS = 100;
/** What a backup reads and writes per call on the libuv pool. */
const COPY_CHUNK = 8 * 1024 * 1024;

function intOption(name: string, v: unknown, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new LedgerError('INVALID_OPTIONS', `${name} must be an integer in ${min}..${max}, got ${String(v)}`);
  }
  return v;
}
function positiveInt(name: string, v: unknown, max: number): number | undefined {
  return intOption(name, v, 1, max);
}

function crashPoint(name: string): void {
  if (process.env.GL_CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
}

const engines: Record<string, () => Engine | Error> = { native: nativeEngine };
/** Lets the JS engine register itself without the native engine depending on it. */
export function registerEngine(name: 'native' | 'js', load: () => Engine | Error): void {
  engines[name] = load;
}

export class Ledger {
  readonly recovery: Recovery;
  readonly dir: string;
  #core: EngineCore | undefined;
  readonly #engineName: string;
  #wal: boolean;
  #closing: Promise<void> | undefined;
  #housekeeping: NodeJS.Timeout | undefined;
  #releasing = false;
  #checkpointIntervalMs: number;
  #lastCheckpointAt = Date.now();
  #lastBackupAt = 0;
  /** The backup in progress: checkpoints the ledger would start wait for it (the copy reads their files). */
  #backup: Promise<unknown> | undefined;
  /** sync() calls not settled yet: a signal lets them settle before closing. */
  readonly #syncs = new Set<Promise<void>>();
  /** Operations refused before the engine saw them (bad key or amount), in the counters' layout. */
  readonly #refused = new Float64Array(Counter.OPS + 2 * Counter.STATUS_SLOTS);
  // Reused for one-by-one reads: valid only until the next call into the core.
  readonly #scratch = new Uint8Array(ACCOUNT_SIZE);
  readonly #scratchView = new DataView(this.#scratch.buffer);

  private constructor(dir: string, core: EngineCore, engineName: string, wal: boolean, recovery: Recovery,
    checkpointIntervalMs: number) {
    this.dir = dir;
    this.#core = core;
    this.#engineName = engineName;
    this.#wal = wal;
    this.recovery = recovery;
    this.#checkpointIntervalMs = checkpointIntervalMs;
    this.#housekeeping = housekeeping(new WeakRef(this), (l) => l.#housekeep());
  }

  /**
   * The timer's work: a background checkpoint once checkpointIntervalMs has passed since the last one and the
   * log holds anything; then pages a committed checkpoint wrote back are given back to the kernel, a slice per
   * event-loop turn so that no turn is held up.
   */
  #housekeep(): void {
    const core = this.#core;
    if (!core || this.#closing) return;
    const s = core.stats();
    if (s.lastCheckpointAt > this.#lastCheckpointAt) this.#lastCheckpointAt = s.lastCheckpointAt;
    if (this.#checkpointIntervalMs > 0 && !s.checkpointInProgress && !s.readOnly && s.walBytes > 0 && !this.#backup &&
      Date.now() - this.#lastCheckpointAt >= this.#checkpointIntervalMs) {
      this.#lastCheckpointAt = Date.now();
      // A failure turns the ledger read-only; writes and sync() report it.
      core.checkpoint(Counter.TRIGGER_INTERVAL).catch(() => {});
    }
    this.#release();
  }

  #release(): void {
    if (this.#releasing) return;
    const step = (): void => {
      const core = this.#core;
      if (core && !this.#closing && core.maintain()) {
        setImmediate(step);
      } else {
        this.#releasing = false;
      }
    };
    this.#releasing = true;
    step();
  }

  /**
   * Opens (or creates) the ledger in `dir`. Decides how: a clean open when the
   * clean-shutdown marker, the logs and the indexes all agree; otherwise log
   * replay, and index rebuilds for any shard whose index is not exact.
   */
  static async open(dir: string, options: LedgerOptions = {}): Promise<Ledger> {
    if (typeof dir !== 'string' || dir.length === 0) throw new LedgerError('INVALID_OPTIONS', 'dir must be a non-empty string');
    if (options === null || typeof options !== 'object') throw new LedgerError('INVALID_OPTIONS', 'options must be an object');
    const shards = positiveInt('shards', options.shards, MAX_SHARDS);
    const accountsPerShard = positiveInt('accountsPerShard', options.accountsPerShard, MAX_ACCOUNTS_PER_SHARD);
    const maxAccounts = positiveInt('maxAccounts', options.maxAccounts, MAX_SHARDS * MAX_ACCOUNTS_PER_SHARD) ?? 0;
    const syncEvery = positiveInt('syncEvery', options.syncEvery, 2 ** 31) ?? 1000;
    const syncIntervalMs = positiveInt('syncIntervalMs', options.syncIntervalMs, 2 ** 31) ?? 1000;
    // A transfer logs two records: a smaller bound could never admit one.
    const maxUnsyncedRecords = intOption('maxUnsyncedRecords', options.maxUnsyncedRecords, 2, 2 ** 40) ??
      Math.max(2, syncEvery * DEFAULT_UNSYNCED_GROUPS);
    const checkpointEveryBytes = intOption('checkpointEveryBytes', options.checkpointEveryBytes, 4096, 2 ** 48) ??
      DEFAULT_CHECKPOINT_EVERY_BYTES;
    const checkpointIntervalMs = intOption('checkpointIntervalMs', options.checkpointIntervalMs, 0, 2 ** 31) ??
      DEFAULT_CHECKPOINT_INTERVAL_MS;
    const wal = options.wal ?? true;
    if (typeof wal !== 'boolean') throw new LedgerError('INVALID_OPTIONS', 'wal must be a boolean');
    const readAhead = options.readAhead ?? true;
    if (typeof readAhead !== 'boolean') throw new LedgerError('INVALID_OPTIONS', 'readAhead must be a boolean');
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
      throw new LedgerError('INVALID_OPTIONS', 'onProgress must be a function');
    }
    const engineName = options.engine ?? 'native';
    const load = engines[engineName];
    if (!load) throw new LedgerError('INVALID_OPTIONS', `unknown engine ${String(engineName)}`);
    const engine = load();
    if (engine instanceof Error) {
      throw new LedgerError('INVALID_OPTIONS', `the ${engineName} engine is not available here: ${engine.message}`);
    }
    const progress = options.onProgress ?? (() => {});
    const repair = options.repair ?? false;
    if (typeof repair !== 'boolean') throw new LedgerError('INVALID_OPTIONS', 'repair must be a boolean');
    const handleSignals = options.handleSignals ?? false;
    if (typeof handleSignals !== 'boolean') throw new LedgerError('INVALID_OPTIONS', 'handleSignals must be a boolean');

    const started = performance.now();
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new LedgerError('IO_ERROR', `cannot create ${dir}: ${(e as Error).message}`);
    }
    const core = engine.newCore(dir);
    try {
      let manifest = readManifest(dir);
      let fresh = false;
      if (!manifest) {
        const aps = accountsPerShard ?? 1_000_000;
        manifest = {
          shards: shards ?? 16,
          accountsPerShard: aps,
          indexCapacity: 2 ** Math.ceil(Math.log2(Math.max(1024, aps * 2))),
          seed: options.seed ?? randomInt(0, 2 ** 32),
          epoch: 1n,
          checkpointLsn: 0n,
          supply: 0n,
        };
        core.create(manifest);
        fresh = true;
      } else {
        if (shards !== undefined && shards !== manifest.shards) {
          throw new LedgerError('INVALID_OPTIONS', `the ledger has ${manifest.shards} shards, not ${shards}`);
        }
        if (accountsPerShard !== undefined && accountsPerShard !== manifest.accountsPerShard) {
          throw new LedgerError('INVALID_OPTIONS',
            `the ledger has ${manifest.accountsPerShard} accounts per shard, not ${accountsPerShard}`);
        }
      }
      const engineOptions = { wal, syncEvery, syncIntervalMs, maxUnsyncedRecords, checkpointEveryBytes, maxAccounts, readAhead };
      const recovery = Ledger.#recover(core, dir, manifest, engineOptions, fresh, repair, progress);
      removeMarker(dir);
      core.start();
      recovery.ms = performance.now() - started;
      const ledger = new Ledger(dir, core, engine.name, wal, recovery, checkpointIntervalMs);
      if (handleSignals) Ledger.#watchSignals(ledger);
      return ledger;
    } catch (e) {
      core.close();
      throw e;
    }
  }

  static #recover(core: EngineCore, dir: string, manifest: Manifest, o: EngineOptions,
    fresh: boolean, repair: boolean, progress: (p: Progress) => void): Recovery {
    const indexValid = core.open(manifest, o);
    // Only read here: an open that fails leaves the directory as it was.
    const marker = readMarker(dir);
    const logsEmpty = core.logsHeaderOnly();
    const recovery: Recovery = { mode: 'new', ms: 0, walRecordsReplayed: 0, walBytesDropped: 0, shardsRebuilt: 0, reason: '' };
    if (fresh) {
      core.checkpointSync(true, Counter.TRIGGER_OPEN); // starts the first log epoch
      recovery.reason = 'created';
      return recovery;
    }
    const markerOk = marker !== undefined && marker.epoch === manifest.epoch && marker.checkpointLsn === manifest.checkpointLsn;
    const stale = indexValid.flatMap((ok, i) => (ok ? [] : [i]));
    if (markerOk && logsEmpty && stale.length === 0) {
      recovery.mode = 'clean';
      recovery.reason = 'clean shutdown';
      return recovery;
    }
    recovery.reason = !marker ? 'no clean-shutdown marker'
      : !markerOk ? 'stale clean-shutdown marker: it names another checkpoint'
        : !logsEmpty ? 'stale clean-shutdown marker: the log has records'
          : 'index not valid for the last checkpoint';
    progress({ phase: 'replay', done: 0, total: 1 });
    const r = core.replay(indexValid, repair);
    if (repair && r.droppedBytes > 0) recovery.reason += `; repair dropped ${r.droppedBytes} log bytes after the valid prefix`;
    progress({ phase: 'replay', done: 1, total: 1 });
    recovery.mode = 'replay';
    recovery.walRecordsReplayed = r.records;
    recovery.walBytesDropped = r.droppedBytes;
    stale.forEach((shard, i) => {
      progress({ phase: 'rebuild', done: i, total: stale.length });
      core.rebuildIndex(shard);
    });
    if (stale.length > 0) {
      progress({ phase: 'rebuild', done: stale.length, total: stale.length });
      recovery.mode = 'rebuild';
      recovery.shardsRebuilt = stale.length;
      recovery.reason += `; index rebuilt for shard${stale.length > 1 ? 's' : ''} ${stale.join(', ')}`;
    }
    // Fold what was recovered into the shard files and start a new log epoch,
    // so that a cut-off tail can never be confused with new records.
    if (!logsEmpty || stale.length > 0) core.checkpointSync(true, Counter.TRIGGER_OPEN);
    return recovery;
  }

  #live(): EngineCore {
    const core = this.#core;
    if (!core || this.#closing) throw new LedgerError('CLOSED', 'ledger is closed');
    return core;
  }

  #fail(core: EngineCore, status: number): never {
    throw errorFor(status, status === BatchStatus.CORRUPTION || status === BatchStatus.IO_ERROR ? core.detail() : undefined);
  }

  /** Counts an operation refused by an argument check, by its result, as the engine counts the rest. */
  #refuse(op: number, e: unknown): void {
    const st = e instanceof LedgerError ? statusOfCode(e.code) : undefined;
    if (st !== undefined) this.#refused[Counter.OPS + op * Counter.STATUS_SLOTS + st]++;
  }

  /** Credits `amount` to `pubkey`, creating the account if absent. */
  mint(pubkey: Pubkey, amount: bigint | number): void {
    const core = this.#live();
    let key: Uint8Array;
    let value: bigint | number;
    try {
      key = keyBytes(pubkey);
      value = checkAmount(amount);
    } catch (e) {
      this.#refuse(Counter.OP_MINT, e);
      throw e;
    }
    const st = core.mint(key, value);
    if (st !== BatchStatus.OK) this.#fail(core, st);
  }

  /** Moves `amount` from `from` (which must exist) to `to` (created if absent): both or neither. */
  transfer(from: Pubkey, to: Pubkey, amount: bigint | number): void {
    const core = this.#live();
    let a: Uint8Array;
    let b: Uint8Array;
    let value: bigint | number;
    try {
      a = keyBytes(from);
      b = keyBytes(to);
      value = checkAmount(amount);
    } catch (e) {
      this.#refuse(Counter.OP_TRANSFER, e);
      throw e;
    }
    const st = core.transfer(a, b, value);
    if (st !== BatchStatus.OK) this.#fail(core, st);
  }

  get(pubkey: Pubkey): Account | undefined {
    const core = this.#live();
    const st = core.get(keyBytes(pubkey), this.#scratch);
    if (st === BatchStatus.OK) return decodeWith(this.#scratch, this.#scratchView);
    if (st === BatchStatus.ACCOUNT_NOT_FOUND) return undefined;
    this.#fail(core, st);
  }

  balance(pubkey: Pubkey): bigint {
    const core = this.#live();
    const st = core.get(keyBytes(pubkey), this.#scratch);
    if (st === BatchStatus.OK) {
      return this.#scratchView.getBigUint64(32, true);
    }
    if (st === BatchStatus.ACCOUNT_NOT_FOUND) return 0n;
    this.#fail(core, st);
  }

  /**
   * Applies N mints from `ops` (N x 40 bytes: pubkey[32], amount u64 LE) in
   * order; returns one BatchStatus byte per op. `ops` is read in place during
   * the call and not kept.
   */
  mintBatch(ops: Uint8Array): Uint8Array {
    const core = this.#live();
    const n = batchCount(ops, MINT_OP_SIZE, 'mintBatch');
    const statuses = new Uint8Array(n);
    core.mintBatch(ops, statuses);
    return statuses;
  }

  /** N x 72 bytes: from[32], to[32], amount u64 LE. As mintBatch. */
  transferBatch(ops: Uint8Array): Uint8Array {
    const core = this.#live();
    const n = batchCount(ops, TRANSFER_OP_SIZE, 'transferBatch');
    const statuses = new Uint8Array(n);
    core.transferBatch(ops, statuses);
    return statuses;
  }

  /**
   * Reads N accounts (N x 32-byte keys) into `out` (N x 128 bytes, all zero
   * where absent): copies of the records, owned by the caller. Throws
   * CORRUPTION if any record fails its checksum.
   */
  getBatch(pubkeys: Uint8Array, out?: Uint8Array): Uint8Array {
    const core = this.#live();
    const n = batchCount(pubkeys, 32, 'getBatch');
    const target = out ?? new Uint8Array(n * ACCOUNT_SIZE);
    if (!(target instanceof Uint8Array) || target.length < n * ACCOUNT_SIZE) {
      throw new LedgerError('INVALID_BATCH', `getBatch: out must be a Uint8Array of at least ${n * ACCOUNT_SIZE} bytes`);
    }
    core.getBatch(pubkeys, target);
    return target;
  }

  /** Resolves once every operation issued before the call is durable (group commit). */
  sync(): Promise<void> {
    let p: Promise<void>;
    try {
      const core = this.#live();
      // Without a log nothing is durable until a checkpoint.
      p = this.#wal ? core.sync() : this.checkpoint();
    } catch (e) {
      return Promise.reject(e);
    }
    this.#syncs.add(p);
    const settled = (): void => { this.#syncs.delete(p); };
    p.then(settled, settled);
    return p;
  }

  /**
   * Writes data and indexes back to their files in the background and starts a new log generation; resolves
   * once the checkpoint is committed. Operations go on meanwhile. A call while one runs joins it.
   */
  checkpoint(): Promise<void> {
    let core: EngineCore;
    try {
      core = this.#live();
    } catch (e) {
      return Promise.reject(e);
    }
    // A backup copies the files of the last checkpoint: the next one waits for it.
    if (this.#backup) return this.#backup.then(() => this.checkpoint(), () => this.checkpoint());
    return core.checkpoint(Counter.TRIGGER_EXPLICIT);
  }

  /** Checkpoints, writes the clean-shutdown marker and releases the directory. Idempotent. */
  close(): Promise<void> {
    return this.#shutdown(false);
  }

  /** close(); `settleSyncs` lets the sync() calls in flight settle first (a signal). New writes are CLOSED at once. */
  #shutdown(settleSyncs: boolean): Promise<void> {
    if (!this.#closing) {
      const core = this.#core!;
      clearInterval(this.#housekeeping);
      Ledger.#unwatchSignals(this);
      this.#closing = (async () => {
        try {
          if (settleSyncs) await Promise.allSettled([...this.#syncs]);
          // A backup in progress finishes first: the last checkpoint would change the files it copies.
          if (this.#backup) await this.#backup.catch(() => {});
          // Let a background checkpoint finish without holding up the event loop, then the final one.
          if (core.stats().checkpointInProgress) await core.checkpoint(Counter.TRIGGER_CLOSE).catch(() => {});
          core.checkpointSync(false, Counter.TRIGGER_CLOSE);
          crashPoint('close:after-checkpoint');
          const m = readManifest(this.dir)!;
          writeMarker(this.dir, { epoch: m.epoch, checkpointLsn: m.checkpointLsn });
          crashPoint('close:after-marker');
        } finally {
          core.close();
          this.#core = undefined;
        }
      })();
    }
    return this.#closing;
  }

  /**
   * Replication's record tap (src/replication.ts, docs/replication.md): while on, the engine keeps a copy of every
   * MINT, DEBIT and CREDIT log record it writes, in LSN order, until drainTap() returns them (whole 224-byte
   * records, docs/formats.md) and empties it. Not for applications: replicate() turns it on.
   */
  setTap(on: boolean): void {
    const core = this.#live();
    if (on && !this.#wal) throw new LedgerError('INVALID_OPTIONS', 'replication needs the log: this ledger was opened with wal: false');
    core.setTap(on);
  }

  drainTap(): Uint8Array {
    return this.#live().drainTap();
  }

  stats(): LedgerStats {
    const s = this.#live().stats();
    const shards = s.shards.map((x) => ({ ...x, loadFactor: x.accounts / x.capacity }));
    return { ...s, accounts: shards.reduce((n, x) => n + x.accounts, 0), shards };
  }

  /**
   * What the ledger counted since open (src/counters.ts): operations by result (refused ones too), log bytes
   * written, group fsyncs and their durations, checkpoints by trigger and their durations, damaged records met.
   * One call into the engine; registerMetrics reads it on each scrape.
   */
  counters(): LedgerCounters {
    return decodeCounters(this.#live().counters(), this.#refused);
  }

  /** When the last backup() succeeded, ms since the Unix epoch (0: never, since open). */
  get lastBackupAt(): number {
    return this.#lastBackupAt;
  }

  /**
   * A consistent copy of the ledger in `destDir` (which must not exist or be empty), while operations go on:
   * the state after exactly the operations up to the returned `lsn`. The copy opens as a ledger (mode 'clean');
   * restoring is opening it. A failure (IO_ERROR on a full disk, say) removes what was copied.
   *
   * How (docs/durability.md, "Online backup"): a background checkpoint is taken (its hand-over is the only
   * work on this thread); then checkpoints are held back (operations are not) while the files it committed
   * (shards, indexes, MANIFEST) and the log up to the LSN at its commit are copied on the libuv pool. Shard and
   * index files change only when a checkpoint writes back, and hold no change newer than that LSN. A worker
   * thread then opens the copy (replaying that log) and closes it cleanly.
   */
  backup(destDir: string, options: BackupOptions = {}): Promise<BackupResult> {
    let core: EngineCore;
    let dest: string;
    try {
      core = this.#live();
      if (typeof destDir !== 'string' || destDir.length === 0) {
        throw new LedgerError('INVALID_OPTIONS', 'backup: destDir must be a non-empty string');
      }
      if (options === null || typeof options !== 'object') throw new LedgerError('INVALID_OPTIONS', 'backup: options must be an object');
      if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
        throw new LedgerError('INVALID_OPTIONS', 'backup: onProgress must be a function');
      }
      dest = path.resolve(destDir);
      const own = path.resolve(this.dir);
      if (dest === own || dest.startsWith(own + path.sep) || own.startsWith(dest + path.sep)) {
        throw new LedgerError('INVALID_OPTIONS', `backup: ${destDir} overlaps the ledger's own directory`);
      }
      let entries: string[] | undefined;
      try {
        entries = fs.readdirSync(dest);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOTDIR') throw new LedgerError('INVALID_OPTIONS', `backup: ${destDir} is not a directory`);
        if (code !== 'ENOENT') throw new LedgerError('IO_ERROR', `backup: ${destDir}: ${(e as Error).message}`);
      }
      if (entries !== undefined && entries.length > 0) {
        throw new LedgerError('INVALID_OPTIONS', `backup: ${destDir} is not empty`);
      }
    } catch (e) {
      return Promise.reject(e);
    }
    const onProgress = options.onProgress ?? (() => {});
    // One backup at a time: a second waits for the first.
    const run = (this.#backup ?? Promise.resolve()).catch(() => {}).then(() => this.#runBackup(core, dest, onProgress));
    const tracked = run.finally(() => {
      if (this.#backup === tracked) this.#backup = undefined;
    });
    tracked.catch(() => {}); // the caller gets `run`; this copy only orders what waits for the backup
    this.#backup = tracked;
    return run;
  }

  async #runBackup(core: EngineCore, dest: string, onProgress: (p: BackupProgress) => void): Promise<BackupResult> {
    const started = performance.now();
    let created: string | undefined; // the directory this backup made, removed on failure
    const written: string[] = [];    // the files it wrote in a directory that was there
    core.pauseCheckpoints(true);
    try {
      this.#live();
      if (!fs.existsSync(dest)) created = fs.mkdirSync(dest, { recursive: true }) ?? dest;
      // The checkpoint the copy starts from: a running one is joined first (its hand-over was before this call),
      // then a fresh one holds everything issued before the call.
      if (core.stats().checkpointInProgress) await core.checkpoint(Counter.TRIGGER_EXPLICIT);
      await core.checkpoint(Counter.TRIGGER_EXPLICIT);
      // Its files may hold changes newer than its LSN (the write-back copies pages while operations go on), never
      // newer than the LSN now: the log up to here, replayed over them, gives exactly the state at `lsn`.
      const m = readManifest(this.dir)!;
      const lsn = core.stats().lsn;
      const ends = core.logEnds();
      const files: { name: string; size: number }[] = [];
      for (let shard = 0; shard < m.shards; shard++) {
        for (const prefix of ['shard', 'index'] as const) {
          const name = shardFile(prefix, shard, 'bin');
          files.push({ name, size: fs.statSync(path.join(this.dir, name)).size });
        }
        files.push({ name: walFile(shard, m.epoch), size: ends[shard] });
        // The other generation holds a header prepared for the next epoch and nothing the copy needs.
        files.push({ name: walFile(shard, m.epoch + 1n), size: WAL_RECORD_SIZE });
      }
      const total = files.reduce((n, f) => n + f.size, 0);
      let bytes = 0;
      onProgress({ bytes, total });
      for (const f of files) {
        const to = path.join(dest, f.name);
        written.push(to);
        await copyPrefix(path.join(this.dir, f.name), to, f.size);
        bytes += f.size;
        onProgress({ bytes, total });
      }
      // The manifest last: a copy cut short is no ledger.
      written.push(path.join(dest, MANIFEST_FILE));
      await writeDurably(path.join(dest, MANIFEST_FILE), await fs.promises.readFile(path.join(this.dir, MANIFEST_FILE)));
      await syncFile(dest);
      // The copy is opened once, off this thread (replay and its checkpoint would hold up operations here), and
      // closed: it then opens clean.
      const copied = await openAndClose(dest, this.#engineName, this.#wal);
      if (copied !== lsn) throw new LedgerError('IO_ERROR', `backup: the copy holds LSN ${copied}, expected ${lsn}`);
      this.#lastBackupAt = Date.now();
      return { lsn, bytes, ms: performance.now() - started };
    } catch (e) {
      // Nothing half-made is left behind: the directory this backup created, or the files it wrote.
      try {
        if (created !== undefined) fs.rmSync(created, { recursive: true, force: true });
        else for (const f of [...written, path.join(dest, MARKER_FILE), path.join(dest, 'LOCK')]) fs.rmSync(f, { force: true });
      } catch {
        // the error below says what went wrong first
      }
      if (e instanceof LedgerError) throw e;
      throw new LedgerError('IO_ERROR', `backup to ${dest}: ${(e as Error).message}`);
    } finally {
      if (this.#core === core) core.pauseCheckpoints(false);
    }
  }

  /**
   * SIGTERM/SIGINT with handleSignals: every such ledger stops new writes, lets its pending sync()s settle and
   * closes; then the process exits with 128 + the signal's number.
   */
  static readonly #onSignal = (signal: NodeJS.Signals): void => {
    if (shuttingDown) return; // a second signal while closing: the first one's exit follows
    shuttingDown = true;
    const code = 128 + os.constants.signals[signal];
    Promise.allSettled([...signalLedgers].map((l) => l.#shutdown(true))).finally(() => process.exit(code));
  };

  static #watchSignals(ledger: Ledger): void {
    if (signalLedgers.size === 0) for (const s of HANDLED_SIGNALS) process.on(s, Ledger.#onSignal);
    signalLedgers.add(ledger);
  }

  static #unwatchSignals(ledger: Ledger): void {
    if (!signalLedgers.delete(ledger)) return;
    if (signalLedgers.size === 0 && !shuttingDown) for (const s of HANDLED_SIGNALS) process.off(s, Ledger.#onSignal);
  }
}

async function syncFile(file: string): Promise<void> {
  const h = await fs.promises.open(file, 'r');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** The first `size` bytes of `from` into a new file `to`, on the libuv pool, then fsynced. */
async function copyPrefix(from: string, to: string, size: number): Promise<void> {
  const src = await fs.promises.open(from, 'r');
  try {
    const dst = await fs.promises.open(to, 'wx');
    try {
      const buf = Buffer.allocUnsafe(Math.min(size, COPY_CHUNK));
      for (let at = 0; at < size;) {
        const want = Math.min(buf.length, size - at);
        const { bytesRead } = await src.read(buf, 0, want, at);
        if (bytesRead !== want) throw new LedgerError('IO_ERROR', `backup: ${from} is shorter than ${size} bytes`);
        await dst.write(buf, 0, want, at);
        at += want;
      }
      await dst.sync();
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

/**
 * Opens the ledger in `dir` on a worker thread (its recovery replays the log copied with it) and closes it
 * cleanly; returns its LSN. The package is loaded from this file's own directory, so the worker runs this build.
 */
function openAndClose(dir: string, engine: string, wal: boolean): Promise<bigint> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { Ledger } = require(workerData.module);
    (async () => {
      const l = await Ledger.open(workerData.dir, { engine: workerData.engine, wal: workerData.wal, checkpointIntervalMs: 0 });
      const lsn = String(l.stats().lsn);
      await l.close();
      parentPort.postMessage({ lsn });
    })().catch((e) => parentPort.postMessage({ code: e.code, message: e.message }));`;
  return new Promise((resolve, reject) => {
    const worker = new Worker(code, { eval: true, workerData: { module: path.join(__dirname, 'index.js'), dir, engine, wal } });
    let settled = false;
    worker.once('message', (m: { lsn?: string; code?: string; message?: string }) => {
      settled = true;
      if (m.lsn !== undefined) resolve(BigInt(m.lsn));
      else reject(new LedgerError(m.code === 'CORRUPTION' ? 'CORRUPTION' : 'IO_ERROR', `backup: opening the copy failed: ${m.message}`));
    });
    worker.once('error', (e) => {
      settled = true;
      reject(new LedgerError('IO_ERROR', `backup: opening the copy failed: ${e.message}`));
    });
    worker.once('exit', () => {
      if (!settled) reject(new LedgerError('IO_ERROR', 'backup: the worker opening the copy exited'));
    });
  });
}

async function writeDurably(file: string, bytes: Uint8Array): Promise<void> {
  const h = await fs.promises.open(file, 'wx');
  try {
    await h.writeFile(bytes);
    await h.sync();
  } finally {
    await h.close();
  }
}

// ------------------------------------------------------------------ signals
// Ledgers opened with handleSignals. One pair of listeners serves them all; it is removed when the last one
// closes, so the process gets the default behaviour back.
const signalLedgers = new Set<Ledger>();
const HANDLED_SIGNALS = ['SIGTERM', 'SIGINT'] as const;
let shuttingDown = false;

/**
 * The housekeeping timer. It holds the ledger weakly (a ledger dropped without close is still collected, and its
 * native core releases the directory) and is unref'd (an open ledger never keeps the process alive by itself).
 */
function housekeeping(ref: WeakRef<Ledger>, work: (l: Ledger) => void): NodeJS.Timeout {
  const timer: NodeJS.Timeout = setInterval(() => {
    const ledger = ref.deref();
    if (ledger) work(ledger);
    else clearInterval(timer);
  }, HOUSEKEEPING_MS);
  timer.unref();
  return timer;
}

function batchCount(buf: Uint8Array, size: number, what: string): number {
  if (!(buf instanceof Uint8Array)) throw new LedgerError('INVALID_BATCH', `${what}: expected a Uint8Array`);
  if (buf.length % size !== 0) {
    throw new LedgerError('INVALID_BATCH', `${what}: length ${buf.length} is not a multiple of ${size}`);
  }
  return buf.length / size;
}
