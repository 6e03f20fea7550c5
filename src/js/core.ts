/**
 * The pure-TypeScript engine: native/core.cpp in TypeScript, on the same
 * files, with the same statuses, the same recovery passes and the same
 * checkpoint protocol and crash points.
 *
 * Differences that come from having one thread:
 *   - Log records reach the kernel with one positioned write per operation
 *     (per shard touched) or, for batches, per batch: before the call returns,
 *     so an acknowledged operation survives kill -9 as with the native shared
 *     log mapping.
 *   - Group commit runs on the libuv pool (fs.fdatasync); sync() waits for it.
 *     A writer that gets a whole window (syncEvery x WINDOW_ROUNDS records)
 *     ahead of the disk syncs inline (fdatasync on this thread) instead of
 *     waiting for the syncer thread. The syncIntervalMs rule is an unref'd
 *     timer.
 */
import { BatchStatus, LedgerError, errorFor } from '../errors';
import type { EngineCore, EngineOptions, EngineStats, ReplayResult } from '../engine';
import { MANIFEST_FILE, WalType, encodeManifest, type Manifest } from '../format';
import { bucketOf, hashKeyBytes, hashKeyWords, loadKeyBytes, loadKeyWords, shardOf } from './hash';
import { A_LAMPORTS, A_LSN, Shard, type ShardManifest } from './shard';
import {
  EIO_TEXT, closeFile, crashPoint, dataSyncOrThrow, dataSync, injectFsyncFailure, errText, loadHooks, replaceFile,
  statusOf, syncDir,
} from './io';
import { DirLock } from './lock';
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';

/** Past this much log since the last checkpoint, the next write checkpoints first. */
const AUTO_CHECKPOINT_BYTES = 512 * 1024 * 1024;
/** Groups of syncEvery records a writer may run ahead of the disk (native/core.hpp kWindowRounds). */
export const WINDOW_ROUNDS = 64;
const UNBOUNDED_WINDOW = 0xffffffff;
const TWO32 = 4294967296;
const SEG_MASK = (1 << 24) - 1;
const MAX_TIMER_MS = 0x7fffffff;
/** Operations of a batch whose cache misses are overlapped (see mintBatch). */
const PF = 16;

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

export class JsCore implements EngineCore {
  private readonly dir: string;
  private lock: DirLock | undefined;
  private manifest: ShardManifest = { shards: 0, accountsPerShard: 0, indexCapacity: 0, seed: 0, epoch: 0, checkpointLsn: 0 };
  private wal = true;
  private syncEvery = 1000;
  private syncIntervalMs = 1000;
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
  private walTotal = 0; // log bytes since the last checkpoint
  private appendedLsn = 0;
  private durableLsn = 0;
  private durableRecords = 0;
  private firstUnsyncedMs = 0;
  private rounds = 0; // group fsyncs done (stats().fsyncs)
  private failed = false;
  private failure = '';

  /** Shards with records in their staging buffers. */
  private readonly pending: Shard[] = [];
  private kickPending = false;
  private roundBusy = false;
  private roundAgain = false;
  private waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** fdatasyncs in flight on the pool: their descriptors stay open until they finish. */
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

  private window(): number {
    return this.wal ? Math.min(this.syncEvery * WINDOW_ROUNDS, UNBOUNDED_WINDOW - 1) : UNBOUNDED_WINDOW;
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
    this.wal = o.wal;
    this.syncEvery = o.syncEvery >>> 0;
    this.syncIntervalMs = o.syncIntervalMs >>> 0;
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
    let all = true;
    for (const s of this.shards) all = s.walHeaderOnly(this.manifest.epoch) && all;
    return all;
  }

  replay(indexValid: boolean[], repair: boolean): ReplayResult {
    this.live();
    const m = this.manifest;
    let total = 0;
    let droppedBytes = 0;
    for (const s of this.shards) {
      const scan = s.scanWal(m.epoch, m.checkpointLsn, this.window(), repair);
      total += scan.records;
      droppedBytes += scan.droppedBytes;
    }
    // Transactions must follow the checkpoint without a gap, each with all of
    // its legs; the first one that does not is where every shard is cut. A
    // wal:false journal is one transaction at the LSN the checkpoint reached.
    let base = m.checkpointLsn + 1;
    let first = Infinity;
    let firstType = 0;
    for (const s of this.shards) {
      const f = s.firstLsn();
      if (f.lsn !== 0 && f.lsn < first) {
        first = f.lsn;
        firstType = f.type;
      }
    }
    if (first !== Infinity && firstType === WalType.IMAGE) base = first;
    const counts = new Uint32Array(total + 1);
    const legs = new Uint32Array(total + 1);
    for (const s of this.shards) s.countWal(base, counts, legs);
    let cut = base;
    while (cut - base < counts.length && legs[cut - base] !== 0 && counts[cut - base] === legs[cut - base]) cut++;
    const dropped = { bytes: droppedBytes };
    let records = 0;
    for (let i = 0; i < this.shards.length; i++) {
      const s = this.shards[i];
      const applied = s.applyWal(cut, indexValid[i] === true, dropped);
      // What we replayed may still be only in the page cache (the crash was a
      // kill, not a power cut). It must be durable before the checkpoint that
      // follows writes shard pages derived from it.
      if (applied > 0) dataSyncOrThrow(s.walFd, s.walName);
      records += applied;
    }
    // Nothing applied: back to the checkpoint. (Not `cut - 1`: when an incomplete wal:false image
    // journal moved `base` to its LSN, cut - 1 would name operations whose effects are lost.)
    const lastLsn = cut > base ? cut - 1 : m.checkpointLsn;
    this.lsn = lastLsn;
    this.durableLsn = lastLsn;
    this.appendedLsn = lastLsn;
    return { records, droppedBytes: dropped.bytes, lastLsn: BigInt(lastLsn) };
  }

  rebuildIndex(shard: number): void {
    this.live();
    this.shards[shard].rebuildIndex();
  }

  start(): void {
    this.live();
    this.started = true;
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

  /** One group fsync on this thread (native RoundLocked); false when the ledger has failed. */
  private roundNow(): boolean {
    if (this.failed) return false;
    this.flushAll();
    if (this.failed) return false;
    const records = this.records;
    const lsn = this.appendedLsn;
    const durable = this.durableLsn;
    if (lsn > durable) {
      for (const s of this.shards) {
        if (s.walLastLsn <= durable) continue;
        const err = dataSync(s.walFd);
        if (err !== undefined) {
          // Never retried: after a failed fsync the kernel may have dropped the
          // dirty pages, so a later success would prove nothing.
          this.setFailed(`fsync ${s.walName}: ${err}`);
          break;
        }
      }
      if (!this.failed) {
        this.durableRecords = Math.max(this.durableRecords, records);
        this.durableLsn = Math.max(this.durableLsn, lsn);
        this.rounds++;
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
    let left = 1; // released after the loop
    let error: string | undefined;
    const done = (): void => {
      if (--left !== 0) return;
      this.roundBusy = false;
      if (this.closed) {
        this.releaseFds();
        this.settleWaiters();
        return;
      }
      if (error !== undefined) this.setFailed(error);
      else if (!this.failed) {
        this.durableRecords = Math.max(this.durableRecords, records);
        this.durableLsn = Math.max(this.durableLsn, lsn);
        this.rounds++;
      }
      this.settleWaiters();
      if (this.roundAgain || this.waiters.length > 0) this.startRound();
      else if (this.appendedLsn > this.durableLsn) this.armTimer();
    };
    for (const s of this.shards) {
      if (s.walLastLsn <= durable) continue;
      if (injectFsyncFailure()) {
        error = `fsync ${s.walName}: ${EIO_TEXT}`;
        break;
      }
      left++;
      this.inflight++;
      const name = s.walName;
      fs.fdatasync(s.walFd, (e) => {
        this.inflight--;
        if (e && error === undefined) error = `fsync ${name}: ${errText(e)}`;
        done();
      });
    }
    done();
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

  private append(s: Shard, type: number, slot: number, lsn: number, legs: number, leg: number, aLo: number, aHi: number): void {
    if (!s.listed) {
      s.listed = true;
      this.pending.push(s);
    }
    try {
      s.append(type, slot, lsn, this.manifest.epoch, legs, leg, aLo, aHi, this.tsLo, this.tsHi);
    } catch (e) {
      // A full staging buffer could not be written out: the change is in memory only.
      const msg = e instanceof Error ? e.message : String(e);
      this.setFailed(msg);
      this.detailMsg = msg;
      throw e;
    }
    this.walTotal += 224;
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

  private stamp(): void {
    const now = Date.now();
    this.tsLo = now >>> 0;
    this.tsHi = Math.floor(now / TWO32);
  }

  // ------------------------------------------------------------------ operations

  private corrupt(s: Shard, slot: number): number {
    this.detailMsg = `account record failed its checksum: ${s.dataName} slot ${slot}`;
    return CORRUPTION;
  }

  /** Room in the logs, backpressure, auto-checkpoint (native Core::Admit). */
  private admit(a: Shard, b: Shard | null): number {
    if (this.closed) return CLOSED;
    if (this.failed) return IO_ERROR;
    if (!this.wal) return OK;
    try {
      if (this.walTotal > AUTO_CHECKPOINT_BYTES) this.checkpoint(false);
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
      if (this.records !== durable && this.records + n - durable > this.window()) {
        // The disk is a whole window behind: sync here (the pool's callbacks
        // cannot run until this call returns).
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
      const u = s.segs32[found >>> 24];
      const w = (found & SEG_MASK) << 5;
      const carry = u[w + A_LAMPORTS] + aLo >= TWO32 ? 1 : 0;
      if (u[w + A_LAMPORTS + 1] + aHi + carry >= TWO32) return OVERFLOW;
    } else if (s.count >= s.capacity) {
      return CAPACITY_EXCEEDED;
    }
    const pos = s.pos;
    const st = this.admit(s, null);
    if (st !== OK) return st;
    const lsn = ++this.lsn;
    let slot: number;
    if (found >= 0) {
      slot = found;
      const u = s.segs32[slot >>> 24];
      const w = (slot & SEG_MASK) << 5;
      const lo = u[w + A_LAMPORTS] + aLo;
      const carry = lo >= TWO32 ? 1 : 0;
      s.update(slot, lo >>> 0, u[w + A_LAMPORTS + 1] + aHi + carry, lsn >>> 0, Math.floor(lsn / TWO32));
    } else {
      slot = s.create(hash, pos, lsn);
      const u = s.segs32[slot >>> 24];
      const w = (slot & SEG_MASK) << 5;
      u[w + A_LAMPORTS] = aLo;
      u[w + A_LAMPORTS + 1] = aHi;
      u[w + A_LSN] = lsn >>> 0;
      u[w + A_LSN + 1] = Math.floor(lsn / TWO32);
      s.seal(slot);
    }
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
    const uf = sf.segs32[f >>> 24];
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
      const u = st.segs32[t >>> 24];
      const w = (t & SEG_MASK) << 5;
      const carry = u[w + A_LAMPORTS] + aLo >= TWO32 ? 1 : 0;
      if (u[w + A_LAMPORTS + 1] + aHi + carry >= TWO32) return OVERFLOW;
    } else if (st.count >= st.capacity) {
      return CAPACITY_EXCEEDED;
    }
    const pos = st.pos;
    const status = this.admit(sf, st);
    if (status !== OK) return status;
    const lsn = ++this.lsn;
    const lsnLo = lsn >>> 0;
    const lsnHi = Math.floor(lsn / TWO32);
    const toSlot = t >= 0 ? t : st.create(toHash, pos, lsn);
    // debit
    {
      const u = sf.segs32[f >>> 24];
      const lo = u[wf + A_LAMPORTS] - aLo;
      const borrow = lo < 0 ? 1 : 0;
      sf.update(f, (lo + borrow * TWO32) >>> 0, u[wf + A_LAMPORTS + 1] - aHi - borrow, lsnLo, lsnHi);
    }
    // credit
    {
      const u = st.segs32[toSlot >>> 24];
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
    s.segs[found >>> 24].copy(out, outOff, off, off + 128);
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
    return st;
  }

  transfer(from: Uint8Array, to: Uint8Array, amount: bigint | number): number {
    this.live();
    const [aLo, aHi] = splitAmount(amount);
    if (aLo === 0 && aHi === 0) return INVALID_AMOUNT;
    if (sameKey(from, 0, to, 0)) return SAME_ACCOUNT;
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
    return st;
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

  /** wal:false: the images about to be written back, logged as one transaction first. */
  private writeImageJournal(): void {
    let total = 0;
    for (const s of this.shards) total += s.imageSlots();
    if (total === 0) return;
    this.stamp();
    let leg = 0;
    const lsn = this.lsn;
    for (const s of this.shards) {
      const n = s.imageSlots();
      if (n === 0) continue;
      s.reserve(n);
      s.forEachDirtySlot((slot) => this.append(s, WalType.IMAGE, slot, lsn, total, leg++, 0, 0));
    }
    const failedBefore = this.failed;
    this.flushAll();
    if (!failedBefore && this.failed) throw errorFor(IO_ERROR, this.failure);
    for (const s of this.shards) if (s.walLastLsn !== 0) dataSyncOrThrow(s.walFd, s.walName);
  }

  checkpoint(force: boolean): void {
    this.live();
    if (this.failed) throw errorFor(IO_ERROR, `ledger is read-only after a failure: ${this.failure}`);
    let dirty = false;
    for (const s of this.shards) dirty = dirty || s.anyDirty;
    if (!force && !dirty && this.lsn === this.manifest.checkpointLsn) return;
    try {
      const next: ShardManifest = { ...this.manifest, epoch: this.manifest.epoch + 1, checkpointLsn: this.lsn };
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
      replaceFile(this.dir, MANIFEST_FILE, encodeManifest({
        shards: next.shards, accountsPerShard: next.accountsPerShard, indexCapacity: next.indexCapacity, seed: next.seed,
        epoch: BigInt(next.epoch), checkpointLsn: BigInt(next.checkpointLsn),
      }));
      this.manifest = next;
      crashPoint('checkpoint:after-manifest');
      // 3. Empty the logs for the new epoch.
      const now = Date.now();
      for (const s of this.shards) {
        s.walResetTo(next.epoch, this.window(), now);
        s.clearDirty();
      }
      crashPoint('checkpoint:after-wal-reset');
      this.walTotal = 0;
      this.durableRecords = this.records;
      this.durableLsn = this.lsn;
      this.appendedLsn = this.lsn;
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
    this.settleWaiters();
    for (const s of this.shards) {
      this.fdsToClose.push(...s.fds());
      s.walFd = s.indexFd = s.dataFd = -1;
      s.closeWalScan();
    }
    this.shards = [];
    this.releaseFds();
    // The descriptors of fsyncs still in flight close when they finish; the
    // directory is free now (those fsyncs only touch the files' own inodes).
    const lock = this.lock;
    this.lock = undefined;
    if (lock) {
      for (const fd of this.fdsToClose) lock.hold.fds.delete(fd);
      lock.release();
    }
  }

  stats(): EngineStats {
    this.live();
    let walBytes = 0;
    for (const s of this.shards) walBytes += s.walBytes();
    return {
      lsn: BigInt(this.lsn),
      durableLsn: BigInt(this.wal ? this.durableLsn : this.manifest.checkpointLsn),
      checkpointLsn: BigInt(this.manifest.checkpointLsn),
      walBytes,
      fsyncs: this.rounds,
      readOnly: this.failed,
      shards: this.shards.map((s) => ({ accounts: s.count, capacity: s.capacity, indexRebuilds: s.indexRebuilds })),
    };
  }

  detail(): string {
    this.live();
    return this.detailMsg;
  }
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

