/**
 * Replication and failover on NATS JetStream (docs/replication.md).
 *
 *   const rep = await replicate(leader, { servers, stream });   // the leader publishes its log records
 *   const f = await follow(dir2, { servers, stream });           // a read-only replica that applies them
 *   await f.promote();                                           // the replica becomes the (fenced) writer
 *
 * The leader's engine keeps a copy of every log record it writes (the record tap, Ledger.setTap); each event-loop
 * turn the records are grouped, whole transactions only, into messages of up to `maxBatchBytes` and published to
 * one stream. Every publish carries the expected last stream sequence (the fence): once another writer has
 * appended, this leader's next publish is refused, and it turns FENCED (writes and sync() throw) instead of
 * diverging. With replication on, `sync()` resolves once the local log is durable AND JetStream has acknowledged
 * every record up to the LSN current when it was called.
 *
 * A follower applies each transaction through the ordinary engine path (mint / transfer, in LSN order) and checks
 * that its LSN and the post-images it gets are the ones the leader logged: the same operations in the same order
 * from the same snapshot give the same slots, LSNs and images, so a mismatch is CORRUPTION and the follower stops.
 * Its own log, checkpoints and crash recovery protect what it applied; the stream sequence it has applied is kept
 * beside its durable state (the REPLICATION file in its directory, written after its sync()).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { connect } from '@nats-io/transport-node';
import { headers as natsHeaders, type MsgHdrs, type NatsConnection } from '@nats-io/nats-core';
import {
  jetstream, jetstreamManager, JetStreamApiError, DiscardPolicy, RetentionPolicy, StorageType,
  type JetStreamClient, type JetStreamManager, type StoredMsg,
} from '@nats-io/jetstream';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { Kvm, type KV } from '@nats-io/kv';
import { Ledger, type LedgerOptions, type LedgerStats, type BackupResult } from './ledger';
import { LedgerError } from './errors';
import type { Account } from './account';
import type { Pubkey } from './pubkey';
import './js/register'; // followers may run the JS engine (as `geometric-ledger` itself registers it)
import { MINT_OP_SIZE, TRANSFER_OP_SIZE, WAL_RECORD_SIZE, Wal, WalType, crc32c, crc32cUpdate, syncDir } from './format';

export interface ReplicationOptions {
  /** NATS server URL(s): every node of the cluster, so that the client fails over between them. */
  servers: string | string[];
  /** The JetStream stream holding the log (created with `replicas` replicas when missing). */
  stream: string;
  /** Subject the log is published on (default `gl.<stream>.log`). */
  subject?: string;
  /** Replicas of a stream or bucket this call creates (default 3). */
  replicas?: number;
  /** Object store bucket for snapshots (default `<stream>-snapshots`). */
  snapshotBucket?: string;
  /** How long a publish or a request waits for JetStream's answer before it is retried (default 4000 ms). */
  timeoutMs?: number;
}

export interface LeaderOptions extends ReplicationOptions {
  /** Largest message, in bytes of whole log records (default 256 KiB). */
  maxBatchBytes?: number;
  /** Messages published and not yet acknowledged at once (default 4). */
  inFlight?: number;
  /** Compress each message (raw deflate, level 1: about 3.5x on log records) when it saves a tenth (default true). */
  compress?: boolean;
  /** A snapshot every this many ms (default 0: only on demand, and the first when the stream is created). */
  snapshotEveryMs?: number;
  /** Snapshots kept in the bucket (default 2); the stream is trimmed below the oldest one kept. */
  keepSnapshots?: number;
  /** Called once if the leader is fenced (another writer appended to the stream). */
  onFenced?: (e: LedgerError) => void;
  /**
   * Automatic failover: hold a lease in the KV bucket `<stream>-lease`, renewed every ttlMs / 3 with a
   * revision-checked update. A leader that loses it (its update refused: a follower took it) turns FENCED at once.
   */
  lease?: boolean | { ttlMs?: number };
}

export interface FollowOptions extends ReplicationOptions {
  /** Options of the follower's own Ledger (shards and the seed come from the snapshot). */
  ledger?: Pick<LedgerOptions, 'engine' | 'syncEvery' | 'syncIntervalMs' | 'checkpointEveryBytes' | 'checkpointIntervalMs'>;
  /** How often the applied stream sequence is made durable (default 200 ms). */
  persistEveryMs?: number;
  /** How long follow() waits for a first snapshot to appear (default 30,000 ms). */
  bootstrapTimeoutMs?: number;
  /** Options for the leader this follower becomes on promote(). */
  leader?: Omit<LeaderOptions, keyof ReplicationOptions>;
  /** Called if applying stops on an error (CORRUPTION: the stream disagrees with this replica). */
  onError?: (e: Error) => void;
  /**
   * Automatic failover: watch the leader's lease (LeaderOptions.lease, same ttlMs); when it has not been renewed
   * for ttlMs (by this process's clock), take it with a revision-checked update and promote(). Of several
   * followers one wins the update; the others go on following.
   */
  autoPromote?: boolean | { ttlMs?: number };
  /** Called when autoPromote has promoted this follower (or failed to: the error). */
  onPromoted?: (rep: Replication | undefined, e?: Error) => void;
}

export interface Lag {
  /** The follower's LSN. */
  lsn: bigint;
  /** Operations (LSNs) the stream holds beyond it, as far as the follower knows (it polls the stream's end). */
  behindRecords: bigint;
  /** How long the oldest message not applied yet has been in the stream (0 when caught up). */
  behindMs: number;
}

export interface ReplicationStats {
  term: string;
  /** Stream sequence of the last message JetStream acknowledged, in order. */
  ackedSeq: number;
  /** Every operation up to this LSN is in the stream. */
  ackedLsn: bigint;
  /** Log bytes drained from the tap and not acknowledged yet. */
  pendingBytes: number;
  /** Messages acknowledged, their bytes as published (compressed) and as log records. */
  batches: number;
  publishedBytes: number;
  loggedBytes: number;
  retries: number;
  fenced: boolean;
}

export interface SnapshotInfo {
  name: string;
  /** The snapshot holds the state after exactly the operations up to this LSN. */
  lsn: bigint;
  /** Apply the stream from the message after this sequence (skipping LSNs <= lsn). */
  seq: number;
  bytes: number;
}

/** The replication handle of a leader (replicate(), or promote()). */
export interface Replication {
  readonly ledger: Ledger;
  stats(): ReplicationStats;
  /** Publishes a snapshot (backup()) to the bucket, then trims snapshots and the stream below the oldest kept. */
  snapshot(): Promise<SnapshotInfo>;
  /** Publishes what is pending (bounded wait), stops publishing and gives the ledger its own methods back. */
  close(): Promise<void>;
}

const H_LEDGER = 'Gl-Ledger';
const H_TERM = 'Gl-Term';
const H_KIND = 'Gl-Kind';
const H_FIRST = 'Gl-First-Lsn';
const H_LAST = 'Gl-Last-Lsn';
const H_CRC = 'Gl-Crc';
const H_PREV = 'Gl-Prev';
const H_ENCODING = 'Gl-Encoding';
const DEFLATE = 'deflate-raw';
const MSG_ID = 'Nats-Msg-Id';
/** JetStream's "wrong last sequence" (the fence) and "no message found". */
const WRONG_LAST_SEQUENCE = 10071;
const NO_MESSAGE_FOUND = 10037;
const STATE_FILE = 'REPLICATION';
const SNAP_PREFIX = 'snap-';
const SNAP_MAGIC = 'GLSNAP1\n';

interface ReplicaState {
  stream: string;
  ledgerId: string;
  role: 'leader' | 'follower';
  /** leader: its term. */
  term?: string;
  /** follower: the last stream sequence applied, and the LSN after it (made durable before this file). */
  seq?: number;
  lsn?: string;
}

function readState(dir: string): ReplicaState | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), 'utf8')) as ReplicaState;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new LedgerError('CORRUPTION', `${path.join(dir, STATE_FILE)}: ${(e as Error).message}`);
  }
}

/** Atomically (tmp, fsync, rename, directory fsync): a crash leaves the old file or the new one. */
function writeState(dir: string, s: ReplicaState): void {
  const tmp = path.join(dir, STATE_FILE + '.tmp');
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, JSON.stringify(s) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, path.join(dir, STATE_FILE));
  syncDir(dir);
}

// ------------------------------------------------------------------ connection

interface Conn {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  stream: string;
  subject: string;
  bucket: string;
  replicas: number;
  timeoutMs: number;
  /** The stream allows direct gets (any replica answers, raw bytes): what followers read with. */
  direct: boolean;
  objects?: ObjectStore;
}

function checkOptions(o: ReplicationOptions): void {
  if (o === null || typeof o !== 'object') throw new LedgerError('INVALID_OPTIONS', 'replication options must be an object');
  const servers = Array.isArray(o.servers) ? o.servers : [o.servers];
  if (servers.length === 0 || servers.some((s) => typeof s !== 'string' || s.length === 0)) {
    throw new LedgerError('INVALID_OPTIONS', 'servers must be a NATS URL or a non-empty list of them');
  }
  if (typeof o.stream !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(o.stream)) {
    throw new LedgerError('INVALID_OPTIONS', 'stream must be 1..64 letters, digits, _ or -');
  }
  for (const [name, v, min, max] of [
    ['replicas', o.replicas, 1, 5], ['timeoutMs', o.timeoutMs, 100, 600_000],
  ] as const) {
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min || v > max)) {
      throw new LedgerError('INVALID_OPTIONS', `${name} must be an integer in ${min}..${max}, got ${String(v)}`);
    }
  }
}

function intIn(name: string, v: unknown, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new LedgerError('INVALID_OPTIONS', `${name} must be an integer in ${min}..${max}, got ${String(v)}`);
  }
  return v;
}

async function openConn(o: ReplicationOptions): Promise<Conn> {
  const timeoutMs = o.timeoutMs ?? 4000;
  const nc = await connect({
    servers: o.servers, maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: timeoutMs, name: `geometric-ledger ${o.stream}`,
  });
  try {
    const jsm = await retrying(() => jetstreamManager(nc, { timeout: timeoutMs }), timeoutMs * 5);
    const c: Conn = {
      nc, jsm, js: jetstream(nc, { timeout: timeoutMs }), stream: o.stream, subject: o.subject ?? `gl.${o.stream}.log`,
      bucket: o.snapshotBucket ?? `${o.stream}-snapshots`, replicas: o.replicas ?? 3, timeoutMs, direct: false,
    };
    await retrying(async () => {
      try {
        c.direct = (await jsm.streams.info(c.stream)).config.allow_direct === true;
      } catch (e) {
        if (!(e instanceof JetStreamApiError) || e.status !== 404) throw e;
        const si = await jsm.streams.add({
          name: c.stream, subjects: [c.subject], num_replicas: c.replicas, storage: StorageType.File,
          retention: RetentionPolicy.Limits, discard: DiscardPolicy.Old, duplicate_window: 120_000_000_000,
          max_msgs: -1, max_bytes: -1, max_age: 0, allow_direct: true,
        });
        c.direct = si.config.allow_direct === true;
      }
    }, timeoutMs * 5);
    return c;
  } catch (e) {
    await nc.close().catch(() => {});
    throw e;
  }
}

async function objects(c: Conn): Promise<ObjectStore> {
  // The options become the bucket's stream configuration as they are: `num_replicas` is the server's name for it.
  const opts = { replicas: c.replicas, num_replicas: c.replicas, storage: StorageType.File };
  c.objects ??= await retrying(async () => {
    const store = await new Objm(jetstream(c.nc, { timeout: c.timeoutMs })).create(c.bucket, opts);
    await store.status(); // create() gives up quietly when JetStream does not answer: this does not
    return store;
  }, c.timeoutMs * 5);
  return c.objects;
}

const LEASE_KEY = 'leader';
const DEFAULT_LEASE_MS = 3000;

function leaseMs(v: boolean | { ttlMs?: number } | undefined): number | undefined {
  if (v === undefined || v === false) return undefined;
  if (v === true) return DEFAULT_LEASE_MS;
  if (typeof v !== 'object' || v === null) throw new LedgerError('INVALID_OPTIONS', 'lease / autoPromote must be a boolean or { ttlMs }');
  return intIn('ttlMs', v.ttlMs, 300, 600_000, DEFAULT_LEASE_MS);
}

async function leaseBucket(c: Conn): Promise<KV> {
  return retrying(() => new Kvm(jetstream(c.nc, { timeout: c.timeoutMs })).create(`${c.stream}-lease`, { replicas: c.replicas, history: 1 }),
    c.timeoutMs * 5);
}

/** JetStream answers that are worth asking again: timeouts, no responders, elections, a reconnecting client. */
function transient(e: unknown): boolean {
  if (e instanceof LedgerError) return false;
  if (e instanceof JetStreamApiError) return e.status === 503 || e.status === 408 || e.code === 10008;
  return true;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Retries `f` on transient errors, with backoff, for up to `budgetMs`. */
async function retrying<T>(f: () => Promise<T>, budgetMs: number): Promise<T> {
  const until = Date.now() + budgetMs;
  for (let i = 0; ; i++) {
    try {
      return await f();
    } catch (e) {
      if (!transient(e) || Date.now() > until) throw e;
      await sleep(Math.min(1000, 50 * 2 ** i));
    }
  }
}

interface StreamEnd {
  first: number;
  last: number;
}

async function streamEnd(c: Conn): Promise<StreamEnd> {
  const si = await retrying(() => c.jsm.streams.info(c.stream), c.timeoutMs * 5);
  return { first: si.state.first_seq, last: si.state.last_seq };
}

/**
 * The message at `seq`, or undefined when the stream does not hold it (not yet, or trimmed). Asked of the stream's
 * leader; `direct`: of any replica, raw (cheaper; a replica behind may not have it yet: only followers' reads).
 */
async function getMsg(c: Conn, seq: number, direct = false): Promise<StoredMsg | undefined> {
  try {
    if (direct && c.direct) return (await c.jsm.direct.getMessage(c.stream, { seq })) ?? undefined;
    return (await c.jsm.streams.getMessage(c.stream, { seq })) ?? undefined;
  } catch (e) {
    if (e instanceof JetStreamApiError && e.code === NO_MESSAGE_FOUND) return undefined;
    throw e;
  }
}

function hdr(m: StoredMsg, name: string): string {
  return m.header?.get(name) ?? '';
}

/** A message id without the `~<n>` of a resend: what Gl-Prev names. */
function baseId(id: string): string {
  const i = id.indexOf('~');
  return i < 0 ? id : id.slice(0, i);
}

function randomId(): string {
  return randomBytes(8).toString('hex');
}

// ------------------------------------------------------------------ leader

const WRITES = ['mint', 'transfer', 'mintBatch', 'transferBatch'] as const;
/** Ledgers a Publisher publishes (one at a time). */
const replicated = new WeakSet<Ledger>();

interface Batch {
  /** What is published: the payload, or its raw deflate (`deflated`). */
  wire: Buffer;
  deflated: boolean;
  /** Its message id (base); a resend after a refusal may carry `<id>~<n>` (see #send). */
  id: string;
  /** Every message id it was sent under: the first, then any resends' (`<id>~<n>`). */
  ids: string[];
  /** Its last publish was refused by its fence: not stored (then it is resent under a new id). */
  refused: boolean;
  payload: Buffer;
  firstLsn: bigint;
  lastLsn: bigint;
  prev: string;
  sent: boolean;
  /** Stream sequence JetStream acknowledged it at (0: not yet). */
  seq: number;
}

interface Waiter {
  lsn: bigint;
  resolve: () => void;
  reject: (e: Error) => void;
}

class Publisher implements Replication {
  readonly ledger: Ledger;
  readonly #c: Conn;
  readonly #ownsConn: boolean;
  readonly #ledgerId: string;
  readonly #term: string;
  readonly #maxBatch: number;
  readonly #window: number;
  readonly #keep: number;
  readonly #onFenced: ((e: LedgerError) => void) | undefined;
  readonly #compress: boolean;
  #batchNo = 0;
  #ackedSeq: number;
  #ackedLsn: bigint;
  #lastId: string;
  #pending: Batch[] = [];
  #outbox: Buffer[] = [];
  #outboxBytes = 0;
  #inFlight = 0;
  #recovering = false;
  #fenced: LedgerError | undefined;
  #closed = false;
  #scheduled = false;
  #waiters: Waiter[] = [];
  #retries = 0;
  #batches = 0;
  #publishedBytes = 0;
  #loggedBytes = 0;
  #snapshotTimer: NodeJS.Timeout | undefined;
  #leaseTimer: NodeJS.Timeout | undefined;
  #settledWaiters: (() => void)[] = [];
  readonly #originals = new Map<string, unknown>();

  constructor(ledger: Ledger, c: Conn, ownsConn: boolean, o: LeaderOptions,
    ids: { ledgerId: string; term: string; seq: number; lastId: string; lsn: bigint; lease?: { kv: KV; rev: number; ttlMs: number } }) {
    this.ledger = ledger;
    this.#c = c;
    this.#ownsConn = ownsConn;
    this.#ledgerId = ids.ledgerId;
    this.#term = ids.term;
    this.#ackedSeq = ids.seq;
    this.#lastId = ids.lastId;
    this.#ackedLsn = ids.lsn; // the claim's: every operation up to it is in the stream (or its snapshot)
    this.#maxBatch = Math.max(WAL_RECORD_SIZE * 2, Math.floor(o.maxBatchBytes! / WAL_RECORD_SIZE) * WAL_RECORD_SIZE);
    this.#window = o.inFlight!;
    this.#keep = o.keepSnapshots!;
    this.#onFenced = o.onFenced;
    this.#compress = o.compress !== false;
    this.#install();
    if (ids.lease) this.#holdLease(ids.lease.kv, ids.lease.rev, ids.lease.ttlMs);
    if (o.snapshotEveryMs! > 0) {
      this.#snapshotTimer = setInterval(() => {
        if (!this.#fenced && !this.#closed) this.snapshot().catch(() => {});
      }, o.snapshotEveryMs!);
      this.#snapshotTimer.unref();
    }
  }

  /** The leader's writes, sync() and close() go through here (own properties over the prototype's methods). */
  #install(): void {
    replicated.add(this.ledger);
    const l = this.ledger as unknown as Record<string, (...a: unknown[]) => unknown>;
    for (const name of WRITES) {
      const orig = l[name];
      this.#originals.set(name, Object.getOwnPropertyDescriptor(l, name));
      Object.defineProperty(l, name, {
        configurable: true, writable: true, enumerable: false,
        value: (...args: unknown[]) => {
          if (this.#fenced) throw this.#fenced;
          try {
            return orig.apply(l, args);
          } finally {
            this.#schedule();
          }
        },
      });
    }
    const sync = l.sync as () => Promise<void>;
    const close = l.close as () => Promise<void>;
    this.#originals.set('sync', Object.getOwnPropertyDescriptor(l, 'sync'));
    this.#originals.set('close', Object.getOwnPropertyDescriptor(l, 'close'));
    Object.defineProperty(l, 'sync', {
      configurable: true, writable: true, enumerable: false,
      value: (): Promise<void> => {
        if (this.#fenced) return Promise.reject(this.#fenced);
        let target: bigint;
        try {
          target = this.ledger.stats().lsn;
        } catch (e) {
          return Promise.reject(e);
        }
        const local = sync.call(l);
        return Promise.all([local, this.#acked(target)]).then(() => {});
      },
    });
    Object.defineProperty(l, 'close', {
      configurable: true, writable: true, enumerable: false,
      value: async (): Promise<void> => {
        await this.close();
        return close.call(l);
      },
    });
  }

  #uninstall(): void {
    const l = this.ledger as unknown as Record<string, unknown>;
    for (const [name, desc] of this.#originals) {
      if (desc) Object.defineProperty(l, name, desc as PropertyDescriptor);
      else delete l[name];
    }
    this.#originals.clear();
    replicated.delete(this.ledger);
  }

  /** Renews the lease every ttlMs / 3; a refused renewal means a follower took it: fenced. */
  #holdLease(kv: KV, rev: number, ttlMs: number): void {
    let busy = false;
    const renew = async (): Promise<void> => {
      if (busy || this.#fenced || this.#closed) return;
      busy = true;
      try {
        rev = await kv.update(LEASE_KEY, JSON.stringify({ term: this.#term, at: Date.now() }), rev, this.#c.timeoutMs);
      } catch (e) {
        if (e instanceof JetStreamApiError && e.code === WRONG_LAST_SEQUENCE || /wrong last sequence/i.test(String((e as Error)?.message))) {
          this.#fence(`lease on stream ${this.#c.stream} taken by another node: this leader (term ${this.#term}) steps down`);
        }
        // otherwise JetStream did not answer: try again at the next tick (the lease may lapse meanwhile)
      } finally {
        busy = false;
      }
    };
    this.#leaseTimer = setInterval(() => void renew(), Math.max(100, Math.floor(ttlMs / 3)));
    this.#leaseTimer.unref();
  }

  stats(): ReplicationStats {
    return {
      term: this.#term, ackedSeq: this.#ackedSeq, ackedLsn: this.#ackedLsn,
      pendingBytes: this.#outboxBytes + this.#pending.reduce((n, b) => n + b.payload.length, 0),
      publishedBytes: this.#publishedBytes, loggedBytes: this.#loggedBytes,
      batches: this.#batches, retries: this.#retries, fenced: this.#fenced !== undefined,
    };
  }

  get fenced(): LedgerError | undefined {
    return this.#fenced;
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#pump();
    });
  }

  #acked(lsn: bigint): Promise<void> {
    if (lsn <= this.#ackedLsn) return Promise.resolve();
    if (this.#closed) return Promise.reject(new LedgerError('CLOSED', 'replication is closed'));
    const p = new Promise<void>((resolve, reject) => this.#waiters.push({ lsn, resolve, reject }));
    this.#pump();
    return p;
  }

  /** Drains the tap into the outbox, cuts batches of whole transactions and sends what the window allows. */
  #pump(): void {
    if (this.#fenced || this.#closed && this.#pending.length === 0 && this.#outboxBytes === 0) return;
    try {
      const got = this.ledger.drainTap();
      if (got.length > 0) {
        this.#outbox.push(Buffer.from(got.buffer, got.byteOffset, got.length));
        this.#outboxBytes += got.length;
      }
    } catch {
      // the ledger is closed: what the tap held was drained before close
    }
    if (this.#recovering) return;
    while (this.#outboxBytes > 0 && this.#pending.filter((b) => !b.sent).length === 0 && this.#inFlight < this.#window) {
      this.#cut();
    }
    for (const b of this.#pending) {
      if (this.#inFlight >= this.#window) break;
      if (!b.sent) this.#send(b);
    }
  }

  /** The next batch from the outbox: up to maxBatch bytes, never between the legs of a transfer. */
  #cut(): void {
    const all = this.#outbox.length === 1 ? this.#outbox[0] : Buffer.concat(this.#outbox);
    let end = Math.min(all.length, this.#maxBatch);
    if (end < all.length && all.readUInt32LE(end + Wal.LEG) !== 0) end += WAL_RECORD_SIZE;
    const payload = all.subarray(0, end);
    const rest = all.subarray(end);
    const z = this.#compress ? deflateRawSync(payload, { level: 1 }) : undefined;
    const deflated = z !== undefined && z.length < payload.length * 0.9;
    this.#outbox = rest.length > 0 ? [rest] : [];
    this.#outboxBytes = rest.length;
    const b: Batch = {
      id: `${this.#ledgerId}:${this.#term}:${++this.#batchNo}`, payload,
      firstLsn: payload.readBigUInt64LE(Wal.LSN),
      lastLsn: payload.readBigUInt64LE(payload.length - WAL_RECORD_SIZE + Wal.LSN),
      prev: this.#pending.length > 0 ? this.#pending[this.#pending.length - 1].id : this.#lastId,
      sent: false, seq: 0, ids: [], refused: false, wire: deflated ? z! : payload, deflated,
    };
    this.#pending.push(b);
  }

  #send(b: Batch): void {
    const index = this.#pending.indexOf(b);
    const expect = this.#ackedSeq + index;
    b.sent = true;
    // A message refused by its fence may leave its id in JetStream's duplicate window (without a stored message),
    // so it goes out again under a new one; after a timeout the same id is sent again (it may have been stored).
    if (b.ids.length === 0 || b.refused) b.ids.push(b.ids.length === 0 ? b.id : `${b.id}~${b.ids.length}`);
    b.refused = false;
    const msgId = b.ids[b.ids.length - 1];
    this.#inFlight++;
    const h = natsHeaders();
    h.set(H_LEDGER, this.#ledgerId);
    h.set(H_TERM, this.#term);
    h.set(H_KIND, 'log');
    h.set(H_FIRST, String(b.firstLsn));
    h.set(H_LAST, String(b.lastLsn));
    h.set(H_CRC, String(crc32c(b.payload)));
    h.set(H_PREV, b.prev);
    if (b.deflated) h.set(H_ENCODING, DEFLATE);
    let out = false;
    const leave = (): void => {
      if (!out) this.#inFlight--;
      out = true;
    };
    this.#c.js.publish(this.#c.subject, b.wire, {
      msgID: msgId, expect: { lastSequence: expect }, headers: h, timeout: this.#c.timeoutMs,
    }).then((pa) => {
      leave();
      if (pa.seq !== expect + 1) {
        this.#failed();
        return;
      }
      b.seq = pa.seq;
      this.#batches++;
      this.#publishedBytes += b.wire.length;
      this.#loggedBytes += b.payload.length;
      this.#advance();
      this.#settle();
      this.#pump();
    }).catch((e: unknown) => {
      leave();
      if (e instanceof JetStreamApiError && e.code === WRONG_LAST_SEQUENCE) b.refused = true;
      this.#failed();
    });
  }

  /** A publish failed (or its answer made no sense): find out from the stream itself what happened. */
  #failed(): void {
    this.#settle();
    if (this.#fenced) return;
    this.#retries++;
    if (!this.#recovering) {
      this.#recovering = true;
      void this.#recover();
    }
  }

  /** Acknowledged batches at the front of the queue are done: their LSNs are in the stream. */
  #advance(): void {
    while (this.#pending.length > 0 && this.#pending[0].seq !== 0) {
      const b = this.#pending.shift()!;
      this.#ackedSeq = b.seq;
      this.#ackedLsn = b.lastLsn;
      this.#lastId = b.id;
    }
    if (this.#waiters.length > 0) {
      const still: Waiter[] = [];
      for (const w of this.#waiters) (w.lsn <= this.#ackedLsn ? w.resolve() : still.push(w));
      this.#waiters = still;
    }
  }

  #settle(): void {
    if (this.#inFlight === 0) for (const f of this.#settledWaiters.splice(0)) f();
  }

  #allSettled(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((r) => this.#settledWaiters.push(r));
  }

  /**
   * After a failed publish: once nothing is in flight, read the stream from the last acknowledged sequence. Each
   * message there must be the next of ours (a publish that was stored though its answer was lost); anything else
   * is another writer: fenced. Then the rest is sent again, same ids, same fences (a message stored meanwhile is
   * answered as a duplicate, never stored twice).
   */
  async #recover(): Promise<void> {
    await this.#allSettled();
    for (let i = 0; !this.#fenced && !this.#closed; i++) {
      try {
        this.#advance();
        const end = await streamEnd(this.#c);
        for (let seq = this.#ackedSeq + 1; seq <= end.last; seq++) {
          const m = await getMsg(this.#c, seq);
          const id = m ? hdr(m, MSG_ID) : '(trimmed)';
          const b = this.#pending[0];
          if (!m || !b || !b.ids.includes(id)) {
            this.#fence(`stream ${this.#c.stream} holds ${id} at sequence ${seq} where this leader (term ${this.#term}) ` +
              `expected ${b ? b.id : 'nothing'}: another writer appends to it`);
            return;
          }
          b.seq = seq;
          this.#advance();
        }
        for (const b of this.#pending) b.sent = false;
        this.#recovering = false;
        this.#pump();
        return;
      } catch {
        await sleep(Math.min(2000, 100 * 2 ** Math.min(i, 5)));
      }
    }
  }

  #fence(why: string): void {
    if (this.#fenced) return;
    const e = new LedgerError('FENCED', why);
    this.#fenced = e;
    try {
      this.ledger.setTap(false);
    } catch {
      // closed
    }
    for (const w of this.#waiters.splice(0)) w.reject(e);
    if (this.#snapshotTimer) clearInterval(this.#snapshotTimer);
    if (this.#leaseTimer) clearInterval(this.#leaseTimer);
    this.#onFenced?.(e);
  }

  async snapshot(): Promise<SnapshotInfo> {
    if (this.#fenced) throw this.#fenced;
    if (this.#closed) throw new LedgerError('CLOSED', 'replication is closed');
    // Every message up to this sequence holds LSNs up to the acknowledged one, no later than the backup's.
    const seq = this.#ackedSeq;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gl-snapshot-'));
    try {
      const copy = path.join(tmp, 'copy');
      const r: BackupResult = await this.ledger.backup(copy);
      const info = await putSnapshot(this.#c, copy, { ledgerId: this.#ledgerId, lsn: r.lsn, seq });
      if (!this.#fenced) await trim(this.#c, this.#keep);
      return info;
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#snapshotTimer) clearInterval(this.#snapshotTimer);
    if (this.#leaseTimer) clearInterval(this.#leaseTimer);
    // What the ledger wrote goes out, for a bounded time.
    if (!this.#fenced) {
      this.#pump();
      const until = Date.now() + this.#c.timeoutMs * 2;
      while (!this.#fenced && (this.#pending.length > 0 || this.#outboxBytes > 0) && Date.now() < until) {
        this.#pump();
        await sleep(10);
      }
    }
    const e = new LedgerError('CLOSED', 'replication closed before JetStream acknowledged these operations');
    for (const w of this.#waiters.splice(0)) w.reject(e);
    this.#uninstall();
    try {
      this.ledger.setTap(false);
    } catch {
      // closed
    }
    await this.#allSettled();
    if (this.#ownsConn) await this.#c.nc.close().catch(() => {});
  }
}

/** A new leader (it has just claimed the stream) takes the lease unconditionally, when it is to hold one. */
async function takeLease(c: Conn, o: LeaderOptions, term: string): Promise<{ kv: KV; rev: number; ttlMs: number } | undefined> {
  const ttlMs = leaseMs(o.lease);
  if (ttlMs === undefined) return undefined;
  const kv = await leaseBucket(c);
  const rev = await retrying(() => kv.put(LEASE_KEY, JSON.stringify({ term, at: Date.now() })), c.timeoutMs * 5);
  return { kv, rev, ttlMs };
}

function leaderDefaults(o: LeaderOptions): LeaderOptions {
  leaseMs(o.lease); // checked here
  if (o.compress !== undefined && typeof o.compress !== 'boolean') throw new LedgerError('INVALID_OPTIONS', 'compress must be a boolean');
  return {
    ...o,
    maxBatchBytes: intIn('maxBatchBytes', o.maxBatchBytes, 1024, 8 * 1024 * 1024, 256 * 1024),
    inFlight: intIn('inFlight', o.inFlight, 1, 64, 4),
    snapshotEveryMs: intIn('snapshotEveryMs', o.snapshotEveryMs, 0, 2 ** 31, 0),
    keepSnapshots: intIn('keepSnapshots', o.keepSnapshots, 1, 1000, 2),
  };
}

function claimHeaders(ledgerId: string, term: string, lsn: bigint, prev: string): MsgHdrs {
  const h = natsHeaders();
  h.set(H_LEDGER, ledgerId);
  h.set(H_TERM, term);
  h.set(H_KIND, 'claim');
  h.set(H_FIRST, String(lsn + 1n));
  h.set(H_LAST, String(lsn));
  h.set(H_CRC, String(crc32c(new Uint8Array(0))));
  h.set(H_PREV, baseId(prev));
  return h;
}

/**
 * Claims the stream for a new term: an empty message published with the fence `after` (the last sequence this
 * writer has read). Returns its sequence, or undefined when another writer appended first.
 */
async function claim(c: Conn, ledgerId: string, term: string, lsn: bigint, after: number, prev: string): Promise<number | undefined> {
  const id = `${ledgerId}:${term}:0`;
  for (let i = 0; ; i++) {
    try {
      const pa = await c.js.publish(c.subject, new Uint8Array(0), {
        msgID: id, expect: { lastSequence: after }, headers: claimHeaders(ledgerId, term, lsn, prev), timeout: c.timeoutMs,
      });
      return pa.seq === after + 1 ? pa.seq : undefined;
    } catch (e) {
      if (e instanceof JetStreamApiError && e.code === WRONG_LAST_SEQUENCE) {
        // Ours, stored by an earlier try whose answer was lost? Then it is the message right after `after`.
        const m = await retrying(() => getMsg(c, after + 1), c.timeoutMs * 5);
        return m && hdr(m, MSG_ID) === id ? after + 1 : undefined;
      }
      if (!transient(e) || i > 50) throw e;
      await sleep(Math.min(1000, 50 * 2 ** i));
    }
  }
}

/**
 * Starts publishing `leader`'s log to the stream. On a new (empty) stream it claims it and publishes a first
 * snapshot, so that followers can start. On a stream with history, only the leader whose term wrote its last
 * message and whose LSN is that message's may go on (after a clean restart, say); anything else is FENCED:
 * such a ledger holds operations the stream does not, or lacks some it holds (follow() it instead).
 */
export async function replicate(leader: Ledger, options: LeaderOptions): Promise<Replication> {
  if (!(leader instanceof Ledger)) throw new LedgerError('INVALID_OPTIONS', 'replicate: leader must be a Ledger');
  if (replicated.has(leader)) throw new LedgerError('INVALID_OPTIONS', 'replicate: this ledger is replicated already');
  checkOptions(options);
  const o = leaderDefaults(options);
  const c = await openConn(o);
  try {
    return await startLeader(leader, c, true, o);
  } catch (e) {
    await c.nc.close().catch(() => {});
    throw e;
  }
}

async function startLeader(leader: Ledger, c: Conn, ownsConn: boolean, o: LeaderOptions): Promise<Replication> {
  const end = await streamEnd(c);
  const lsn = leader.stats().lsn;
  const term = randomId();
  let ledgerId: string;
  let prev = '';
  if (end.last === 0) {
    ledgerId = randomId();
  } else {
    const last = await retrying(() => getMsg(c, end.last), c.timeoutMs * 5);
    const st = readState(leader.dir);
    const lastLsn = last ? BigInt(hdr(last, H_LAST) || '-1') : -1n;
    if (!last || !st || st.role !== 'leader' || st.stream !== c.stream || st.ledgerId !== hdr(last, H_LEDGER) ||
      st.term !== hdr(last, H_TERM) || lastLsn !== lsn) {
      throw new LedgerError('FENCED', `replicate: stream ${c.stream} has moved on from this ledger (its last message, ` +
        `sequence ${end.last}, is term ${last ? hdr(last, H_TERM) : '?'} at LSN ${lastLsn}; this ledger is at LSN ${lsn}` +
        `${st?.term ? `, term ${st.term}` : ', never a leader of it'}): follow() the stream instead`);
    }
    ledgerId = st.ledgerId;
    prev = hdr(last, MSG_ID);
  }
  leader.setTap(true);
  try {
    const seq = await claim(c, ledgerId, term, lsn, end.last, prev);
    if (seq === undefined) throw new LedgerError('FENCED', `replicate: another writer appended to ${c.stream} meanwhile`);
    writeState(leader.dir, { stream: c.stream, ledgerId, role: 'leader', term });
    const lease = await takeLease(c, o, term);
    const p = new Publisher(leader, c, ownsConn, o, { ledgerId, term, seq, lastId: `${ledgerId}:${term}:0`, lsn, lease });
    if (end.last === 0) await p.snapshot();
    return p;
  } catch (e) {
    leader.setTap(false);
    throw e;
  }
}

// ------------------------------------------------------------------ snapshots

interface SnapshotMeta {
  ledgerId: string;
  lsn: bigint;
  seq: number;
}

function snapshotName(seq: number, lsn: bigint): string {
  return `${SNAP_PREFIX}${String(seq).padStart(15, '0')}-${lsn}`;
}

function parseSnapshotName(name: string): { seq: number; lsn: bigint } | undefined {
  const m = /^snap-(\d{15})-(\d+)$/.exec(name);
  return m ? { seq: Number(m[1]), lsn: BigInt(m[2]) } : undefined;
}

/**
 * One object: SNAP_MAGIC, a u32 length and a JSON header (ledger id, LSN, sequence, files with their sizes), then
 * the files' bytes in that order. The object store checks its digest on the way back.
 */
async function putSnapshot(c: Conn, dir: string, meta: SnapshotMeta): Promise<SnapshotInfo> {
  const files = fs.readdirSync(dir).filter((n) => n !== 'LOCK' && n !== STATE_FILE).sort()
    .map((name) => ({ name, size: fs.statSync(path.join(dir, name)).size }));
  const head = Buffer.from(JSON.stringify({ ledgerId: meta.ledgerId, lsn: String(meta.lsn), seq: meta.seq, files }));
  const prefix = Buffer.alloc(SNAP_MAGIC.length + 4);
  prefix.write(SNAP_MAGIC, 0, 'latin1');
  prefix.writeUInt32LE(head.length, SNAP_MAGIC.length);
  const bytes = prefix.length + head.length + files.reduce((n, f) => n + f.size, 0);
  // The object's bytes, read from the files as the store asks for them; made afresh for each try.
  const open = (): { rs: ReadableStream<Uint8Array>; done(): void } => {
    let i = -1;
    let fd: number | undefined;
    const done = (): void => {
      if (fd !== undefined) fs.closeSync(fd);
      fd = undefined;
    };
    const rs = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (i === -1) {
          ctl.enqueue(new Uint8Array(Buffer.concat([prefix, head])));
          i = 0;
          return;
        }
        for (;;) {
          if (i >= files.length) {
            ctl.close();
            return;
          }
          fd ??= fs.openSync(path.join(dir, files[i].name), 'r');
          // A fresh buffer each time: the object store keeps what it is given until it publishes it.
          const chunk = Buffer.allocUnsafe(1 << 20);
          const n = fs.readSync(fd, chunk, 0, chunk.length, null);
          if (n > 0) {
            ctl.enqueue(new Uint8Array(chunk.subarray(0, n)));
            return;
          }
          done();
          i++;
        }
      },
      cancel: done,
    });
    return { rs, done };
  };
  const store = await objects(c);
  const name = snapshotName(meta.seq, meta.lsn);
  await retrying(async () => {
    const { rs, done } = open();
    try {
      await store.put({ name, description: `geometric-ledger ${meta.ledgerId} at LSN ${meta.lsn}, stream sequence ${meta.seq}` }, rs);
    } finally {
      done();
    }
  }, c.timeoutMs * 10);
  return { name, lsn: meta.lsn, seq: meta.seq, bytes };
}

async function listSnapshots(c: Conn): Promise<{ name: string; seq: number; lsn: bigint }[]> {
  const store = await objects(c);
  const all = await retrying(() => store.list(), c.timeoutMs * 5);
  const out: { name: string; seq: number; lsn: bigint }[] = [];
  for (const info of all) {
    const p = info.deleted ? undefined : parseSnapshotName(info.name);
    if (p) out.push({ name: info.name, ...p });
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/** Keeps the newest `keep` snapshots; the stream keeps the messages from the oldest one kept on. */
async function trim(c: Conn, keep: number): Promise<void> {
  const snaps = await listSnapshots(c);
  const store = await objects(c);
  for (const s of snaps.slice(0, Math.max(0, snaps.length - keep))) await retrying(() => store.delete(s.name), c.timeoutMs * 5);
  const oldest = snaps[Math.max(0, snaps.length - keep)];
  // Messages after the snapshot's sequence are what a follower from it needs; the one at it is kept too, so that
  // the stream's last message can always be read.
  if (oldest && oldest.seq > 1) await retrying(() => c.jsm.streams.purge(c.stream, { seq: oldest.seq }), c.timeoutMs * 5);
}

/** Writes the newest snapshot into `dir` (which must not exist); returns what it holds. */
async function restoreSnapshot(c: Conn, dir: string, ledgerId: string | undefined): Promise<SnapshotMeta> {
  const snaps = await listSnapshots(c);
  const newest = snaps[snaps.length - 1];
  if (!newest) throw new LedgerError('INVALID_OPTIONS', `no snapshot in bucket ${c.bucket} yet`);
  const store = await objects(c);
  const r = await retrying(async () => {
    const got = await store.get(newest.name);
    if (!got) throw new LedgerError('IO_ERROR', `snapshot ${newest.name} vanished`);
    return got;
  }, c.timeoutMs * 5);
  const tmp = `${dir}.restore-${randomId()}`;
  fs.mkdirSync(tmp, { recursive: true });
  try {
    let buf = Buffer.alloc(0);
    let head: { ledgerId: string; lsn: string; seq: number; files: { name: string; size: number }[] } | undefined;
    let fi = 0;
    let left = 0;
    let fd: number | undefined;
    const reader = r.data.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf = buf.length === 0 ? Buffer.from(value) : Buffer.concat([buf, value]);
      if (!head) {
        if (buf.length < SNAP_MAGIC.length + 4) continue;
        if (buf.toString('latin1', 0, SNAP_MAGIC.length) !== SNAP_MAGIC) throw new LedgerError('CORRUPTION', `${newest.name} is not a snapshot`);
        const n = buf.readUInt32LE(SNAP_MAGIC.length);
        if (buf.length < SNAP_MAGIC.length + 4 + n) continue;
        head = JSON.parse(buf.toString('utf8', SNAP_MAGIC.length + 4, SNAP_MAGIC.length + 4 + n));
        buf = buf.subarray(SNAP_MAGIC.length + 4 + n);
        if (ledgerId !== undefined && head!.ledgerId !== ledgerId) {
          throw new LedgerError('CORRUPTION', `snapshot ${newest.name} is of ledger ${head!.ledgerId}, the stream's is ${ledgerId}`);
        }
      }
      while (buf.length > 0 && fi < head!.files.length) {
        if (fd === undefined) {
          fd = fs.openSync(path.join(tmp, path.basename(head!.files[fi].name)), 'wx');
          left = head!.files[fi].size;
        }
        const n = Math.min(left, buf.length);
        fs.writeSync(fd, buf, 0, n);
        buf = buf.subarray(n);
        left -= n;
        if (left === 0) {
          fs.fsyncSync(fd);
          fs.closeSync(fd);
          fd = undefined;
          fi++;
        }
      }
      // empty files
      while (head && fd === undefined && fi < head.files.length && head.files[fi].size === 0) {
        fs.closeSync(fs.openSync(path.join(tmp, path.basename(head.files[fi].name)), 'wx'));
        fi++;
      }
    }
    const err = await r.error;
    if (err) throw new LedgerError('CORRUPTION', `snapshot ${newest.name}: ${err.message}`);
    if (!head || fi !== head.files.length || buf.length !== 0) throw new LedgerError('CORRUPTION', `snapshot ${newest.name} is cut short`);
    syncDir(tmp);
    fs.renameSync(tmp, dir);
    syncDir(path.dirname(path.resolve(dir)));
    return { ledgerId: head.ledgerId, lsn: BigInt(head.lsn), seq: head.seq };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

// ------------------------------------------------------------------ follower

interface Txn {
  lsn: bigint;
  mint: boolean;
  /** The 224-byte records (1 for a mint, 2 for a transfer). */
  at: number[];
}

/** The transactions of a message's payload, in order, each with all its legs; throws CORRUPTION on anything else. */
function decodeTxns(p: Buffer, where: string): Txn[] {
  if (p.length % WAL_RECORD_SIZE !== 0) throw new LedgerError('CORRUPTION', `${where}: ${p.length} bytes is not whole records`);
  const out: Txn[] = [];
  for (let o = 0; o < p.length;) {
    const type = p.readUInt32LE(o + Wal.TYPE);
    const lsn = p.readBigUInt64LE(o + Wal.LSN);
    const crc = ~crc32cUpdate(crc32cUpdate(0xffffffff, p, o, o + Wal.CRC), p, o + Wal.ACCOUNT, o + WAL_RECORD_SIZE) >>> 0;
    if (crc !== p.readUInt32LE(o + Wal.CRC)) throw new LedgerError('CORRUPTION', `${where}: record at byte ${o} fails its checksum`);
    if (type === WalType.MINT) {
      out.push({ lsn, mint: true, at: [o] });
      o += WAL_RECORD_SIZE;
    } else if (type === WalType.DEBIT && o + 2 * WAL_RECORD_SIZE <= p.length &&
      p.readUInt32LE(o + WAL_RECORD_SIZE + Wal.TYPE) === WalType.CREDIT && p.readBigUInt64LE(o + WAL_RECORD_SIZE + Wal.LSN) === lsn) {
      out.push({ lsn, mint: false, at: [o, o + WAL_RECORD_SIZE] });
      o += 2 * WAL_RECORD_SIZE;
    } else {
      throw new LedgerError('CORRUPTION', `${where}: record at byte ${o} (type ${type}, LSN ${lsn}) is not a whole transaction`);
    }
  }
  return out;
}

/** A replica: serves reads, applies the stream, reports lag; promote() makes it the writer. */
export class Follower {
  #ledger: Ledger;
  readonly dir: string;
  readonly #c: Conn;
  readonly #o: FollowOptions;
  #ledgerId: string;
  #seq: number;
  #lastId = '';
  #lsn: bigint;
  #streamLast = 0;
  #streamLastLsn = 0n;
  #oldestUnappliedAt = 0;
  #stopped = false;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #error: Error | undefined;
  #persistedAt = 0;
  #rep: Publisher | undefined;
  #leaseWatch: NodeJS.Timeout | undefined;
  #promoting: Promise<Replication> | undefined;
  /** Set when follow() moved a diverged directory aside (an old leader's operations the stream never got). */
  readonly movedAside: string | undefined;

  /** @internal */
  constructor(ledger: Ledger, c: Conn, o: FollowOptions, st: { ledgerId: string; seq: number; movedAside?: string }) {
    this.#ledger = ledger;
    this.dir = ledger.dir;
    this.#c = c;
    this.#o = o;
    this.#ledgerId = st.ledgerId;
    this.#seq = st.seq;
    this.#lsn = ledger.stats().lsn;
    this.movedAside = st.movedAside;
  }

  /** The replica's Ledger: read it freely; writes go through the Follower (READ_ONLY until promoted). */
  get ledger(): Ledger {
    return this.#ledger;
  }

  /** Reads: a replica that found it has diverged (CORRUPTION) serves nothing more: damage is reported, never served. */
  #reader(): Ledger {
    if (this.#error instanceof LedgerError && this.#error.code === 'CORRUPTION') throw this.#error;
    return this.#ledger;
  }
  get(pubkey: Pubkey): Account | undefined {
    return this.#reader().get(pubkey);
  }
  balance(pubkey: Pubkey): bigint {
    return this.#reader().balance(pubkey);
  }
  getBatch(pubkeys: Uint8Array, out?: Uint8Array): Uint8Array {
    return this.#reader().getBatch(pubkeys, out);
  }
  stats(): LedgerStats {
    return this.#ledger.stats();
  }

  #writer(): Ledger {
    if (!this.#rep) throw new LedgerError('READ_ONLY', `${this.dir} follows stream ${this.#c.stream}: it takes writes only once promoted`);
    return this.#ledger;
  }
  mint(pubkey: Pubkey, amount: bigint | number): void {
    this.#writer().mint(pubkey, amount);
  }
  transfer(from: Pubkey, to: Pubkey, amount: bigint | number): void {
    this.#writer().transfer(from, to, amount);
  }
  mintBatch(ops: Uint8Array): Uint8Array {
    return this.#writer().mintBatch(ops);
  }
  transferBatch(ops: Uint8Array): Uint8Array {
    return this.#writer().transferBatch(ops);
  }
  /** Follower: its own log is durable up to here. Promoted: as a leader's sync() (local and JetStream). */
  sync(): Promise<void> {
    return this.#ledger.sync();
  }

  /** The replication handle once promoted. */
  get replication(): Replication | undefined {
    return this.#rep;
  }

  /** Why applying stopped, if it did. */
  get error(): Error | undefined {
    return this.#error;
  }

  /** The last stream sequence applied. */
  get appliedSeq(): number {
    return this.#seq;
  }

  lag(): Lag {
    const behind = this.#streamLastLsn > this.#lsn ? this.#streamLastLsn - this.#lsn : 0n;
    return {
      lsn: this.#lsn, behindRecords: behind,
      behindMs: this.#streamLast > this.#seq && this.#oldestUnappliedAt > 0 ? Math.max(0, Date.now() - this.#oldestUnappliedAt) : 0,
    };
  }

  /** Resolves once the replica has applied the stream up to its end as of this call (or up to `seq`). */
  async caughtUp(seq?: number, timeoutMs = 60_000): Promise<void> {
    const target = seq ?? (await streamEnd(this.#c)).last;
    const until = Date.now() + timeoutMs;
    while (this.#seq < target) {
      if (this.#error) throw this.#error;
      if (this.#stopped) throw new LedgerError('CLOSED', 'follower stopped');
      if (Date.now() > until) throw new LedgerError('IO_ERROR', `follower at sequence ${this.#seq}, not ${target}, after ${timeoutMs} ms`);
      this.#wake?.();
      await sleep(5);
    }
  }

  /** @internal */
  start(): void {
    this.#loop = this.#run();
    const ttlMs = leaseMs(this.#o.autoPromote);
    if (ttlMs !== undefined) this.#watchLease(ttlMs);
  }

  /**
   * autoPromote: a lease not renewed for ttlMs (counted on this process's clock from when its revision last
   * changed) is taken with a revision-checked update, then this follower promotes itself.
   */
  #watchLease(ttlMs: number): void {
    let kv: KV | undefined;
    let seenRev = -1;
    let seenAt = 0;
    let busy = false;
    const tick = async (): Promise<void> => {
      if (busy || this.#rep || this.#promoting || this.#error || this.#stopped) return;
      busy = true;
      try {
        kv ??= await leaseBucket(this.#c);
        const e = await kv.get(LEASE_KEY);
        if (!e || e.operation !== 'PUT') return; // no leader holds one: nothing to take over
        if (e.revision !== seenRev) {
          seenRev = e.revision;
          seenAt = Date.now();
          return;
        }
        if (Date.now() - seenAt < ttlMs) return;
        const rev = await kv.update(LEASE_KEY, JSON.stringify({ term: 'promoting', at: Date.now() }), e.revision, this.#c.timeoutMs);
        clearInterval(this.#leaseWatch);
        try {
          const r = await this.#promote({ kv, rev, ttlMs });
          this.#o.onPromoted?.(r);
        } catch (err) {
          this.#o.onPromoted?.(undefined, err as Error);
        }
      } catch {
        // another follower took the lease first, or JetStream did not answer: watch on
      } finally {
        busy = false;
      }
    };
    this.#leaseWatch = setInterval(() => void tick(), Math.max(100, Math.floor(ttlMs / 3)));
    this.#leaseWatch.unref();
  }

  async #run(): Promise<void> {
    const prefetch: Promise<StoredMsg | undefined>[] = [];
    let next = this.#seq + 1;
    let lastInfo = 0;
    while (!this.#stopped) {
      try {
        if (Date.now() - lastInfo > 200 || next > this.#streamLast) {
          const end = await streamEnd(this.#c);
          lastInfo = Date.now();
          if (end.last > this.#streamLast) {
            this.#streamLast = end.last;
            const m = await getMsg(this.#c, end.last);
            if (m) this.#streamLastLsn = BigInt(hdr(m, H_LAST) || '0');
          }
          if (end.first > this.#seq + 1 && end.last >= end.first) {
            throw new LedgerError('INVALID_OPTIONS', `stream ${this.#c.stream} was trimmed past this follower (it needs sequence ` +
              `${this.#seq + 1}, the stream starts at ${end.first}): follow() again from the newest snapshot`);
          }
        }
        if (this.#seq >= this.#streamLast) {
          this.#oldestUnappliedAt = 0;
          await this.#persist(false);
          await new Promise<void>((r) => {
            const t = setTimeout(r, 20);
            this.#wake = () => {
              clearTimeout(t);
              r();
            };
          });
          this.#wake = undefined;
          continue;
        }
        while (prefetch.length < 8 && next <= this.#streamLast) {
          const pm = getMsg(this.#c, next++, true);
          pm.catch(() => {}); // dropped unread when applying starts over; awaited (and thrown) otherwise
          prefetch.push(pm);
        }
        const m = await prefetch.shift()!;
        if (!m) {
          // Not there (any more): start over from what was applied.
          prefetch.length = 0;
          next = this.#seq + 1;
          lastInfo = 0;
          continue;
        }
        if (this.#stopped) break;
        this.#oldestUnappliedAt = m.time.getTime();
        this.#apply(m);
        await this.#persist(false);
      } catch (e) {
        prefetch.length = 0;
        next = this.#seq + 1;
        if (this.#stopped) break;
        if (!transient(e)) {
          this.#error = e as Error;
          this.#stopped = true;
          this.#o.onError?.(e as Error);
          break;
        }
        await sleep(100);
      }
    }
  }

  /** Applies one message (LSNs already applied are skipped); throws CORRUPTION when the result is not the leader's. */
  #apply(m: StoredMsg): void {
    const where = `stream ${this.#c.stream} sequence ${m.seq}`;
    if (m.seq !== this.#seq + 1) throw new LedgerError('CORRUPTION', `${where}: expected sequence ${this.#seq + 1}`);
    if (hdr(m, H_LEDGER) !== this.#ledgerId) {
      throw new LedgerError('CORRUPTION', `${where}: a message of ledger ${hdr(m, H_LEDGER)}, this replica is of ${this.#ledgerId}`);
    }
    // (An empty Gl-Prev: its writer could not read the message before it, trimmed meanwhile.)
    if (this.#lastId !== '' && hdr(m, H_PREV) !== '' && hdr(m, H_PREV) !== baseId(this.#lastId)) {
      throw new LedgerError('CORRUPTION', `${where}: follows ${hdr(m, H_PREV)}, the message before it is ${this.#lastId}`);
    }
    let p = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.length);
    const encoding = hdr(m, H_ENCODING);
    if (encoding === DEFLATE) {
      try {
        p = inflateRawSync(p);
      } catch (e) {
        throw new LedgerError('CORRUPTION', `${where}: cannot inflate: ${(e as Error).message}`);
      }
    } else if (encoding !== '') {
      throw new LedgerError('CORRUPTION', `${where}: unknown encoding ${encoding}`);
    }
    // The checksum is of the records themselves (before compression).
    if (String(crc32c(p)) !== hdr(m, H_CRC)) throw new LedgerError('CORRUPTION', `${where}: checksum mismatch`);
    const txns = decodeTxns(p, where);
    let i = 0;
    while (i < txns.length && txns[i].lsn <= this.#lsn) i++;
    if (i > 0) this.#checkApplied(p, txns.slice(0, i), where);
    while (i < txns.length) {
      if (txns[i].lsn !== this.#lsn + 1n) {
        throw new LedgerError('CORRUPTION', `${where}: LSN ${txns[i].lsn} follows LSN ${this.#lsn} of this replica`);
      }
      // A run of consecutive mints or transfers goes in as one batch.
      let j = i;
      while (j < txns.length && txns[j].mint === txns[i].mint) j++;
      this.#applyRun(p, txns.slice(i, j), where);
      i = j;
    }
    this.#seq = m.seq;
    this.#lastId = hdr(m, MSG_ID);
  }

  /**
   * Transactions this replica holds already (applied before a restart, then skipped): each of their accounts must be
   * here, changed by that LSN or a later one, and where that LSN is the last that changed it, equal to the leader's
   * image byte for byte. A replica written behind replication's back (an LSN of its own) fails this: CORRUPTION.
   */
  #checkApplied(p: Buffer, txns: Txn[], where: string): void {
    const at = txns.flatMap((t) => t.at);
    const keys = Buffer.allocUnsafe(at.length * 32);
    at.forEach((r, k) => p.copy(keys, k * 32, r + Wal.ACCOUNT, r + Wal.ACCOUNT + 32));
    const images = this.#ledger.getBatch(keys);
    at.forEach((r, k) => {
      const img = Buffer.from(images.buffer, images.byteOffset + k * 128, 128);
      const lsn = p.readBigUInt64LE(r + Wal.LSN);
      const local = img.readBigUInt64LE(40); // the account's last change here (0: no such account)
      const same = local > lsn || (local === lsn && img.equals(p.subarray(r + Wal.ACCOUNT, r + Wal.ACCOUNT + 128)));
      if (!same) {
        throw new LedgerError('CORRUPTION', `${where}: account ${p.toString('hex', r + Wal.ACCOUNT, r + Wal.ACCOUNT + 32)} at LSN ` +
          `${lsn} is not the leader's on this replica (last changed here at LSN ${local}): it has diverged`);
      }
    });
  }

  #applyRun(p: Buffer, run: Txn[], where: string): void {
    const mint = run[0].mint;
    const size = mint ? MINT_OP_SIZE : TRANSFER_OP_SIZE;
    const ops = Buffer.allocUnsafe(run.length * size);
    const last = new Map<string, number>(); // key -> offset of its last image in this run
    run.forEach((t, k) => {
      const o = k * size;
      const a = t.at[0];
      p.copy(ops, o, a + Wal.ACCOUNT, a + Wal.ACCOUNT + 32);
      if (mint) {
        ops.writeBigUInt64LE(p.readBigUInt64LE(a + Wal.AMOUNT), o + 32);
      } else {
        const b = t.at[1];
        p.copy(ops, o + 32, b + Wal.ACCOUNT, b + Wal.ACCOUNT + 32);
        ops.writeBigUInt64LE(p.readBigUInt64LE(a + Wal.AMOUNT), o + 64);
      }
      for (const r of t.at) last.set(p.toString('latin1', r + Wal.ACCOUNT, r + Wal.ACCOUNT + 32), r);
    });
    const st = mint ? this.#ledger.mintBatch(ops) : this.#ledger.transferBatch(ops);
    for (let k = 0; k < st.length; k++) {
      if (st[k] !== 0) {
        throw new LedgerError('CORRUPTION', `${where}: LSN ${run[k].lsn} did not apply on this replica (status ${st[k]}): it has diverged`);
      }
    }
    this.#lsn += BigInt(run.length);
    const keys = Buffer.allocUnsafe(last.size * 32);
    const at = [...last.values()];
    at.forEach((r, k) => p.copy(keys, k * 32, r + Wal.ACCOUNT, r + Wal.ACCOUNT + 32));
    const images = this.#ledger.getBatch(keys);
    at.forEach((r, k) => {
      if (Buffer.compare(images.subarray(k * 128, k * 128 + 128), p.subarray(r + Wal.ACCOUNT, r + Wal.ACCOUNT + 128)) !== 0) {
        throw new LedgerError('CORRUPTION', `${where}: account ${p.toString('hex', r + Wal.ACCOUNT, r + Wal.ACCOUNT + 32)} after LSN ` +
          `${p.readBigUInt64LE(r + Wal.LSN)} differs from the leader's image: this replica has diverged`);
      }
    });
  }

  /** Makes the applied sequence durable: the follower's own sync() first, then the REPLICATION file. */
  async #persist(force: boolean): Promise<void> {
    const every = this.#o.persistEveryMs ?? 200;
    if (!force && Date.now() - this.#persistedAt < every) return;
    this.#persistedAt = Date.now();
    const s: ReplicaState = { stream: this.#c.stream, ledgerId: this.#ledgerId, role: 'follower', seq: this.#seq, lsn: String(this.#lsn) };
    const prev = readState(this.dir);
    if (prev && prev.role === 'follower' && prev.seq === s.seq) return;
    await this.#ledger.sync();
    writeState(this.dir, s);
  }

  async #stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
  }

  /**
   * Becomes the writer: applies the stream to its end, claims it (a message fenced with the last sequence read:
   * if anyone appended meanwhile, it applies that too and tries again), then publishes its own writes. The old
   * leader's next publish is refused from then on (FENCED).
   */
  async promote(): Promise<Replication> {
    return this.#promote(undefined);
  }

  #promote(lease: { kv: KV; rev: number; ttlMs: number } | undefined): Promise<Replication> {
    if (this.#rep) return Promise.resolve(this.#rep);
    this.#promoting ??= this.#promoteOnce(lease).finally(() => {
      this.#promoting = undefined;
    });
    return this.#promoting;
  }

  async #promoteOnce(lease: { kv: KV; rev: number; ttlMs: number } | undefined): Promise<Replication> {
    if (this.#leaseWatch) clearInterval(this.#leaseWatch);
    if (this.#error) throw this.#error;
    await this.#stop();
    if (this.#error) throw this.#error;
    const lo = leaderDefaults({ servers: [], stream: this.#c.stream, ...(this.#o.leader ?? {}) });
    for (let attempt = 0; attempt < 100; attempt++) {
      const end = await streamEnd(this.#c);
      for (let seq = this.#seq + 1; seq <= end.last; seq++) {
        const m = await retrying(() => getMsg(this.#c, seq), this.#c.timeoutMs * 5);
        if (!m) throw new LedgerError('INVALID_OPTIONS', `stream ${this.#c.stream} no longer holds sequence ${seq}`);
        this.#apply(m);
      }
      if (this.#lastId === '' && this.#seq > 0) {
        // Resumed or restored: the chain goes on from the id of the last message applied.
        const m = await retrying(() => getMsg(this.#c, this.#seq), this.#c.timeoutMs * 5);
        if (m) this.#lastId = hdr(m, MSG_ID);
      }
      const term = randomId();
      this.#ledger.setTap(true);
      const seq = await claim(this.#c, this.#ledgerId, term, this.#lsn, this.#seq, this.#lastId);
      if (seq === undefined) {
        this.#ledger.setTap(false);
        continue;
      }
      await this.#ledger.sync();
      writeState(this.dir, { stream: this.#c.stream, ledgerId: this.#ledgerId, role: 'leader', term });
      // The lease this follower took (autoPromote), or a fresh one when it is to hold one (leader.lease).
      const held = lease ?? await takeLease(this.#c, lo, term);
      this.#rep = new Publisher(this.#ledger, this.#c, true, lo, {
        ledgerId: this.#ledgerId, term, seq, lastId: `${this.#ledgerId}:${term}:0`, lsn: this.#lsn, lease: held,
      });
      return this.#rep;
    }
    throw new LedgerError('FENCED', `promote: could not claim stream ${this.#c.stream}: another writer keeps appending`);
  }

  /** Stops applying (or publishing, once promoted), makes what was applied durable and closes the ledger. */
  async close(): Promise<void> {
    if (this.#leaseWatch) clearInterval(this.#leaseWatch);
    if (this.#promoting) await this.#promoting.catch(() => {});
    if (this.#rep) {
      await this.#ledger.close(); // closes the replication first
      return;
    }
    await this.#stop();
    try {
      await this.#persist(true);
    } catch {
      // closing anyway: the file names an earlier sequence, and LSNs already applied are skipped
    }
    await this.#ledger.close();
    await this.#c.nc.close().catch(() => {});
  }
}

/**
 * Opens (or creates) a replica in `dir` and starts applying the stream. An empty or missing `dir` is created from
 * the newest snapshot. A replica directory resumes from the stream sequence it recorded. An old leader's
 * directory is kept as it is only when its term wrote the stream's last message and its LSN is that message's;
 * otherwise it holds operations the stream never acknowledged: it is moved aside (`<dir>.diverged-<time>`,
 * `movedAside`) and the replica starts from the newest snapshot.
 */
export async function follow(dir: string, options: FollowOptions): Promise<Follower> {
  if (typeof dir !== 'string' || dir.length === 0) throw new LedgerError('INVALID_OPTIONS', 'follow: dir must be a non-empty string');
  checkOptions(options);
  const c = await openConn(options);
  try {
    let st = fs.existsSync(dir) && fs.readdirSync(dir).length > 0 ? readState(dir) : undefined;
    if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0 && !st) {
      throw new LedgerError('INVALID_OPTIONS', `follow: ${dir} holds something that is not a replica of ${c.stream}: give an empty directory`);
    }
    let movedAside: string | undefined;
    const end = await streamEnd(c);
    if (st && st.stream !== c.stream) {
      throw new LedgerError('INVALID_OPTIONS', `follow: ${dir} is a replica of stream ${st.stream}, not ${c.stream}`);
    }
    if (st) {
      let ok = true;
      if (st.role === 'follower') {
        ok = st.seq !== undefined && end.first <= st.seq + 1;
      } else {
        const last = end.last > 0 ? await retrying(() => getMsg(c, end.last), c.timeoutMs * 5) : undefined;
        const l = await Ledger.open(dir, options.ledger ?? {});
        const lsn = l.stats().lsn;
        await l.close();
        ok = !!last && hdr(last, H_TERM) === st.term && hdr(last, H_LEDGER) === st.ledgerId && BigInt(hdr(last, H_LAST) || '-1') === lsn;
        if (ok) {
          st = { stream: c.stream, ledgerId: st.ledgerId, role: 'follower', seq: end.last, lsn: String(lsn) };
          writeState(dir, st);
        }
      }
      if (!ok) {
        movedAside = `${dir.replace(/\/+$/, '')}.diverged-${Date.now()}`;
        fs.renameSync(dir, movedAside);
        st = undefined;
      }
    }
    if (!st) {
      if (fs.existsSync(dir)) fs.rmdirSync(dir); // empty
      const until = Date.now() + (options.bootstrapTimeoutMs ?? 30_000);
      for (;;) {
        try {
          const snap = await restoreSnapshot(c, dir, undefined);
          st = { stream: c.stream, ledgerId: snap.ledgerId, role: 'follower', seq: snap.seq, lsn: String(snap.lsn) };
          writeState(dir, st);
          break;
        } catch (e) {
          // No snapshot yet (the leader is starting), or JetStream busy: wait and try again.
          if (!(e instanceof LedgerError && e.code === 'INVALID_OPTIONS') && !transient(e) || Date.now() > until) throw e;
          await sleep(200);
        }
      }
    }
    const ledger = await Ledger.open(dir, options.ledger ?? {});
    const f = new Follower(ledger, c, options, { ledgerId: st.ledgerId, seq: st.seq!, movedAside });
    f.start();
    return f;
  } catch (e) {
    await c.nc.close().catch(() => {});
    throw e;
  }
}
