/**
 * The pure-TypeScript engine: native/core.cpp in TypeScript, on the same
 * files, with the same statuses, the same recovery passes and the same
 * checkpoint protocol and crash points (docs/durability.md).
 *
 * Differences that come from having one thread:
 *   - Log records reach the kernel with one positioned write per operation
 *     (per shard touched) or, for batches, per batch: before the call returns,
 *     so an acknowledged operation survives kill -9 as with the native log.
 *   - Group commit runs on the libuv pool (fs.fdatasync); sync() waits for it.
 *     A writer that would leave more than maxUnsyncedRecords records unsynced
 *     syncs inline (fdatasync on this thread) instead of waiting for the
 *     syncer thread. The syncIntervalMs rule is an unref'd timer.
 *   - A background checkpoint hands over on the calling turn, as native, but
 *     its write-back runs as slices on the event loop (setImmediate, about a
 *     millisecond of work each) instead of on a thread, with its fsyncs on the
 *     libuv pool: see "background checkpoint" below.
 */
import { BatchStatus, LedgerError, errorFor } from '../errors';
import type { EngineCore, EngineOptions, EngineStats, ReplayResult } from '../engine';
import { MANIFEST_FILE, WalType, encodeManifest, type Manifest } from '../format';
import { bucketOf, hashKeyBytes, hashKeyWords, loadKeyBytes, loadKeyWords, shardOf } from './hash';
import {
  A_LAMPORTS, A_LSN, Chunk, SEG_MASK, SEG_SHIFT, SLICE_PAGES, Shard, WRITEBACK_PAGES, globalCut, type ScannedLog,
  type ShardManifest,
} from './shard';
import {
  EIO_TEXT, closeFile, crashPoint, dataSyncOrThrow, dataSync, injectFsyncFailure, errText, fail, loadHooks, openDir,
  renameTemp, replaceFile, statusOf, syncDir, writeTemp,
} from './io';
import { DirLock } from './lock';
import { Supply } from './supply';
import { Counter, observe } from '../counters';
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';

const TWO32 = 4294967296;
const MAX_TIMER_MS = 0x7fffffff;
/** Operations of a batch whose cache misses are overlapped (see mintBatch). */
const PF = 16;
/** Work a background-checkpoint slice does on the event loop before it lets the loop go on (ms). */
const SLICE_MS = 1;
/** A slowed writer finds the event loop starved when it has not turned for this long (ms): see slowDown. */
const STARVED_MS = 5;
/** What a slowed writer sleeps on (Atomics.wait with a timeout: nobody ever notifies it). */
const SLEEP = new Int32Array(new SharedArrayBuffer(4));
/** Page-CRC table entries a slice writes (256 KiB of table, and its CRC). */
const TABLE_SLICE = 65536;
// What the steps of a background checkpoint wait for when they yield (Background.wait).
/** Nothing: the rest of the slice's time, or the next turn of the event loop. */
const SLICE = 0;
/** The log durable up to Background.waitLsn (a group fsync). */
const DURABLE = 1;
/** fdatasync of Background.waitFds. */
const FSYNC = 2;

const OK = BatchStatus.OK;
const INVALID_AMOUNT = BatchStatus.INVALID_AMOUNT;
const SAME_ACCOUNT = BatchStatus.SAME_ACCOUNT;
const ACCOUNT_NOT_FOUND = BatchStatus.ACCOUNT_NOT_FOUND;
const INSUFFICIENT_FUNDS = BatchStatus.INSUFFICIENT_FUNDS;
const OVERFLOW = BatchStatus.OVERFLOW;
const CAPACITY_EXCEEDED = BatchStatus.CAPACITY_EXCEEDED;
const CORRUPTION = BatchStatus.CORRUPTION;
const IO_ERROR = BatchStatus.IO_ERROR;
const CLOSED = BatchStatus.CLOSED;
/** Where the counts of each operation's results start in the counters (src/counters.ts). */
const MINT_COUNTS = Counter.OPS + Counter.OP_MINT * Counter.STATUS_SLOTS;
const TRANSFER_COUNTS = Counter.OPS + Counter.OP_TRANSFER * Counter.STATUS_SLOTS;

interface Waiter {
  target: number;
  resolve: () => void;
  reject: (e: Error) => void;
}

function toShardManifest(m: Manifest): ShardManifest {
  return {
    shards: m.shards,
    accountsPerShard: m.accountsPerShard,
    indexCapacity: m.indexCapacity,
    seed: m.seed >>> 0,
    epoch: Number(m.epoch),
    checkpointLsn: Number(m.checkpointLsn),
  };
}

/**
 * A background checkpoint in progress: the manifest it commits, its promise, and its steps (a generator,
 * JsCore.backgroundSteps) with what they wait for at their last yield.
 */
class Background {
  /** Epoch E+1 and the LSN at the hand-over (C'). */
  readonly next: ShardManifest;
  /** The supply at C', and what started this checkpoint (Counter.TRIGGER_*). */
  readonly supply: bigint;
  readonly trigger: number;
  readonly handedOverAt = performance.now();
  readonly promise: Promise<void>;
  resolve!: () => void;
  reject!: (e: Error) => void;
  steps!: Generator<void, void, void>;
  wait = SLICE;
  waitLsn = 0;
  readonly waitFds: number[] = [];
  readonly waitNames: string[] = [];
  /** The steps may go on: what they wait for has happened (false while a group fsync or an fsync is out). */
  met = true;
  /**
   * Callbacks of waits carry the token of their time. When this thread drives the steps on by itself (a
   * foreground checkpoint, a slowed writer) it meets the wait itself and bumps the token: older callbacks
   * then change nothing (but a failed fsync still fails the ledger).
   */
  token = 0;
  immediate: NodeJS.Immediate | undefined;

  constructor(next: ShardManifest, supply: bigint, trigger: number) {
    this.next = next;
    this.supply = supply;
    this.trigger = trigger;
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // A write may have started it with nobody listening: its failure shows as the ledger turning read-only.
    this.promise.catch(() => {});
  }

  /** The steps yield next for the fdatasync of the files they push to waitFds (and waitNames). */
  fsync(): void {
    this.wait = FSYNC;
    this.waitFds.length = 0;
    this.waitNames.length = 0;
  }

}

export class JsCore implements EngineCore {
  private readonly dir: string;
  private lock: DirLock | undefined;
  private manifest: ShardManifest = { shards: 0, accountsPerShard: 0, indexCapacity: 0, seed: 0, epoch: 0, checkpointLsn: 0 };
  private wal = true;
  private syncEvery = 1000;
  private syncIntervalMs = 1000;
  /** Log records that may be unsynced at once (unbounded without a log). */
  private maxUnsynced = Infinity;
  private checkpointEvery = 64 * 1024 * 1024;
  /** Accounts the ledger may hold (0: no limit but each shard's), and those it holds (counted from start()). */
  private maxAccounts = 0;
  private accounts = 0;
  private shards: Shard[] = [];
  private nshards = 0;
  private seed = 0;
  private closed = false;
  private started = false;
  private detailMsg = '';
  private tsLo = 0;
  private tsHi = 0;

  private lsn = 0;
  private records = 0; // log records appended since open
  private kickedAt = 0; // records at the last kick
  private appendedLsn = 0;
  private durableLsn = 0;
  private durableRecords = 0;
  private firstUnsyncedMs = 0;
  private rounds = 0; // group fsyncs done (stats().fsyncs)
  private failed = false;
  private failure = '';
  /** Total minted up to lsn. */
  private readonly supply = new Supply();
  /** What stats and metrics read (src/counters.ts); operations add one to a slot. */
  private readonly counts = new Float64Array(Counter.SLOTS);
  /** The checkpoint policy starts none while a backup copies the files (pauseCheckpoints). */
  private checkpointsPaused = false;

  // ---- log generations and checkpoints
  /** Epoch of the records appended now: the manifest's, or the next one while a background checkpoint runs. */
  private logEpoch = 0;
  /** The file of logEpoch + 1 holds a fresh header: a background checkpoint may hand over to it. */
  private nextPrepared = false;
  /** Log bytes appended since the last hand-over (or foreground checkpoint): the active generation's records. */
  private handoverBytes = 0;
  /** Log bytes of the generation a background checkpoint is folding in, until it commits. */
  private committingBytes = 0;
  private bg: Background | undefined;
  /** This write call has been slowed for a checkpoint the log outran (once per call). */
  private throttled = false;
  private chunk: Chunk | undefined;
  private checkpoints = 0;
  private lastCheckpointMs = 0;
  private lastCheckpointAt = 0;
  private readonly pumpBound = (bg: Background): void => this.pump(bg);
  /** Set by a slowed writer, cleared at the next turn of the event loop: the loop is starved while it stays. */
  private heartbeat: NodeJS.Immediate | undefined;
  private heartbeatAt = 0;
  private readonly heartbeatBound = (): void => {
    this.heartbeat = undefined;
  };

  /** Shards with records in their staging buffers. */
  private readonly pending: Shard[] = [];
  private kickPending = false;
  private roundBusy = false;
  private roundAgain = false;
  private waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** fdatasyncs in flight on the pool: the descriptors in fdsToClose stay open until they finish. */
  private inflight = 0;
  private fdsToClose: number[] = [];
  // Batch scratch: hashes and first index entries of a group of operations.
  private readonly hashA = new Uint32Array(PF);
  private readonly hashB = new Uint32Array(PF);
  private readonly entryA = new Uint32Array(PF);
  private readonly entryB = new Uint32Array(PF);
  private sink = 0;

  constructor(dir: string) {
    this.dir = dir;
    loadHooks();
    this.lock = new DirLock(dir, this);
  }

  private live(): void {
    if (this.closed) throw errorFor(CLOSED, 'ledger is closed');
  }

  // ------------------------------------------------------------------ open and recovery

  create(m: Manifest): void {
    this.live();
    const sm = toShardManifest(m);
    for (let i = 0; i < sm.shards; i++) Shard.create(this.dir, i, sm);
    syncDir(this.dir);
    replaceFile(this.dir, MANIFEST_FILE, encodeManifest(m));
  }

  open(m: Manifest, o: EngineOptions): boolean[] {
    this.live();
    this.manifest = toShardManifest(m);
    this.supply.set(m.supply);
    this.logEpoch = this.manifest.epoch;
    this.wal = o.wal;
    this.syncEvery = o.syncEvery >>> 0;
    this.syncIntervalMs = o.syncIntervalMs >>> 0;
    this.maxUnsynced = o.wal ? o.maxUnsyncedRecords : Infinity;
    this.checkpointEvery = o.checkpointEveryBytes;
    this.maxAccounts = o.maxAccounts;
    this.seed = this.manifest.seed;
    this.nshards = this.manifest.shards;
    const valid: boolean[] = [];
    for (let i = 0; i < this.manifest.shards; i++) {
      const s = new Shard(this.dir, i, this.manifest);
      this.shards.push(s);
      for (const fd of s.fds()) this.lock!.hold.fds.add(fd);
      valid.push(s.loadIndex(this.manifest));
    }
    this.lsn = this.manifest.checkpointLsn;
    this.durableLsn = this.lsn;
    this.appendedLsn = this.lsn;
    return valid;
  }

  logsHeaderOnly(): boolean {
    this.live();
    const e = this.manifest.epoch;
    let all = true;
    for (const s of this.shards) {
      // The file of E: a header and nothing after it. The file of E+1 may hold a header prepared for it,
      // anything stale or nothing, but no record of E+1 (a background checkpoint was running); nor may the
      // index be the one such a checkpoint wrote.
      all = s.headerOnly(s.logOf(e), e) && all;
      all = !s.holdsRecordsOf(s.logOf(e + 1), e + 1) && !s.indexAhead && all;
    }
    return all;
  }

  replay(indexValid: boolean[], repair: boolean): ReplayResult {
    this.live();
    const epoch = this.manifest.epoch;
    const checkpoint = this.manifest.checkpointLsn;
    // Shard by shard, the generation of the manifest's epoch, then the next.
    const files: (ScannedLog & { shard: Shard })[] = [];
    try {
      let droppedBytes = 0;
      for (const s of this.shards) {
        for (let e = epoch; e <= epoch + 1; e++) {
          const log = s.logOf(e);
          const scan = s.scanLog(log, e, checkpoint);
          droppedBytes += scan.droppedBytes;
          files.push({ shard: s, log, scan });
        }
      }
      const { base, cut, corruption } = globalCut(files, checkpoint);
      if (corruption !== undefined && !repair) fail(CORRUPTION, corruption);
      const dropped = { bytes: droppedBytes };
      let records = 0;
      for (const f of files) {
        const applied = f.shard.applyLog(f.log, cut, indexValid[f.shard.number] === true, dropped, this.supply);
        // What we replayed may still be only in the page cache (the crash was a
        // kill, not a power cut). It must be durable before the checkpoint that
        // follows writes shard pages derived from it.
        if (applied > 0) dataSyncOrThrow(f.log.fd, f.log.name);
        records += applied;
      }
      // Nothing applied: back to the checkpoint. (Not `cut - 1`: when an incomplete wal:false image
      // journal moved `base` to its LSN, cut - 1 would name operations whose effects are lost.)
      const lastLsn = cut > base ? cut - 1 : checkpoint;
      this.lsn = lastLsn;
      this.durableLsn = lastLsn;
      this.appendedLsn = lastLsn;
      return { records, droppedBytes: dropped.bytes, lastLsn: BigInt(lastLsn) };
    } finally {
      for (const f of files) f.log.closeScan();
    }
  }

  rebuildIndex(shard: number): void {
    this.live();
    this.shards[shard].rebuildIndex();
  }

  start(): void {
    this.live();
    this.started = true;
    this.accounts = 0;
    for (const s of this.shards) this.accounts += s.count;
    if (!this.wal || this.nextPrepared) return;
    // The next generation's file must hold a fresh header before a background
    // checkpoint can hand over to it; after a clean open it usually does.
    const next = this.logEpoch + 1;
    const now = Date.now();
    for (const s of this.shards) {
      const log = s.logOf(next);
      if (s.headerOnly(log, next)) continue;
      s.resetLog(log, next, now);
      dataSyncOrThrow(log.fd, log.name);
    }
    this.nextPrepared = true;
  }

  // ------------------------------------------------------------------ syncing

  private settleWaiters(): void {
    if (this.waiters.length === 0) return;
    if (this.failed) {
      const ws = this.waiters;
      this.waiters = [];
      for (const w of ws) w.reject(errorFor(IO_ERROR, `ledger is read-only after a failed fsync: ${this.failure}`));
      return;
    }
    if (this.closed) {
      const ws = this.waiters;
      this.waiters = [];
      for (const w of ws) w.resolve(); // close checkpointed everything it had
      return;
    }
    const keep: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.target <= this.durableLsn) w.resolve();
      else keep.push(w);
    }
    this.waiters = keep;
  }

  private setFailed(message: string): void {
    if (!this.failed) {
      this.failure = message;
      this.failed = true;
    }
  }

  /** One group fsync on this thread (native RoundLocked): every log file past the durable LSN; false when the ledger has failed. */
  private roundNow(): boolean {
    if (this.failed) return false;
    this.flushAll();
    if (this.failed) return false;
    const records = this.records;
    const lsn = this.appendedLsn;
    const durable = this.durableLsn;
    if (lsn > durable) {
      const started = performance.now();
      const shards = this.shards;
      sync: for (let i = 0; i < shards.length; i++) {
        const logs = shards[i].logs;
        for (let g = 0; g < logs.length; g++) {
          const log = logs[g];
          if (log.lastLsn <= durable) continue;
          const err = dataSync(log.fd);
          if (err !== undefined) {
            // Never retried: after a failed fsync the kernel may have dropped the
            // dirty pages, so a later success would prove nothing.
            this.setFailed(`fsync ${log.name}: ${err}`);
            break sync;
          }
        }
      }
      if (!this.failed) {
        this.durableRecords = Math.max(this.durableRecords, records);
        this.durableLsn = Math.max(this.durableLsn, lsn);
        this.rounds++;
        observe(this.counts, Counter.FSYNC_HISTOGRAM, Counter.FSYNC_BOUNDS_US, (performance.now() - started) * 1000);
      }
    } else {
      this.durableRecords = Math.max(this.durableRecords, records);
    }
    this.settleWaiters();
    return !this.failed;
  }

  /** Starts one group fsync on the libuv pool (at most one at a time). */
  private startRound(): void {
    if (this.closed) return;
    if (this.roundBusy) {
      this.roundAgain = true;
      return;
    }
    this.roundAgain = false;
    if (this.failed) {
      this.settleWaiters();
      return;
    }
    // Staging buffers are empty here: rounds start between operations only.
    const records = this.records;
    const lsn = this.appendedLsn;
    const durable = this.durableLsn;
    if (lsn <= durable) {
      this.durableRecords = Math.max(this.durableRecords, records);
      this.settleWaiters();
      return;
    }
    this.roundBusy = true;
    const started = performance.now();
    let left = 1; // released after the loop
    let error: string | undefined;
    const done = (): void => {
      if (--left !== 0) return;
      this.roundBusy = false;
      if (this.closed) {
        this.settleWaiters();
        return;
      }
      if (error !== undefined) this.setFailed(error);
      else if (!this.failed) {
        this.durableRecords = Math.max(this.durableRecords, records);
        this.durableLsn = Math.max(this.durableLsn, lsn);
        this.rounds++;
        observe(this.counts, Counter.FSYNC_HISTOGRAM, Counter.FSYNC_BOUNDS_US, (performance.now() - started) * 1000);
      }
      this.settleWaiters();
      if (this.roundAgain || this.waiters.length > 0) this.startRound();
      else if (this.appendedLsn > this.durableLsn) this.armTimer();
    };
    sync: for (const s of this.shards) {
      for (const log of s.logs) {
        if (log.lastLsn <= durable) continue;
        if (injectFsyncFailure()) {
          error = `fsync ${log.name}: ${EIO_TEXT}`;
          break sync;
        }
        left++;
        this.inflight++;
        const name = log.name;
        fs.fdatasync(log.fd, (e) => {
          this.poolOpDone();
          if (e && error === undefined) error = `fsync ${name}: ${errText(e)}`;
          done();
        });
      }
    }
    done();
  }

  /** After every fdatasync on the pool: descriptors waiting for it to finish may close now. */
  private poolOpDone(): void {
    if (--this.inflight === 0 && this.fdsToClose.length > 0) this.releaseFds();
  }

  private armTimer(): void {
    if (this.timer !== undefined || !this.wal || this.closed) return;
    this.setTimer(this.syncIntervalMs);
  }

  private setTimer(ms: number): void {
    // Through a WeakRef: a pending timer must not keep a dropped ledger from being collected.
    const ref = new WeakRef(this);
    this.timer = setTimeout(() => ref.deref()?.onTimer(), Math.min(Math.max(1, Math.ceil(ms)), MAX_TIMER_MS));
    this.timer.unref();
  }

  private onTimer(): void {
    this.timer = undefined;
    if (this.closed || this.failed) return;
    if (this.appendedLsn <= this.durableLsn) return;
    const age = performance.now() - this.firstUnsyncedMs;
    if (age >= this.syncIntervalMs) this.startRound();
    else this.setTimer(this.syncIntervalMs - age);
  }

  sync(): Promise<void> {
    this.live();
    const target = this.lsn;
    if (this.failed) {
      return Promise.reject(errorFor(IO_ERROR, `ledger is read-only after a failed fsync: ${this.failure}`));
    }
    if (this.durableLsn >= target) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.waiters.push({ target, resolve, reject });
      this.startRound();
    });
  }

  // ------------------------------------------------------------------ log staging

  /** Writes every staged record to the kernel. A failed write fails the ledger (its changes are in memory only). */
  private flushAll(): void {
    const p = this.pending;
    for (let i = 0; i < p.length; i++) {
      const s = p[i];
      s.listed = false;
      try {
        s.flush();
      } catch (e) {
        s.staged = 0;
        const msg = e instanceof Error ? e.message : String(e);
        this.setFailed(msg);
        this.detailMsg = msg;
      }
    }
    p.length = 0;
  }

  private append(s: Shard, type: number, slot: number, lsn: number, legs: number, leg: number, aLo: number, aHi: number,
    supply?: bigint): void {
    if (!s.listed) {
      s.listed = true;
      this.pending.push(s);
    }
    try {
      s.append(type, slot, lsn, this.logEpoch, legs, leg, aLo, aHi, this.tsLo, this.tsHi, this.durableLsn, supply);
    } catch (e) {
      // A full staging buffer could not be written out: the change is in memory only.
      const msg = e instanceof Error ? e.message : String(e);
      this.setFailed(msg);
      this.detailMsg = msg;
      throw e;
    }
    this.handoverBytes += 224;
    this.counts[Counter.WAL_WRITTEN_BYTES] += 224;
    if (this.tap !== undefined && type !== WalType.IMAGE) this.tapRecord(s.stage!, s.staged - 224);
  }

  /** Replication's record tap (src/replication.ts; native: Core::SetTap): a copy of each MINT/DEBIT/CREDIT record. */
  private tap: Buffer | undefined;
  private tapped = 0;

  private tapRecord(from: Buffer, at: number): void {
    let tap = this.tap!;
    if (this.tapped + 224 > tap.length) {
      const bigger = Buffer.allocUnsafe(Math.max(tap.length * 2, 224 * 1024));
      tap.copy(bigger, 0, 0, this.tapped);
      tap = this.tap = bigger;
    }
    from.copy(tap, this.tapped, at, at + 224);
    this.tapped += 224;
  }

  setTap(on: boolean): void {
    this.tap = on ? Buffer.allocUnsafe(224 * 1024) : undefined;
    this.tapped = 0;
  }

  drainTap(): Buffer {
    if (this.tap === undefined) return Buffer.alloc(0);
    const out = Buffer.from(this.tap.subarray(0, this.tapped));
    this.tapped = 0;
    return out;
  }

  /** After every operation or batch: its records into the kernel, then a group fsync if one is due. */
  private finish(): boolean {
    const failedBefore = this.failed;
    if (this.pending.length > 0) this.flushAll();
    if (this.kickPending) {
      this.kickPending = false;
      this.startRound();
    }
    return !failedBefore && this.failed;
  }

  /** At the start of every write call. */
  private stamp(): void {
    const now = Date.now();
    this.tsLo = now >>> 0;
    this.tsHi = Math.floor(now / TWO32);
    this.throttled = false;
  }

  // ------------------------------------------------------------------ operations

  /** Room for a new account in `s`: maxAccounts, then the shard's own (it grows; a full disk is IO_ERROR). */
  private room(s: Shard): number {
    if (this.maxAccounts > 0 && this.accounts >= this.maxAccounts) return CAPACITY_EXCEEDED;
    try {
      return s.room();
    } catch (e) {
      this.detailMsg = (e as Error).message;
      return statusOf(e);
    }
  }

  private corrupt(s: Shard, slot: number): number {
    this.detailMsg = `account record failed its checksum: ${s.dataName} slot ${slot}`;
    this.counts[Counter.CORRUPTION]++;
    return CORRUPTION;
  }

  /** Room in the logs, the checkpoint policy, the bound on unsynced records (native Core::Admit). */
  private admit(a: Shard, b: Shard | null): number {
    if (this.closed) return CLOSED;
    if (this.failed) return IO_ERROR;
    if (!this.wal) return OK;
    try {
      if (this.bg === undefined) {
        if (this.handoverBytes >= this.checkpointEvery && !this.checkpointsPaused) this.beginBackground(Counter.TRIGGER_BYTES);
      } else if (!this.throttled && this.handoverBytes + this.committingBytes > 2 * this.checkpointEvery) {
        // The log has outrun the checkpoint: the call is slowed (see slowDown), once per call as native.
        this.throttled = true;
        this.slowDown();
        if (this.failed) return IO_ERROR;
      }
      let n = 2;
      if (b !== null && b !== a) {
        a.reserve(1);
        b.reserve(1);
      } else {
        a.reserve(b !== null ? 2 : 1);
        n = b !== null ? 2 : 1;
      }
      const durable = this.durableRecords;
      if (this.records === durable) {
        this.firstUnsyncedMs = performance.now();
        this.armTimer();
      }
      if (this.records !== durable && this.records + n - durable > this.maxUnsynced) {
        // At the bound of unsynced records: sync here (the pool's callbacks
        // cannot run until this call returns), so that a power cut never loses more.
        if (!this.roundNow()) return IO_ERROR;
      }
    } catch (e) {
      this.detailMsg = (e as Error).message;
      return statusOf(e);
    }
    return OK;
  }

  private published(lsn: number, records: number): void {
    this.records += records;
    this.appendedLsn = lsn;
    if (this.wal && this.records - this.kickedAt >= this.syncEvery) {
      this.kickedAt = this.records;
      this.kickPending = true;
    }
  }

  /** Mint of the key in K. */
  private mintK(hash: number, aLo: number, aHi: number): number {
    if (aLo === 0 && aHi === 0) return INVALID_AMOUNT;
    const s = this.shards[shardOf(hash, this.nshards)];
    const found = s.find(hash);
    if (found >= 0) {
      if (!s.valid(found)) return this.corrupt(s, found);
      const u = s.segs32[found >>> SEG_SHIFT];
      const w = (found & SEG_MASK) << 5;
      const carry = u[w + A_LAMPORTS] + aLo >= TWO32 ? 1 : 0;
      if (u[w + A_LAMPORTS + 1] + aHi + carry >= TWO32) return OVERFLOW;
    } else {
      const room = this.room(s);
      if (room !== OK) return room;
    }
    const pos = s.pos;
    const st = this.admit(s, null);
    if (st !== OK) return st;
    const lsn = ++this.lsn;
    let slot: number;
    if (found >= 0) {
      slot = found;
      const u = s.segs32[slot >>> SEG_SHIFT];
      const w = (slot & SEG_MASK) << 5;
      const lo = u[w + A_LAMPORTS] + aLo;
      const carry = lo >= TWO32 ? 1 : 0;
      s.update(slot, lo >>> 0, u[w + A_LAMPORTS + 1] + aHi + carry, lsn >>> 0, Math.floor(lsn / TWO32));
    } else {
      slot = s.create(hash, pos, lsn);
      this.accounts++;
      const u = s.segs32[slot >>> SEG_SHIFT];
      const w = (slot & SEG_MASK) << 5;
      u[w + A_LAMPORTS] = aLo;
      u[w + A_LAMPORTS + 1] = aHi;
      u[w + A_LSN] = lsn >>> 0;
      u[w + A_LSN + 1] = Math.floor(lsn / TWO32);
      s.seal(slot);
    }
    this.supply.add(aLo, aHi);
    if (this.wal) this.append(s, WalType.MINT, slot, lsn, 1, 0, aLo, aHi);
    this.published(lsn, this.wal ? 1 : 0);
    return OK;
  }

  /**
   * Transfer; `fromHash` is the hash of `from`, whose words are in K on entry; `to` (hash `toHash`)
   * is read from ops[toOff..] (the caller has checked from != to).
   */
  private transferK(fromHash: number, toHash: number, ops: Uint8Array, ops32: Uint32Array | null, toOff: number,
    aLo: number, aHi: number): number {
    const sf = this.shards[shardOf(fromHash, this.nshards)];
    const f = sf.find(fromHash);
    if (f < 0) return ACCOUNT_NOT_FOUND;
    if (!sf.valid(f)) return this.corrupt(sf, f);
    const uf = sf.segs32[f >>> SEG_SHIFT];
    const wf = (f & SEG_MASK) << 5;
    const fLo = uf[wf + A_LAMPORTS];
    const fHi = uf[wf + A_LAMPORTS + 1];
    if (fHi < aHi || (fHi === aHi && fLo < aLo)) return INSUFFICIENT_FUNDS;
    if (ops32 !== null) loadKeyWords(ops32, toOff >>> 2);
    else loadKeyBytes(ops, toOff);
    const st = this.shards[shardOf(toHash, this.nshards)];
    const t = st.find(toHash);
    if (t >= 0) {
      if (!st.valid(t)) return this.corrupt(st, t);
      const u = st.segs32[t >>> SEG_SHIFT];
      const w = (t & SEG_MASK) << 5;
      const carry = u[w + A_LAMPORTS] + aLo >= TWO32 ? 1 : 0;
      if (u[w + A_LAMPORTS + 1] + aHi + carry >= TWO32) return OVERFLOW;
    } else {
      const room = this.room(st);
      if (room !== OK) return room;
    }
    const pos = st.pos;
    const status = this.admit(sf, st);
    if (status !== OK) return status;
    const lsn = ++this.lsn;
    const lsnLo = lsn >>> 0;
    const lsnHi = Math.floor(lsn / TWO32);
    const toSlot = t >= 0 ? t : st.create(toHash, pos, lsn);
    if (t < 0) this.accounts++;
    // debit
    {
      const u = sf.segs32[f >>> SEG_SHIFT];
      const lo = u[wf + A_LAMPORTS] - aLo;
      const borrow = lo < 0 ? 1 : 0;
      sf.update(f, (lo + borrow * TWO32) >>> 0, u[wf + A_LAMPORTS + 1] - aHi - borrow, lsnLo, lsnHi);
    }
    // credit
    {
      const u = st.segs32[toSlot >>> SEG_SHIFT];
      const w = (toSlot & SEG_MASK) << 5;
      if (t >= 0) {
        const lo = u[w + A_LAMPORTS] + aLo;
        const carry = lo >= TWO32 ? 1 : 0;
        st.update(toSlot, lo >>> 0, u[w + A_LAMPORTS + 1] + aHi + carry, lsnLo, lsnHi);
      } else {
        u[w + A_LAMPORTS] = aLo;
        u[w + A_LAMPORTS + 1] = aHi;
        u[w + A_LSN] = lsnLo;
        u[w + A_LSN + 1] = lsnHi;
        st.seal(toSlot);
      }
    }
    if (this.wal) {
      this.append(sf, WalType.DEBIT, f, lsn, 2, 0, aLo, aHi);
      this.append(st, WalType.CREDIT, toSlot, lsn, 2, 1, aLo, aHi);
    }
    this.published(lsn, this.wal ? 2 : 0);
    return OK;
  }

  /** Get of the key in K into out[outOff..outOff+128). */
  private getK(hash: number, out: Uint8Array, outOff: number): number {
    const s = this.shards[shardOf(hash, this.nshards)];
    const found = s.find(hash);
    if (found < 0) return ACCOUNT_NOT_FOUND;
    if (!s.valid(found)) return this.corrupt(s, found);
    const off = (found & SEG_MASK) * 128;
    s.segs[found >>> SEG_SHIFT].copy(out, outOff, off, off + 128);
    return OK;
  }

  /** An I/O error thrown in the middle of an operation (reading a page, say) becomes its status. */
  private opError(e: unknown): number {
    const st = statusOf(e);
    this.detailMsg = (e as Error).message;
    return st;
  }

  mint(key: Uint8Array, amount: bigint | number): number {
    this.live();
    const [aLo, aHi] = splitAmount(amount);
    this.stamp();
    let st: number;
    try {
      st = aLo === 0 && aHi === 0 ? INVALID_AMOUNT : this.mintK(hashKeyBytes(key, 0, this.seed), aLo, aHi);
    } catch (e) {
      st = this.opError(e);
    }
    if (this.finish() && st === OK) st = IO_ERROR;
    this.counts[MINT_COUNTS + st]++;
    return st;
  }

  transfer(from: Uint8Array, to: Uint8Array, amount: bigint | number): number {
    this.live();
    const [aLo, aHi] = splitAmount(amount);
    if (aLo === 0 && aHi === 0) return this.countTransfer(INVALID_AMOUNT);
    if (sameKey(from, 0, to, 0)) return this.countTransfer(SAME_ACCOUNT);
    this.stamp();
    let st: number;
    try {
      const toHash = hashKeyBytes(to, 0, this.seed);
      const fromHash = hashKeyBytes(from, 0, this.seed);
      st = this.transferK(fromHash, toHash, to, null, 0, aLo, aHi);
    } catch (e) {
      st = this.opError(e);
    }
    if (this.finish() && st === OK) st = IO_ERROR;
    return this.countTransfer(st);
  }

  private countTransfer(st: number): number {
    this.counts[TRANSFER_COUNTS + st]++;
    return st;
  }

  /** A batch's operations are counted once it is done: a failed write turns statuses already given into IO_ERROR. */
  private countBatch(at: number, statuses: Uint8Array): void {
    const c = this.counts;
    for (let i = 0; i < statuses.length; i++) c[at + statuses[i]]++;
  }

  get(key: Uint8Array, out: Uint8Array): number {
    this.live();
    try {
      return this.getK(hashKeyBytes(key, 0, this.seed), out, 0);
    } catch (e) {
      return this.opError(e);
    }
  }

  // Batches run in groups of PF operations: first the keys of the group are hashed, then their
  // index entries and then their records are read once, with nothing depending on the result, so
  // the CPU overlaps the cache misses of the whole group; then the operations run, in order, on
  // warm lines. The hashes are kept for them.

  /** First index entry for `hash` (a read that warms the line); 0 or slot+1 (or garbage: only a hint). */
  private peek(hash: number): number {
    const s = this.shards[shardOf(hash, this.nshards)];
    return s.idx[bucketOf(hash, s.mask) * 2];
  }

  private touch(hash: number, e: number): number {
    return this.shards[shardOf(hash, this.nshards)].touch(e);
  }

  mintBatch(ops: Uint8Array, statuses: Uint8Array): void {
    this.live();
    const n = statuses.length;
    const ops32 = (ops.byteOffset & 3) === 0 ? new Uint32Array(ops.buffer, ops.byteOffset, ops.length >>> 2) : null;
    const seed = this.seed;
    const hs = this.hashA;
    const es = this.entryA;
    let sink = 0;
    this.stamp();
    for (let base = 0; base < n; base += PF) {
      const m = Math.min(PF, n - base);
      for (let j = 0, o = base * 40; j < m; j++, o += 40) {
        hs[j] = ops32 !== null ? hashKeyWords(ops32, o >>> 2, seed) : hashKeyBytes(ops, o, seed);
      }
      for (let j = 0; j < m; j++) es[j] = this.peek(hs[j]);
      for (let j = 0; j < m; j++) sink ^= this.touch(hs[j], es[j]);
      for (let j = 0, i = base, o = base * 40; j < m; j++, i++, o += 40) {
        let aLo: number;
        let aHi: number;
        if (ops32 !== null) {
          const w = o >>> 2;
          aLo = ops32[w + 8];
          aHi = ops32[w + 9];
          loadKeyWords(ops32, w);
        } else {
          aLo = le32(ops, o + 32);
          aHi = le32(ops, o + 36);
          loadKeyBytes(ops, o);
        }
        try {
          statuses[i] = this.mintK(hs[j], aLo, aHi);
        } catch (e) {
          statuses[i] = this.opError(e);
        }
      }
    }
    this.sink = sink;
    if (this.finish()) failStatuses(statuses);
    this.countBatch(MINT_COUNTS, statuses);
  }

  transferBatch(ops: Uint8Array, statuses: Uint8Array): void {
    this.live();
    const n = statuses.length;
    const ops32 = (ops.byteOffset & 3) === 0 ? new Uint32Array(ops.buffer, ops.byteOffset, ops.length >>> 2) : null;
    const seed = this.seed;
    const hf = this.hashA;
    const ht = this.hashB;
    const ef = this.entryA;
    const et = this.entryB;
    let sink = 0;
    this.stamp();
    for (let base = 0; base < n; base += PF) {
      const m = Math.min(PF, n - base);
      for (let j = 0, o = base * 72; j < m; j++, o += 72) {
        if (ops32 !== null) {
          hf[j] = hashKeyWords(ops32, o >>> 2, seed);
          ht[j] = hashKeyWords(ops32, (o >>> 2) + 8, seed);
        } else {
          hf[j] = hashKeyBytes(ops, o, seed);
          ht[j] = hashKeyBytes(ops, o + 32, seed);
        }
      }
      for (let j = 0; j < m; j++) {
        ef[j] = this.peek(hf[j]);
        et[j] = this.peek(ht[j]);
      }
      for (let j = 0; j < m; j++) sink ^= this.touch(hf[j], ef[j]) ^ this.touch(ht[j], et[j]);
      for (let j = 0, i = base, o = base * 72; j < m; j++, i++, o += 72) {
        let st: number;
        try {
          if (ops32 !== null) {
            const w = o >>> 2;
            const aLo = ops32[w + 16];
            const aHi = ops32[w + 17];
            if (aLo === 0 && aHi === 0) st = INVALID_AMOUNT;
            else if (ops32[w] === ops32[w + 8] && ops32[w + 1] === ops32[w + 9] && ops32[w + 2] === ops32[w + 10] &&
              ops32[w + 3] === ops32[w + 11] && ops32[w + 4] === ops32[w + 12] && ops32[w + 5] === ops32[w + 13] &&
              ops32[w + 6] === ops32[w + 14] && ops32[w + 7] === ops32[w + 15]) st = SAME_ACCOUNT;
            else {
              loadKeyWords(ops32, w);
              st = this.transferK(hf[j], ht[j], ops, ops32, o + 32, aLo, aHi);
            }
          } else {
            const aLo = le32(ops, o + 64);
            const aHi = le32(ops, o + 68);
            if (aLo === 0 && aHi === 0) st = INVALID_AMOUNT;
            else if (sameKey(ops, o, ops, o + 32)) st = SAME_ACCOUNT;
            else {
              loadKeyBytes(ops, o);
              st = this.transferK(hf[j], ht[j], ops, null, o + 32, aLo, aHi);
            }
          }
        } catch (e) {
          st = this.opError(e);
        }
        statuses[i] = st;
      }
    }
    this.sink = sink;
    if (this.finish()) failStatuses(statuses);
    this.countBatch(TRANSFER_COUNTS, statuses);
  }

  getBatch(keys: Uint8Array, out: Uint8Array): void {
    this.live();
    const n = Math.floor(keys.length / 32);
    const keys32 = (keys.byteOffset & 3) === 0 ? new Uint32Array(keys.buffer, keys.byteOffset, n * 8) : null;
    const seed = this.seed;
    const hs = this.hashA;
    const es = this.entryA;
    let sink = 0;
    for (let base = 0; base < n; base += PF) {
      const m = Math.min(PF, n - base);
      for (let j = 0, i = base; j < m; j++, i++) {
        hs[j] = keys32 !== null ? hashKeyWords(keys32, i * 8, seed) : hashKeyBytes(keys, i * 32, seed);
      }
      for (let j = 0; j < m; j++) es[j] = this.peek(hs[j]);
      for (let j = 0; j < m; j++) sink ^= this.touch(hs[j], es[j]);
      for (let j = 0, i = base; j < m; j++, i++) {
        let st: number;
        try {
          if (keys32 !== null) loadKeyWords(keys32, i * 8);
          else loadKeyBytes(keys, i * 32);
          st = this.getK(hs[j], out, i * 128);
        } catch (e) {
          st = this.opError(e);
        }
        if (st === ACCOUNT_NOT_FOUND) out.fill(0, i * 128, i * 128 + 128);
        else if (st !== OK) throw errorFor(st, this.detailMsg);
      }
    }
    this.sink = sink;
  }

  // ------------------------------------------------------------------ checkpoint

  private anyDirty(): boolean {
    for (const s of this.shards) if (s.anyDirty) return true;
    return false;
  }

  /** wal:false: the images about to be written back, logged as one transaction first. */
  private writeImageJournal(): void {
    let total = 0;
    for (const s of this.shards) total += s.imageSlots();
    if (total === 0) return;
    this.stamp();
    let leg = 0;
    const lsn = this.lsn;
    const supply = this.supply.value();
    for (const s of this.shards) {
      const n = s.imageSlots();
      if (n === 0) continue;
      s.reserve(n);
      s.forEachDirtySlot((slot) => this.append(s, WalType.IMAGE, slot, lsn, total, leg++, 0, 0, supply));
    }
    const failedBefore = this.failed;
    this.flushAll();
    if (!failedBefore && this.failed) throw errorFor(IO_ERROR, this.failure);
    for (const s of this.shards) if (s.log.lastLsn !== 0) dataSyncOrThrow(s.log.fd, s.log.name);
  }

  /** A checkpoint committed (foreground or background): stats() and the counters. */
  private committed(ms: number, trigger: number): void {
    this.checkpoints++;
    this.lastCheckpointMs = Math.round(ms);
    this.lastCheckpointAt = Date.now();
    this.counts[Counter.CHECKPOINTS + trigger]++;
    observe(this.counts, Counter.CHECKPOINT_HISTOGRAM, Counter.CHECKPOINT_BOUNDS_US, ms * 1000);
  }

  checkpointSync(force: boolean, trigger: number): void {
    this.live();
    // A background checkpoint in progress is finished first, here: this runs at open and close only.
    const bg = this.bg;
    if (bg !== undefined) this.driveInline(bg, true);
    if (this.failed) throw errorFor(IO_ERROR, `ledger is read-only after a failure: ${this.failure}`);
    if (!force && !this.anyDirty() && this.lsn === this.manifest.checkpointLsn) return;
    const started = performance.now();
    try {
      // One table per index, written whole: a rehash in progress is finished
      // (the foreground checkpoint holds everything up anyway).
      for (const s of this.shards) s.finishRehash();
      // Epoch E+2: records of E+1 that a crashed background checkpoint may have
      // left in the other file become stale with the commit.
      const next: ShardManifest = { ...this.manifest, epoch: this.manifest.epoch + 2, checkpointLsn: this.lsn };
      // 1. The log first: every change about to reach the shard files must be
      //    durable in the log, so a torn write-back is repaired by replay.
      if (this.wal) {
        if (!this.roundNow()) throw errorFor(IO_ERROR, this.failure);
      } else if (this.started) {
        this.writeImageJournal();
      }
      // Before start() the only changes are those replay copied from the log,
      // which replay made durable: the log covers them already, in either mode.
      crashPoint('checkpoint:after-wal-sync');
      for (const s of this.shards) s.writeBackData();
      crashPoint('checkpoint:after-data-sync');
      for (const s of this.shards) s.writeIndex(next);
      crashPoint('checkpoint:after-index');
      // 2. The commit point: the manifest names the new epoch, and records of
      //    the old one are never replayed again.
      replaceFile(this.dir, MANIFEST_FILE, encodeShardManifest(next, this.supply.value()));
      this.manifest = next;
      crashPoint('checkpoint:after-manifest');
      // 3. Fresh logs: the active generation, and the next one prepared for a background checkpoint. The
      //    checkpoint of a recovery (before start) empties the files, so that damage it cut is not met again.
      const now = Date.now();
      for (const s of this.shards) {
        for (let e = next.epoch; e <= next.epoch + 1; e++) {
          const log = s.logOf(e);
          s.resetLog(log, e, now, !this.started);
          dataSyncOrThrow(log.fd, log.name);
        }
        s.log = s.logOf(next.epoch);
        s.clearDirty();
      }
      crashPoint('checkpoint:after-wal-reset');
      this.logEpoch = next.epoch;
      this.nextPrepared = true;
      this.handoverBytes = 0;
      this.committingBytes = 0;
      this.durableRecords = this.records;
      this.durableLsn = this.lsn;
      this.appendedLsn = this.lsn;
      this.committed(performance.now() - started, trigger);
      this.settleWaiters();
    } catch (e) {
      if (e instanceof LedgerError) {
        this.failure = e.message;
        this.failed = true;
        this.settleWaiters();
      }
      throw e;
    }
  }

  checkpoint(trigger: number): Promise<void> {
    this.live();
    if (this.bg !== undefined) return this.bg.promise;
    try {
      if (!this.wal || !this.started) {
        this.checkpointSync(false, trigger);
        return Promise.resolve();
      }
      const bg = this.beginBackground(trigger);
      return bg === undefined ? Promise.resolve() : bg.promise;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  maintain(): boolean {
    // Nothing to give back: this engine's pages are its own heap memory, not a file mapping.
    return false;
  }

  // ------------------------------------------------------------------ background checkpoint
  //
  // The hand-over runs on the calling turn (beginBackground). The write-back is
  // a generator (backgroundSteps) that yields whenever it waits: for the next
  // turn of the event loop (SLICE), for the log to be durable to an LSN
  // (DURABLE: a group fsync), or for fsyncs of its own (FSYNC). pump() runs it
  // on the event loop, at most about SLICE_MS per turn, its fsyncs on the libuv
  // pool; driveInline() runs it on this thread, blocking on its waits, for a
  // foreground checkpoint (to the end) or a slowed writer (one slice).
  // Operations go on between slices and go to the file of E+1.

  /** The hand-over (short, on this thread); undefined when there is nothing to do. */
  private beginBackground(trigger: number): Background | undefined {
    if (this.failed) throw errorFor(IO_ERROR, `ledger is read-only after a failure: ${this.failure}`);
    if (!this.anyDirty() && this.lsn === this.manifest.checkpointLsn) return undefined;
    if (!this.nextPrepared) throw errorFor(IO_ERROR, 'checkpoint: the next log generation is not prepared');
    // What is staged goes to the old generation; the dirty pages become the
    // checkpoint's; appends move to the next generation.
    this.flushAll();
    if (this.failed) throw errorFor(IO_ERROR, this.failure);
    const next: ShardManifest = { ...this.manifest, epoch: this.logEpoch + 1, checkpointLsn: this.lsn };
    for (const s of this.shards) {
      s.capture();
      s.log = s.logOf(next.epoch);
    }
    this.logEpoch = next.epoch;
    this.nextPrepared = false;
    this.committingBytes = this.handoverBytes;
    this.handoverBytes = 0;
    const bg = new Background(next, this.supply.value(), trigger);
    bg.steps = this.backgroundSteps(bg);
    this.bg = bg;
    crashPoint('checkpoint:after-handover');
    this.schedule(bg);
    return bg;
  }

  /**
   * The write-back of a background checkpoint (native Core::WriteCheckpoint, on its thread there). Every
   * `yield` waits for what bg.wait says. Pages may hold changes newer than C' (operations go on between the
   * steps): up to WRITEBACK_PAGES are copied (a slice at a time), then the log is made durable as far as the
   * LSN after the last copy, then the copies are written, so the files never hold a change the log could lose.
   */
  private *backgroundSteps(bg: Background): Generator<void, void, void> {
    const next = bg.next;
    const chunk = (this.chunk ??= new Chunk());
    const shards = this.shards;
    // 1. The log durable up to C'.
    bg.wait = DURABLE;
    bg.waitLsn = next.checkpointLsn;
    yield;
    crashPoint('checkpoint:after-wal-sync');
    // 2. The captured data pages, then an fsync of every shard file.
    for (const s of shards) {
      const dataPages = s.capturedData.length; // the pages at the hand-over (the file may have grown since)
      for (let page = 0; page < dataPages;) {
        chunk.n = 0;
        while (page < dataPages && chunk.n < WRITEBACK_PAGES) {
          page = s.copyCapturedData(page, chunk, SLICE_PAGES);
          bg.wait = SLICE;
          yield;
        }
        if (chunk.n === 0) continue;
        bg.wait = DURABLE;
        bg.waitLsn = this.lsn;
        yield;
        for (let i = 0; i < chunk.n; i += SLICE_PAGES) {
          s.planDataWrites(chunk, i, Math.min(chunk.n, i + SLICE_PAGES));
          chunk.writePlanned(s.dataFd, s.dataName);
          bg.wait = SLICE;
          yield;
        }
      }
    }
    crashPoint('checkpoint:after-data-write');
    bg.fsync();
    for (const s of shards) {
      bg.waitFds.push(s.dataFd);
      bg.waitNames.push(s.dataName);
    }
    yield;
    crashPoint('checkpoint:after-data-sync');
    // 3. The captured index pages (CRC of each copy), the page-CRC table, a header naming E+1, C' and the
    //    count at the hand-over; then an fsync of every index file.
    for (const s of shards) {
      if (s.capturedIdxBytes === undefined) {
        // A rehash ran at the hand-over: the index file names no checkpoint (fsynced with the others below).
        s.invalidateIndexHeader();
        continue;
      }
      const indexPages = s.capturedIdx.length;
      if (s.capturedIndexCapacity !== s.fileCapacity) {
        // A resized table (Shard.resizeIndexFile): the header invalid and durable before the new layout.
        s.invalidateIndexHeader();
        bg.fsync();
        bg.waitFds.push(s.indexFd);
        bg.waitNames.push(s.indexName);
        yield;
        s.extendIndexFile(s.capturedIndexCapacity);
      }
      for (let page = 0; page < indexPages;) {
        chunk.n = 0;
        while (page < indexPages && chunk.n < WRITEBACK_PAGES) {
          page = s.copyCapturedIndex(page, chunk, SLICE_PAGES);
          bg.wait = SLICE;
          yield;
        }
        if (chunk.n === 0) continue;
        bg.wait = DURABLE;
        bg.waitLsn = this.lsn;
        yield;
        for (let i = 0; i < chunk.n; i += SLICE_PAGES) {
          const to = Math.min(chunk.n, i + SLICE_PAGES);
          s.planIndexWrites(chunk, i, to);
          chunk.writePlanned(s.indexFd, s.indexName);
          s.indexCopiesWritten(chunk, i, to);
          bg.wait = SLICE;
          yield;
        }
      }
      let table = 0xffffffff;
      for (let first = 0; first < indexPages; first += TABLE_SLICE) {
        table = s.writeIndexTable(first, Math.min(TABLE_SLICE, indexPages - first), table);
        bg.wait = SLICE;
        yield;
      }
      s.writeIndexHeader(next, s.capturedCount, ~table >>> 0, s.capturedIndexCapacity,
        s.indexRebuilds === s.capturedRebuilds);
    }
    bg.fsync();
    for (const s of shards) {
      bg.waitFds.push(s.indexFd);
      bg.waitNames.push(s.indexName);
    }
    yield;
    crashPoint('checkpoint:after-index');
    // 4. The commit point: MANIFEST names E+1 and C' (replaceFile, with its fsyncs on the pool).
    const tmp = writeTemp(this.dir, MANIFEST_FILE, encodeShardManifest(next, bg.supply));
    try {
      bg.fsync();
      bg.waitFds.push(tmp);
      bg.waitNames.push(MANIFEST_FILE);
      yield;
    } finally {
      this.closeLater(tmp);
    }
    renameTemp(this.dir, MANIFEST_FILE);
    const dirFd = openDir(this.dir);
    try {
      bg.fsync();
      bg.waitFds.push(dirFd);
      bg.waitNames.push('directory');
      yield;
    } finally {
      this.closeLater(dirFd);
    }
    this.manifest = next;
    this.committingBytes = 0;
    this.committed(performance.now() - bg.handedOverAt, bg.trigger);
    crashPoint('checkpoint:after-manifest');
    // 5. The old generation is obsolete: its file is prepared for the next one (E+2).
    const now = Date.now();
    bg.fsync();
    for (const s of shards) {
      const log = s.logOf(next.epoch + 1);
      s.resetLog(log, next.epoch + 1, now);
      bg.waitFds.push(log.fd);
      bg.waitNames.push(log.name);
    }
    yield;
    crashPoint('checkpoint:after-wal-reset');
    this.nextPrepared = true;
  }

  private schedule(bg: Background): void {
    if (bg.immediate === undefined) bg.immediate = setImmediate(this.pumpBound, bg);
  }

  /** One slice on the event loop: runs the steps for up to SLICE_MS, or until they wait for I/O. */
  private pump(bg: Background): void {
    bg.immediate = undefined;
    if (this.bg !== bg || this.closed) return;
    const until = performance.now() + SLICE_MS;
    try {
      for (;;) {
        if (bg.steps.next().done) {
          this.backgroundDone(bg);
          return;
        }
        if (bg.wait === SLICE) {
          if (performance.now() < until) continue;
          this.schedule(bg);
          return;
        }
        if (bg.wait === DURABLE && this.durableLsn >= bg.waitLsn) continue;
        bg.met = false;
        if (bg.wait === DURABLE) this.awaitDurable(bg);
        else this.fsyncOnPool(bg);
        return;
      }
    } catch (e) {
      this.backgroundFailed(bg, e);
    }
  }

  /** The steps wait for a group fsync: one is started (or joined) on the pool. */
  private awaitDurable(bg: Background): void {
    const token = bg.token;
    this.waiters.push({
      target: bg.waitLsn,
      resolve: () => this.waitMet(bg, token),
      reject: (e) => this.waitFailed(bg, token, e),
    });
    this.startRound();
  }

  /** The steps wait for fsyncs of their own: all of them at once on the pool. */
  private fsyncOnPool(bg: Background): void {
    const token = bg.token;
    let left = 1; // released after the loop
    let error: string | undefined;
    const done = (): void => {
      if (--left !== 0) return;
      if (error !== undefined) this.waitFailed(bg, token, errorFor(IO_ERROR, error));
      else this.waitMet(bg, token);
    };
    for (let i = 0; i < bg.waitFds.length; i++) {
      const name = bg.waitNames[i];
      if (injectFsyncFailure()) {
        error ??= `fsync ${name}: ${EIO_TEXT}`;
        break;
      }
      left++;
      this.inflight++;
      fs.fdatasync(bg.waitFds[i], (e) => {
        this.poolOpDone();
        if (e && error === undefined) error = `fsync ${name}: ${errText(e)}`;
        done();
      });
    }
    done();
  }

  private waitMet(bg: Background, token: number): void {
    if (token !== bg.token || this.bg !== bg || this.closed) return;
    bg.met = true;
    this.schedule(bg);
  }

  private waitFailed(bg: Background, token: number, e: Error): void {
    if (this.closed) return;
    if (token === bg.token && this.bg === bg) {
      this.backgroundFailed(bg, e);
      return;
    }
    // A wait this thread met by itself meanwhile. A failed fsync still counts: it is never retried, and
    // the fsync that succeeded after it proves nothing.
    this.setFailed(e.message);
    this.settleWaiters();
  }

  /**
   * Drives the background checkpoint on this thread, blocking on what it waits for (a group fsync, fsyncs of
   * its own): to its end (`whole`), or for about one slice. Throws its failure.
   */
  private driveInline(bg: Background, whole: boolean): void {
    if (bg.immediate !== undefined) {
      clearImmediate(bg.immediate);
      bg.immediate = undefined;
    }
    bg.token++; // the callbacks of waits already on the pool change nothing from here on
    const until = performance.now() + SLICE_MS;
    try {
      if (!bg.met) this.meetNow(bg);
      for (;;) {
        if (bg.steps.next().done) {
          this.backgroundDone(bg);
          return;
        }
        if (bg.wait === SLICE) {
          if (!whole && performance.now() >= until) break;
          continue;
        }
        this.meetNow(bg);
      }
    } catch (e) {
      throw this.backgroundFailed(bg, e);
    }
    bg.met = true;
    this.schedule(bg);
  }

  /** Meets the wait of the steps on this thread. */
  private meetNow(bg: Background): void {
    if (bg.wait === DURABLE) {
      if (this.durableLsn < bg.waitLsn && !this.roundNow()) {
        throw errorFor(IO_ERROR, `ledger is read-only after a failed fsync: ${this.failure}`);
      }
    } else if (bg.wait === FSYNC) {
      for (let i = 0; i < bg.waitFds.length; i++) dataSyncOrThrow(bg.waitFds[i], bg.waitNames[i]);
    }
    bg.met = true;
  }

  private backgroundDone(bg: Background): void {
    if (this.bg === bg) this.bg = undefined;
    bg.resolve();
  }

  /** A step failed: the ledger turns read-only and the checkpoint's promise rejects. Returns the error. */
  private backgroundFailed(bg: Background, e: unknown): LedgerError {
    const err = e instanceof LedgerError ? e : errorFor(IO_ERROR, e instanceof Error ? e.message : String(e));
    if (this.bg === bg) this.bg = undefined;
    bg.token++;
    if (bg.immediate !== undefined) {
      clearImmediate(bg.immediate);
      bg.immediate = undefined;
    }
    try {
      bg.steps.return(); // runs its `finally` blocks when it stopped at a yield
    } catch {
      // it had ended already
    }
    for (const s of this.shards) s.dropCaptured();
    this.setFailed(err.message);
    this.detailMsg = err.message;
    this.settleWaiters();
    bg.reject(err);
    return err;
  }

  /**
   * A write call found the log since the last commit past twice checkpointEveryBytes while a checkpoint runs.
   * Native makes the call wait up to a millisecond for the checkpoint's thread. Here the checkpoint needs this
   * thread, and a loop of synchronous writes would starve it, so the call works for it instead: when the
   * checkpoint can go on, the call runs a slice of it; when it waits for I/O on the pool, the call sleeps up to a
   * millisecond as native does (the pool works meanwhile), unless the event loop has not turned since the last
   * slowed call some milliseconds ago (its callbacks cannot run): then the call meets the wait itself, blocking on
   * the fsync. Writers are slowed, never stopped, and a starved checkpoint still finishes.
   */
  private slowDown(): void {
    const bg = this.bg;
    if (bg === undefined) return;
    // What the call staged so far goes to the kernel first: a group fsync the slice starts covers it.
    this.flushAll();
    if (this.failed) return;
    try {
      if (bg.met) {
        if (bg.immediate !== undefined) {
          clearImmediate(bg.immediate);
          bg.immediate = undefined;
        }
        this.pump(bg);
        return;
      }
      const now = performance.now();
      if (this.heartbeat !== undefined && now - this.heartbeatAt >= STARVED_MS) {
        this.driveInline(bg, false);
        return;
      }
      if (this.heartbeat === undefined) {
        this.heartbeatAt = now;
        this.heartbeat = setImmediate(this.heartbeatBound);
      }
      Atomics.wait(SLEEP, 0, 0, SLICE_MS);
    } catch {
      // the ledger is read-only now; the caller sees that
    }
  }

  // ------------------------------------------------------------------ close and stats

  /** Closes `fd` once no fdatasync is in flight on the pool (it may be on this very descriptor). */
  private closeLater(fd: number): void {
    this.fdsToClose.push(fd);
    if (this.inflight === 0) this.releaseFds();
  }

  private releaseFds(): void {
    if (this.inflight > 0) return;
    for (const fd of this.fdsToClose) {
      this.lock?.hold.fds.delete(fd);
      closeFile(fd);
    }
    this.fdsToClose = [];
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.heartbeat !== undefined) clearImmediate(this.heartbeat);
    this.heartbeat = undefined;
    const bg = this.bg;
    if (bg !== undefined) {
      // Ledger.close() finishes a checkpoint in progress first (checkpointSync). One still here is
      // abandoned: its files are as a crash would leave them, which recovery handles.
      this.bg = undefined;
      bg.token++;
      if (bg.immediate !== undefined) clearImmediate(bg.immediate);
      bg.immediate = undefined;
      try {
        bg.steps.return();
      } catch {
        // it had ended already
      }
      bg.reject(errorFor(CLOSED, 'ledger closed before its checkpoint committed'));
    }
    this.settleWaiters();
    for (const s of this.shards) {
      this.fdsToClose.push(...s.fds());
      s.forgetFds();
    }
    this.shards = [];
    const lock = this.lock;
    this.lock = undefined;
    // The descriptors of fsyncs still in flight close when they finish; the
    // directory is free now (those fsyncs only touch the files' own inodes).
    if (lock) for (const fd of this.fdsToClose) lock.hold.fds.delete(fd);
    this.releaseFds();
    lock?.release();
  }

  stats(): EngineStats {
    this.live();
    return {
      lsn: BigInt(this.lsn),
      durableLsn: BigInt(this.wal ? this.durableLsn : this.manifest.checkpointLsn),
      checkpointLsn: BigInt(this.manifest.checkpointLsn),
      supply: this.supply.value(),
      walBytes: this.handoverBytes + this.committingBytes,
      checkpoints: this.checkpoints,
      checkpointInProgress: this.bg !== undefined,
      lastCheckpointMs: this.lastCheckpointMs,
      lastCheckpointAt: this.lastCheckpointAt,
      fsyncs: this.rounds,
      readOnly: this.failed,
      shards: this.shards.map((s) => ({
        accounts: s.count, capacity: s.capacity, indexRebuilds: s.indexRebuilds, indexCapacity: s.mask + 1,
        indexResizes: s.indexResizes,
      })),
    };
  }

  detail(): string {
    this.live();
    return this.detailMsg;
  }

  counters(): Float64Array {
    this.live();
    const c = this.counts.slice();
    c[Counter.WAL_FSYNCS] = this.rounds;
    return c;
  }

  logEnds(): number[] {
    this.live();
    return this.shards.map((s) => s.log.pos + s.staged);
  }

  pauseCheckpoints(paused: boolean): void {
    this.checkpointsPaused = paused;
  }
}

function encodeShardManifest(m: ShardManifest, supply: bigint): Buffer {
  return encodeManifest({
    shards: m.shards, accountsPerShard: m.accountsPerShard, indexCapacity: m.indexCapacity, seed: m.seed,
    epoch: BigInt(m.epoch), checkpointLsn: BigInt(m.checkpointLsn), supply,
  });
}

function le32(b: Uint8Array, o: number): number {
  return (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
}

function sameKey(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < 32; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

const SPLIT: [number, number] = [0, 0];
/** An amount as two u32 halves (the Ledger has checked it is an integer in 1..2^64-1). */
function splitAmount(amount: bigint | number): [number, number] {
  if (typeof amount === 'bigint') {
    const v = BigInt.asUintN(64, amount);
    SPLIT[0] = Number(v & 0xffffffffn);
    SPLIT[1] = Number(v >> 32n);
  } else {
    const v = Math.trunc(amount);
    SPLIT[0] = v >>> 0;
    SPLIT[1] = v >= 0 ? Math.floor(v / TWO32) >>> 0 : 0;
  }
  return SPLIT;
}

/** After a failed log write, nothing the batch did is acknowledged. */
function failStatuses(statuses: Uint8Array): void {
  for (let i = 0; i < statuses.length; i++) if (statuses[i] === OK) statuses[i] = IO_ERROR;
}

