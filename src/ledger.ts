import * as fs from 'node:fs';
import { randomInt } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { decodeAccount, type Account } from './account';
import { checkAmount } from './amount';
import { BatchStatus, LedgerError, errorFor } from './errors';
import type { Engine, EngineCore, EngineOptions, EngineStats } from './engine';
import {
  ACCOUNT_SIZE, MAX_ACCOUNTS_PER_SHARD, MINT_OP_SIZE, TRANSFER_OP_SIZE, type Manifest, readManifest, readMarker,
  removeMarker, writeMarker,
} from './format';
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
  #wal: boolean;
  #closing: Promise<void> | undefined;
  #housekeeping: NodeJS.Timeout | undefined;
  #releasing = false;
  #checkpointIntervalMs: number;
  #lastCheckpointAt = Date.now();
  // Reused for one-by-one reads: valid only until the next call into the core.
  readonly #scratch = new Uint8Array(ACCOUNT_SIZE);
  readonly #scratchView = new DataView(this.#scratch.buffer);

  private constructor(dir: string, core: EngineCore, wal: boolean, recovery: Recovery, checkpointIntervalMs: number) {
    this.dir = dir;
    this.#core = core;
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
    if (this.#checkpointIntervalMs > 0 && !s.checkpointInProgress && !s.readOnly && s.walBytes > 0 &&
      Date.now() - this.#lastCheckpointAt >= this.#checkpointIntervalMs) {
      this.#lastCheckpointAt = Date.now();
      // A failure turns the ledger read-only; writes and sync() report it.
      core.checkpoint().catch(() => {});
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
      const engineOptions = { wal, syncEvery, syncIntervalMs, maxUnsyncedRecords, checkpointEveryBytes, maxAccounts };
      const recovery = Ledger.#recover(core, dir, manifest, engineOptions, fresh, repair, progress);
      removeMarker(dir);
      core.start();
      recovery.ms = performance.now() - started;
      return new Ledger(dir, core, wal, recovery, checkpointIntervalMs);
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
      core.checkpointSync(true); // starts the first log epoch
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
    if (!logsEmpty || stale.length > 0) core.checkpointSync(true);
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

  /** Credits `amount` to `pubkey`, creating the account if absent. */
  mint(pubkey: Pubkey, amount: bigint | number): void {
    const core = this.#live();
    const key = keyBytes(pubkey);
    const st = core.mint(key, checkAmount(amount));
    if (st !== BatchStatus.OK) this.#fail(core, st);
  }

  /** Moves `amount` from `from` (which must exist) to `to` (created if absent): both or neither. */
  transfer(from: Pubkey, to: Pubkey, amount: bigint | number): void {
    const core = this.#live();
    const a = keyBytes(from);
    const b = keyBytes(to);
    const st = core.transfer(a, b, checkAmount(amount));
    if (st !== BatchStatus.OK) this.#fail(core, st);
  }

  get(pubkey: Pubkey): Account | undefined {
    const core = this.#live();
    const st = core.get(keyBytes(pubkey), this.#scratch);
    if (st === BatchStatus.OK) return decodeAccount(this.#scratch);
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
  async sync(): Promise<void> {
    const core = this.#live();
    if (!this.#wal) return this.checkpoint(); // nothing is durable without a log until a checkpoint
    return core.sync();
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
    return core.checkpoint();
  }

  /** Checkpoints, writes the clean-shutdown marker and releases the directory. Idempotent. */
  close(): Promise<void> {
    if (!this.#closing) {
      const core = this.#core!;
      clearInterval(this.#housekeeping);
      this.#closing = (async () => {
        try {
          // Let a background checkpoint finish without holding up the event loop, then the final one.
          if (core.stats().checkpointInProgress) await core.checkpoint().catch(() => {});
          core.checkpointSync(false);
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

  stats(): LedgerStats {
    const s = this.#live().stats();
    const shards = s.shards.map((x) => ({ ...x, loadFactor: x.accounts / x.capacity }));
    return { ...s, accounts: shards.reduce((n, x) => n + x.accounts, 0), shards };
  }
}

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
