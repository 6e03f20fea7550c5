/**
 * One shard of the JS engine: its account file, its index and its log, the
 * same files as native/shard.cpp writes, byte for byte.
 *
 * Account file: held in memory ("the private mapping") as one zero-filled
 * Buffer per 2^24 slots (allocated lazily by the OS), filled from the file
 * 64 KiB at a time on first touch. Changes stay in memory, their pages marked
 * dirty, until a checkpoint writes them back after the log is durable.
 *
 * Index: a Uint32Array of (slot+1, tag) pairs with linear probing. Pages are
 * read and checked against the page-CRC table the first time a lookup touches
 * them, so opening is O(1) in the index size, as in the native engine.
 *
 * Log: two files per shard, one per log generation (WalLog). Records are built
 * in a per-shard staging buffer and written to the file of the active epoch
 * with one positioned write per operation (or per batch): in the kernel, so
 * surviving kill -9, before the call returns. A file grows in chunks at the
 * same boundaries as the native log, so both engines leave the same shape of
 * file behind.
 *
 * Growth (native/shard.hpp): the account file grows by nextDataCapacity (its last segment is replaced by a
 * full one, zero-filled lazily, the first time it has to); the index doubles by the same incremental rehash
 * as native, step for step, so that both engines leave the same files.
 *
 * Checkpoint: the dirty-page sets are "live" (changed since the last
 * hand-over) or "captured" (being written back by a background checkpoint);
 * capture() swaps them. The write-back copies pages out in chunks (Chunk), so
 * the pages may go on changing while a copy waits for the log to be durable.
 */
import * as fs from 'node:fs';
import { BatchStatus } from '../errors';
import {
  ACCOUNT_VERSION, ENTRIES_PER_PAGE, INDEX_LOAD_DIVISOR, INDEX_MAGIC, INDEX_VERSION, MAX_ACCOUNTS_PER_SHARD,
  MAX_INDEX_CAPACITY, PAGE_SIZE, REHASH_ENTRIES_PER_INSERT, WAL_GENERATIONS, WAL_MAGIC, WAL_RECORD_SIZE, WalType,
  indexCapacityFor, indexTableBytes, nextDataCapacity, shardFile, walFile,
} from '../format';
import { crc32cWords, crcOverRecord, crcWords, recordCrcDelta } from './crc';
import { K, bucketOf, hashKeyWords } from './hash';
import type { Supply } from './supply';
import {
  O_CREAT, O_RDWR, O_TRUNC, closeFile, dataSyncOrThrow, fail, fileSize, openFile, readAt, readUpTo, resize, writeAt,
  crashPoint,
} from './io';

const SLOTS_PER_PAGE = PAGE_SIZE / 128; // 32
/**
 * Slots per segment: 2^16 (8 MiB). Segments are always allocated whole (zero-filled lazily by the OS: only
 * touched pages cost memory), so a shard grows by adding segments and never copies one: a copy of megabytes
 * into fresh pages costs tens of milliseconds (a page fault per 4 KiB).
 */
export const SEG_SHIFT = 16;
export const SEG_MASK = (1 << SEG_SHIFT) - 1;
const REGION_SHIFT = 9; // slots read from the file at a time: 512 (64 KiB)
const REGION_SLOTS = 1 << REGION_SHIFT;
const REGION_BYTES = REGION_SLOTS * 128;
const SEG_PAGES = (SEG_MASK + 1) / SLOTS_PER_PAGE; // data pages per segment
const WAL_WORDS = WAL_RECORD_SIZE / 4; // 56
export const WAL_CHUNK = 4 * 1024 * 1024;
const WAL_FIRST_CHUNK = 256 * 1024;
const WAL_RESERVATION = 64 * 1024 * 1024 * 1024;
const STAGE_RECORDS = 512;
const TWO32 = 4294967296;
/** probe(): a damaged index page (or a full table): rebuild from the account file. */
const DAMAGED = -2;

// Account record words (native/format.h AccountRecord).
export const A_LAMPORTS = 8;
export const A_LSN = 10;
const A_CREATED_LSN = 22;
const A_SLOT = 24;
const A_VERSION = 27;
const A_CRC = 31;
// Log record words (native/format.h WalRecord).
const W_TIMESTAMP = 1;
const W_TYPE = 3;
const W_CRC = 4;
const W_ACCOUNT = 5;
const W_LSN = 37;
const W_EPOCH = 39;
const W_SHARD = 41;
const W_SLOT = 42;
const W_LEGS = 43;
const W_LEG = 44;
const W_AMOUNT = 45;
const W_DURABLE_LSN = 47;
const W_SUPPLY = 49;
/**
 * Background write-back: pages copied before one wait for the log to be durable (8 MiB: the wait is a group
 * fsync, so fewer and larger batches than native's 1 MiB, whose thread can afford to wait), and pages copied
 * or written per event-loop slice (1 MiB, well under a millisecond of work).
 */
export const WRITEBACK_PAGES = 2048;
export const SLICE_PAGES = 256;

function freeBytes(dir: string): number {
  try {
    const st = fs.statfsSync(dir);
    return st.bavail * st.bsize;
  } catch {
    return Infinity;
  }
}

export function indexFileBytes(capacity: number): number {
  return PAGE_SIZE + indexTableBytes(capacity / ENTRIES_PER_PAGE) + capacity * 8;
}

/** Reads of the first records of a log file (headerOnly, holdsRecordsOf). */
const PROBE = Buffer.alloc(2 * WAL_RECORD_SIZE);
const PROBE32 = new Uint32Array(PROBE.buffer, PROBE.byteOffset, PROBE.length / 4);
function epochAt(u: Uint32Array, w: number): number {
  return u[w + W_EPOCH] + u[w + W_EPOCH + 1] * TWO32;
}

const ZERO_PAGE_CRC = crc32cWords(new Uint32Array(PAGE_SIZE / 4), 0, PAGE_SIZE / 4);
const ZEROS = Buffer.alloc(REGION_BYTES);
const ZEROS_SCRATCH = Buffer.alloc(REGION_BYTES); // rebuild's read buffer

/** The shape of the ledger as the shards need it (numbers: LSNs and epochs stay far below 2^53). */
export interface ShardManifest {
  shards: number;
  accountsPerShard: number;
  indexCapacity: number;
  seed: number;
  epoch: number;
  checkpointLsn: number;
}

/** CRC of a log record: bytes [0,16) then [20,224). */
/** The u128 at word w (low word first). */
function supplyAt(u: Uint32Array, w: number): bigint {
  return BigInt(u[w]) | (BigInt(u[w + 1]) << 32n) | (BigInt(u[w + 2]) << 64n) | (BigInt(u[w + 3]) << 96n);
}

export function walCrc(u: Uint32Array, w: number): number {
  return ~crcWords(crcWords(0xffffffff, u, w, W_CRC), u, w + W_ACCOUNT, WAL_WORDS - W_ACCOUNT) >>> 0;
}

function lo32(v: number): number {
  return v >>> 0;
}
function hi32(v: number): number {
  return Math.floor(v / TWO32) >>> 0;
}

/** What recovery found in one log file (native LogScan). */
export interface LogScan {
  /** Byte offset after the last record of the valid prefix (0: the file has no header of the epoch). */
  prefixEnd: number;
  /** Records in the prefix, after the header. */
  records: number;
  /** The prefix ended at damage, not at a clean end. */
  damaged: boolean;
  /** Damaged bytes, and intact records of the epoch, after the prefix. */
  droppedBytes: number;
  /** Largest durable LSN an intact record of the epoch carries, anywhere in the file; and that record's offset. */
  durableLsn: number;
  durableAt: number;
}

/**
 * One log file of a shard: shard_NNN.<g>.wal holds the records of the epochs e with e & 1 == g (native
 * LogWriter). Record 0 is a HEADER naming the epoch of the file's current use; its records follow.
 */
export class WalLog {
  fd = -1;
  readonly name: string;
  /** File offset after the last record written to the kernel; 0 until a header of the current use is known. */
  pos = 0;
  /** The file is allocated at least this far (chunk boundaries counted from 0). */
  mapped = 0;
  /** LSN of the last record appended since the file was reset: a group fsync covers the file while it is past the durable LSN. */
  lastLsn = 0;
  /** Recovery: the whole file as read, and the end of its valid prefix. */
  scan: Buffer | undefined;
  scan32: Uint32Array | undefined;
  prefixEnd = 0;

  constructor(name: string) {
    this.name = name;
  }

  closeScan(): void {
    this.scan = undefined;
    this.scan32 = undefined;
    this.prefixEnd = 0;
  }
}

/**
 * Scratch of a background write-back: up to WRITEBACK_PAGES page copies, their page numbers and (index pages)
 * the CRC of each copy; and the writes planned from them (runs of consecutive pages: where in `buf`, how
 * long, where in the file). One per core, reused.
 *
 * The writes stay on the JS thread, a slice at a time (SLICE_PAGES), unlike the fsyncs: a write left in flight
 * on the pool when a foreground checkpoint takes over could land after that checkpoint's newer copy of the
 * same page. A late fsync is harmless.
 */
export class Chunk {
  readonly buf = Buffer.alloc(WRITEBACK_PAGES * PAGE_SIZE);
  readonly words = new Uint32Array(this.buf.buffer, this.buf.byteOffset, this.buf.length / 4);
  readonly pages = new Uint32Array(WRITEBACK_PAGES);
  readonly crcs = new Uint32Array(WRITEBACK_PAGES);
  /** Pages in the chunk. */
  n = 0;
  readonly runAt = new Float64Array(SLICE_PAGES);
  readonly runLen = new Float64Array(SLICE_PAGES);
  readonly runPos = new Float64Array(SLICE_PAGES);
  /** Planned writes. */
  runs = 0;

  /** Plans the writes of the copies [from, to) (at most SLICE_PAGES) at fileOffset + page * PAGE_SIZE. */
  plan(from: number, to: number, fileOffset: number, fileBytes: number): void {
    const pages = this.pages;
    this.runs = 0;
    for (let i = from; i < to;) {
      let j = i + 1;
      while (j < to && pages[j] === pages[j - 1] + 1) j++;
      const off = pages[i] * PAGE_SIZE;
      this.runAt[this.runs] = i * PAGE_SIZE;
      this.runLen[this.runs] = Math.min((j - i) * PAGE_SIZE, fileBytes - off);
      this.runPos[this.runs] = fileOffset + off;
      this.runs++;
      i = j;
    }
  }

  /** The planned writes, on this thread. */
  writePlanned(fd: number, name: string): void {
    for (let r = 0; r < this.runs; r++) writeAt(fd, this.buf, this.runAt[r], this.runLen[r], this.runPos[r], name);
  }
}

/** A HEADER record of `epoch` for `shard` (durable LSN 0, account zero), in `HEADER`. */
const HEADER = Buffer.alloc(WAL_RECORD_SIZE);
const HEADER32 = new Uint32Array(HEADER.buffer, HEADER.byteOffset, WAL_WORDS);
function encodeLogHeader(shard: number, epoch: number, now: number): void {
  const u = HEADER32;
  u.fill(0);
  u[0] = WAL_MAGIC;
  u[W_TIMESTAMP] = lo32(now);
  u[W_TIMESTAMP + 1] = hi32(now);
  u[W_TYPE] = WalType.HEADER;
  u[W_EPOCH] = lo32(epoch);
  u[W_EPOCH + 1] = hi32(epoch);
  u[W_SHARD] = shard;
  u[W_CRC] = walCrc(u, 0);
}

function encodeIndexHeader(h: Buffer, shard: number, capacity: number, count: number, pages: number,
  epoch: number, checkpointLsn: number, seed: number, tableCrc: number): void {
  h.fill(0, 0, 64);
  h.writeUInt32LE(INDEX_MAGIC, 0);
  h.writeUInt32LE(INDEX_VERSION, 4);
  h.writeUInt32LE(shard, 8);
  h.writeUInt32LE(capacity, 12);
  h.writeUInt32LE(count, 16);
  h.writeUInt32LE(pages, 20);
  h.writeBigUInt64LE(BigInt(epoch), 24);
  h.writeBigUInt64LE(BigInt(checkpointLsn), 32);
  h.writeUInt32LE(seed, 40);
  h.writeUInt32LE(tableCrc, 44);
  h.writeUInt32LE(crc32cWords(new Uint32Array(h.buffer, h.byteOffset, 15), 0, 15), 60);
}

/**
 * Recovery pass 1 over one file (native LogReader::Scan): the valid prefix of `epoch`'s records, what stops
 * it (a clean end, or damage), what lies after it, and the largest durable LSN any intact record of the
 * epoch carries. The file stays in memory (log.scan) for the passes that follow. Shared with verifyLedger
 * (src/verify.ts), which opens the file read-only: one implementation of the scan rules in TypeScript.
 */
export function scanWal(log: WalLog, shard: number, epoch: number, checkpointLsn: number): LogScan {
  const out: LogScan = { prefixEnd: 0, records: 0, damaged: false, droppedBytes: 0, durableLsn: 0, durableAt: 0 };
  const size = fileSize(log.fd);
  log.closeScan();
  if (size > 0xffffffff) fail(BatchStatus.IO_ERROR, `${log.name}: log of ${size} bytes is too large to replay here`);
  const b = Buffer.allocUnsafeSlow(size);
  const got = readUpTo(log.fd, b, 0, size, 0, log.name);
  b.fill(0, got);
  const u = new Uint32Array(b.buffer, b.byteOffset, Math.floor(size / 4));
  log.scan = b;
  log.scan32 = u;
  const eLo = lo32(epoch);
  const eHi = hi32(epoch);
  const intact = (w: number): boolean => u[w] === WAL_MAGIC && u[w + W_CRC] === walCrc(u, w);
  const ours = (w: number): boolean =>
    u[w] === WAL_MAGIC && u[w + W_EPOCH] === eLo && u[w + W_EPOCH + 1] === eHi && u[w + W_SHARD] === shard &&
    u[w + W_CRC] === walCrc(u, w);
  const noteDurable = (w: number, off: number): void => {
    const d = u[w + W_DURABLE_LSN] + u[w + W_DURABLE_LSN + 1] * TWO32;
    if (d > out.durableLsn) {
      out.durableLsn = d;
      out.durableAt = off;
    }
  };
  const full = Math.floor(size / WAL_RECORD_SIZE) * WAL_RECORD_SIZE;
  let off = 0;
  if (full >= WAL_RECORD_SIZE && ours(0) && u[W_TYPE] === WalType.HEADER) {
    off = WAL_RECORD_SIZE;
    let prevLsn = 0;
    let prevLeg = 0;
    for (; off < full; off += WAL_RECORD_SIZE) {
      const w = off >>> 2;
      if (!ours(w)) break;
      const type = u[w + W_TYPE];
      const legs = u[w + W_LEGS];
      const leg = u[w + W_LEG];
      const lsn = u[w + W_LSN] + u[w + W_LSN + 1] * TWO32;
      const ok = type >= WalType.MINT && type <= WalType.IMAGE && legs >= 1 && leg < legs &&
        u[w + W_SLOT] < MAX_ACCOUNTS_PER_SHARD && lsn > checkpointLsn &&
        (lsn > prevLsn || (lsn === prevLsn && leg > prevLeg));
      if (!ok) break;
      prevLsn = lsn;
      prevLeg = leg;
      out.records++;
      noteDurable(w, off);
    }
  }
  out.prefixEnd = log.prefixEnd = off;
  // What stops the prefix: a clean end (end of file, space extended ahead of the writer and never
  // written, a record left over from an earlier epoch of this reused file) or damage. Everything after
  // it is cut; the intact records of this epoch there still tell how far the log was durable.
  let first = true;
  for (let o = off; o < full; o += WAL_RECORD_SIZE) {
    const w = o >>> 2;
    let clean = false;
    if (ours(w) && u[w + W_TYPE] !== WalType.HEADER) {
      out.droppedBytes += WAL_RECORD_SIZE;
      noteDurable(w, o);
    } else if (ZEROS.compare(b, o, o + WAL_RECORD_SIZE, 0, WAL_RECORD_SIZE) === 0) {
      clean = true;
    } else if (intact(w) && epochAt(u, w) < epoch) {
      clean = true;
    } else if (!(o === 0 && intact(w))) {
      out.droppedBytes += WAL_RECORD_SIZE;
    } else {
      // record 0 that is an intact record of another epoch or shard: a file not yet stamped for this
      // epoch, no damage
      clean = true;
    }
    if (first) out.damaged = !clean;
    first = false;
  }
  for (let o = full; o < size; o++) {
    if (b[o] !== 0) {
      out.droppedBytes += size - full;
      if (first) out.damaged = true;
      break;
    }
  }
  return out;
}

/** LSN and type of the first record of the prefix the scan kept; lsn 0 when there is none. */
export function walFirstLsn(log: WalLog): { lsn: number; type: number } {
  if (log.prefixEnd <= WAL_RECORD_SIZE) return { lsn: 0, type: 0 };
  const u = log.scan32!;
  const w = WAL_RECORD_SIZE >>> 2;
  return { lsn: u[w + W_LSN] + u[w + W_LSN + 1] * TWO32, type: u[w + W_TYPE] };
}

/** Recovery pass 2: count the legs of each transaction (all files together decide the cut). */
export function countWalLegs(log: WalLog, base: number, counts: Uint32Array, legs: Uint32Array): void {
  const u = log.scan32!;
  for (let o = WAL_RECORD_SIZE; o < log.prefixEnd; o += WAL_RECORD_SIZE) {
    const w = o >>> 2;
    const lsn = u[w + W_LSN] + u[w + W_LSN + 1] * TWO32;
    if (lsn < base || lsn - base >= counts.length) continue;
    const i = lsn - base;
    counts[i]++;
    if (legs[i] === 0) legs[i] = u[w + W_LEGS];
    else if (legs[i] !== u[w + W_LEGS]) legs[i] = 0xffffffff; // disagreeing legs: never complete
  }
}

/** A log file recovery scanned (pass 1), and what it found. */
export interface ScannedLog {
  log: WalLog;
  scan: LogScan;
}

/** Recovery pass 2 over every live file of every shard (docs/durability.md, steps 2 and 3). */
export interface LogCut {
  /** The first LSN replay expects: the checkpoint LSN + 1, or the LSN of a wal:false image journal. */
  base: number;
  /** The first LSN that is missing or incomplete: nothing at or after it is applied in any shard. */
  cut: number;
  /** D: every LSN up to it was on stable storage when some record that survived was written. */
  durable: number;
  /** The file that holds the record carrying D. */
  proof: ScannedLog;
  /**
   * Set when cut <= D (synced records are damaged or missing): what the open's CORRUPTION says, naming the
   * first damaged file and offset, or the missing LSN, and the record that proves it durable.
   */
  corruption: string | undefined;
}

/**
 * Where recovery cuts the logs (files in shard order, generation E before E+1, each scanned with scanWal), and
 * whether that cut loses synced records. Shared by the JS engine's replay and verifyLedger.
 */
export function globalCut(files: ScannedLog[], checkpointLsn: number): LogCut {
  let total = 0;
  let durable = 0;
  let proof = files[0];
  for (const f of files) {
    total += f.scan.records;
    if (f.scan.durableLsn > durable) {
      durable = f.scan.durableLsn;
      proof = f;
    }
  }
  // Transactions must follow the checkpoint without a gap, each with all of
  // its legs; the first one that does not is where every shard is cut. A
  // wal:false journal is one transaction at the LSN the checkpoint reached.
  let base = checkpointLsn + 1;
  let first = Infinity;
  let firstType = 0;
  for (const f of files) {
    const r = walFirstLsn(f.log);
    if (r.lsn !== 0 && r.lsn < first) {
      first = r.lsn;
      firstType = r.type;
    }
  }
  if (first !== Infinity && firstType === WalType.IMAGE) base = first;
  const counts = new Uint32Array(total + 1);
  const legs = new Uint32Array(total + 1);
  for (const f of files) countWalLegs(f.log, base, counts, legs);
  let cut = base;
  while (cut - base < counts.length && legs[cut - base] !== 0 && counts[cut - base] === legs[cut - base]) cut++;
  // Every LSN up to `durable` was on stable storage before some record that
  // survived was written: if the cut falls there, synced records are damaged
  // or missing. That is never a torn tail.
  let corruption: string | undefined;
  if (cut <= durable) {
    let where = '';
    for (const f of files) {
      if (f.scan.damaged) {
        where = `${f.log.name}: damaged record at offset ${f.scan.prefixEnd}`;
        break;
      }
    }
    if (where === '') where = `log records of LSN ${cut} are missing`;
    corruption = `${where}, but ${proof.log.name} at offset ${proof.scan.durableAt} proves every operation up to ` +
      `LSN ${durable} durable: synced operations are damaged (open with repair: true to keep the valid prefix)`;
  }
  return { base, cut, durable, proof, corruption };
}

/** Whether an index header read at open is one this code could have written: the file is laid out for its capacity. */
function plausibleHeader(h: Buffer, shard: number, atLeast: number): boolean {
  const cap = h.readUInt32LE(12);
  return h.readUInt32LE(60) === crc32cWords(new Uint32Array(h.buffer, h.byteOffset, 15), 0, 15) &&
    h.readUInt32LE(0) === INDEX_MAGIC && h.readUInt32LE(4) === INDEX_VERSION && h.readUInt32LE(8) === shard &&
    cap >= atLeast && cap <= MAX_INDEX_CAPACITY && (cap & (cap - 1)) === 0 && h.readUInt32LE(20) === cap / ENTRIES_PER_PAGE;
}

export class Shard {
  readonly number: number;
  /** Slots of the account file: the file's size / 128; it grows (growData). */
  capacity: number;
  readonly seed: number;
  readonly dir: string;
  count = 0;
  indexRebuilds = 0;
  /** Out-parameter of find(): the empty entry where a missing key would go. */
  pos = 0;

  // ---- accounts
  dataFd = -1;
  dataBytes: number;
  dataPages: number;
  readonly segs: Buffer[] = [];
  readonly segs32: Uint32Array[] = [];
  loaded!: Uint8Array;
  /** Records whose CRC has been checked (or that this engine sealed) since they were read. */
  checked!: Uint8Array;
  /** Data pages changed since the last hand-over (the live set). */
  dirtyData!: Uint8Array;
  /** The live sets are not empty. */
  anyDirty = false;
  /** Data pages a background checkpoint writes back: the live set at its hand-over (all zero otherwise). */
  capturedData!: Uint8Array;

  // ---- index
  indexFd = -1;
  /** The current table: capacity - 1, pages, and (fromFile) where its pages are in the file. */
  mask: number;
  indexPages: number;
  entriesOff: number;
  /** Unverified pages of the current table are read from the file (false: a table built in memory). */
  fromFile = true;
  readonly head = Buffer.alloc(64);
  pageCrcs!: Uint32Array;
  idx!: Uint32Array;
  verified!: Uint8Array;
  /** The table a rehash drains (undefined: none), as the current one; the next position to move. */
  oldIdx: Uint32Array | undefined;
  oldMask = 0;
  oldVerified: Uint8Array | undefined;
  oldFromFile = false;
  oldEntriesOff = 0;
  oldPageCrcs: Uint32Array | undefined;
  rehashPos = 0;
  indexResizes = 0;
  /** Capacity the index file is laid out for. */
  fileCapacity: number;
  /** At the hand-over: the table the checkpoint writes (undefined: a rehash ran, the index is not written). */
  capturedIdxBytes: Buffer | undefined;
  capturedIndexCapacity = 0;
  /** Index pages changed since the last hand-over (the live set). */
  dirtyIdx!: Uint8Array;
  /** Index pages a background checkpoint writes back (all zero otherwise). */
  capturedIdx!: Uint8Array;
  /** At the hand-over: the account count, and the rebuild count (a rebuild since makes the copies moot). */
  capturedCount = 0;
  capturedRebuilds = 0;
  /** The index file's header names the checkpoint after the manifest's (see loadIndex). */
  indexAhead = false;
  /** The index entries as bytes (the page copies come from here). */
  idxBytes!: Buffer;

  // ---- log
  /** The two log files: logs[e & 1] holds the records of epoch e. */
  readonly logs: WalLog[] = [];
  /** The file appends go to: that of the active log epoch. */
  log!: WalLog;
  stage: Buffer | undefined;
  stage32: Uint32Array | undefined;
  /** Bytes of records in the staging buffer, not yet written (they go at log.pos). */
  staged = 0;
  /** On the core's list of shards with staged records. */
  listed = false;

  readonly dataName: string;
  readonly indexName: string;

  static create(dir: string, shard: number, m: ShardManifest): void {
    const dataName = shardFile('shard', shard, 'bin');
    let fd = openFile(`${dir}/${dataName}`, O_RDWR | O_CREAT | O_TRUNC);
    try {
      resize(fd, m.accountsPerShard * 128, 'shard file');
      dataSyncOrThrow(fd, 'shard file');
    } finally {
      closeFile(fd);
    }

    const pages = m.indexCapacity / ENTRIES_PER_PAGE;
    const head = Buffer.alloc(PAGE_SIZE + indexTableBytes(pages));
    const table = new Uint32Array(head.buffer, head.byteOffset + PAGE_SIZE, pages);
    table.fill(ZERO_PAGE_CRC);
    encodeIndexHeader(head, shard, m.indexCapacity, 0, pages, m.epoch, m.checkpointLsn, m.seed, crc32cWords(table, 0, pages));
    fd = openFile(`${dir}/${shardFile('index', shard, 'bin')}`, O_RDWR | O_CREAT | O_TRUNC);
    try {
      resize(fd, indexFileBytes(m.indexCapacity), 'index file');
      writeAt(fd, head, 0, head.length, 0, 'index file');
      dataSyncOrThrow(fd, 'index file');
    } finally {
      closeFile(fd);
    }

    // Both log files, empty: the first checkpoint gives them their headers.
    for (let g = 0; g < WAL_GENERATIONS; g++) closeFile(openFile(`${dir}/${walFile(shard, g)}`, O_RDWR | O_CREAT | O_TRUNC));
  }

  constructor(dir: string, shard: number, m: ShardManifest) {
    this.dir = dir;
    this.number = shard;
    this.capacity = m.accountsPerShard;
    this.seed = m.seed;
    this.dataName = shardFile('shard', shard, 'bin');
    this.indexName = shardFile('index', shard, 'bin');
    for (let g = 0; g < WAL_GENERATIONS; g++) this.logs.push(new WalLog(walFile(shard, g)));
    this.log = this.logs[m.epoch & 1];
    // The account file's size is the capacity; the index header the index's.
    let size = 0;
    let indexCapacity = m.indexCapacity;
    try {
      this.dataFd = openFile(`${dir}/${this.dataName}`, O_RDWR);
      size = fileSize(this.dataFd);
      if (size % 128 !== 0 || size < this.capacity * 128 || size > MAX_ACCOUNTS_PER_SHARD * 128) {
        fail(BatchStatus.CORRUPTION, `${this.dataName}: size ${size}, expected a multiple of 128 from ` +
          `${this.capacity * 128} to ${MAX_ACCOUNTS_PER_SHARD * 128}`);
      }
      this.indexFd = openFile(`${dir}/${this.indexName}`, O_RDWR | O_CREAT);
      if (fileSize(this.indexFd) >= 64) {
        readAt(this.indexFd, this.head, 0, 64, 0, this.indexName);
        if (plausibleHeader(this.head, shard, m.indexCapacity)) indexCapacity = this.head.readUInt32LE(12);
      }
    } catch (e) {
      this.close();
      throw e;
    }
    this.capacity = size / 128;
    this.dataBytes = this.capacity * 128;
    this.dataPages = Math.ceil(this.dataBytes / PAGE_SIZE);
    this.indexPages = indexCapacity / ENTRIES_PER_PAGE;
    this.mask = indexCapacity - 1;
    this.fileCapacity = indexCapacity;
    this.entriesOff = PAGE_SIZE + indexTableBytes(this.indexPages);
    try {
      // Zero-filled allocations: the OS commits their pages as they are touched.
      this.loaded = new Uint8Array(Math.ceil(this.capacity / REGION_SLOTS));
      this.dirtyData = new Uint8Array(this.dataPages);
      this.capturedData = new Uint8Array(this.dataPages);
      this.checked = new Uint8Array(this.capacity);
      this.pageCrcs = new Uint32Array(this.indexPages);
      this.idx = new Uint32Array(indexCapacity * 2);
      this.verified = new Uint8Array(this.indexPages);
      this.dirtyIdx = new Uint8Array(this.indexPages);
      this.capturedIdx = new Uint8Array(this.indexPages);
      this.idxBytes = Buffer.from(this.idx.buffer, this.idx.byteOffset, this.idx.byteLength);
    } catch (e) {
      this.close();
      fail(BatchStatus.IO_ERROR, `shard ${shard}: cannot allocate memory for ${this.capacity} accounts and ` +
        `${indexCapacity} index entries: ${(e as Error).message}`);
    }
    try {
      const want = indexFileBytes(indexCapacity);
      // A short or missing index is rebuilt; give it its full size first.
      if (fileSize(this.indexFd) < want) resize(this.indexFd, want, this.indexName);
      readAt(this.indexFd, this.head, 0, 64, 0, this.indexName);
      readAt(this.indexFd, new Uint8Array(this.pageCrcs.buffer), 0, this.indexPages * 4, PAGE_SIZE, this.indexName);

      for (const log of this.logs) log.fd = openFile(`${dir}/${log.name}`, O_RDWR | O_CREAT);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Closes the files (idempotent). */
  close(): void {
    for (const fd of this.fds()) closeFile(fd);
    this.forgetFds();
  }

  fds(): number[] {
    return [...this.logs.map((log) => log.fd), this.indexFd, this.dataFd].filter((fd) => fd >= 0);
  }

  /** Drops the descriptors (their owner closes them) and the recovery scans. */
  forgetFds(): void {
    for (const log of this.logs) {
      log.fd = -1;
      log.closeScan();
    }
    this.indexFd = this.dataFd = -1;
  }

  // ------------------------------------------------------------------ accounts

  /** Reads a 64 KiB region of the account file into memory the first time it is touched. */
  loadRegion(r: number): void {
    const fileOff = r * REGION_BYTES;
    const len = Math.min(REGION_BYTES, this.dataBytes - fileOff);
    const first = r << REGION_SHIFT;
    readUpTo(this.dataFd, this.segment(first >>> SEG_SHIFT), (first & SEG_MASK) * 128, len, fileOff, this.dataName);
    this.loaded[r] = 1;
  }

  /**
   * Segment k, allocated (whole, zero-filled lazily by the OS) the first time a region of it is loaded: a shard
   * costs memory for the segments it uses, whatever its capacity, and grows without copying any.
   */
  segment(k: number): Buffer {
    let seg = this.segs[k];
    if (seg === undefined) {
      seg = this.segs[k] = Buffer.alloc((SEG_MASK + 1) * 128);
      this.segs32[k] = new Uint32Array(seg.buffer, seg.byteOffset, seg.length / 4);
    }
    return seg;
  }

  /** Word array holding `slot` (loaded); its record starts at word recWord(slot). */
  rec32(slot: number): Uint32Array {
    if (this.loaded[slot >>> REGION_SHIFT] === 0) this.loadRegion(slot >>> REGION_SHIFT);
    return this.segs32[slot >>> SEG_SHIFT];
  }

  recBuf(slot: number): Buffer {
    if (this.loaded[slot >>> REGION_SHIFT] === 0) this.loadRegion(slot >>> REGION_SHIFT);
    return this.segs[slot >>> SEG_SHIFT];
  }

  /**
   * CRC, version and self-slot all check out. A record is checked the first time it is used after
   * it was read from the file (or replayed); from then on only this engine writes it, always
   * sealing it, so the answer is remembered until the record is replaced by replay.
   */
  valid(slot: number): boolean {
    if (this.checked[slot] === 1) return true;
    const u = this.rec32(slot);
    const w = (slot & SEG_MASK) << 5;
    const ok = u[w + A_VERSION] === ACCOUNT_VERSION && u[w + A_SLOT] === slot && u[w + A_CRC] === crc32cWords(u, w, 31);
    if (ok) this.checked[slot] = 1;
    return ok;
  }

  /** Recomputes the CRC and marks the page for the next checkpoint. */
  seal(slot: number): void {
    const u = this.segs32[slot >>> SEG_SHIFT];
    const w = (slot & SEG_MASK) << 5;
    u[w + A_CRC] = crc32cWords(u, w, 31);
    this.checked[slot] = 1;
    this.dirtyData[slot >>> 5] = 1;
    this.anyDirty = true;
  }

  /**
   * Sets the balance and LSN of a valid record (checked or sealed) and re-seals it from the
   * change alone; marks the page for the next checkpoint. All arguments are u32 halves.
   */
  update(slot: number, lamLo: number, lamHi: number, lsnLo: number, lsnHi: number): void {
    const u = this.segs32[slot >>> SEG_SHIFT];
    const w = (slot & SEG_MASK) << 5;
    const d0 = u[w + A_LAMPORTS] ^ lamLo;
    const d1 = u[w + A_LAMPORTS + 1] ^ lamHi;
    const d2 = u[w + A_LSN] ^ lsnLo;
    const d3 = u[w + A_LSN + 1] ^ lsnHi;
    u[w + A_LAMPORTS] = lamLo;
    u[w + A_LAMPORTS + 1] = lamHi;
    u[w + A_LSN] = lsnLo;
    u[w + A_LSN + 1] = lsnHi;
    u[w + A_CRC] ^= recordCrcDelta(d0, d1, d2, d3);
    this.dirtyData[slot >>> 5] = 1;
    this.anyDirty = true;
  }

  /** Allocates the next slot for the key in K; the caller has checked capacity and found `pos`. */
  create(hash: number, pos: number, lsn: number): number {
    const slot = this.count++;
    const u = this.rec32(slot);
    const w = (slot & SEG_MASK) << 5;
    u.fill(0, w, w + 32);
    const k = K;
    u[w] = k[0];
    u[w + 1] = k[1];
    u[w + 2] = k[2];
    u[w + 3] = k[3];
    u[w + 4] = k[4];
    u[w + 5] = k[5];
    u[w + 6] = k[6];
    u[w + 7] = k[7];
    u[w + A_CREATED_LSN] = lo32(lsn);
    u[w + A_CREATED_LSN + 1] = hi32(lsn);
    u[w + A_SLOT] = slot;
    u[w + A_VERSION] = ACCOUNT_VERSION;
    // Dirty now, not only at seal: a rebuild started by the rehash step below must find this account.
    this.dirtyData[slot >>> 5] = 1;
    this.idx[pos * 2] = slot + 1;
    this.idx[pos * 2 + 1] = hash;
    this.dirtyIdx[pos >>> 9] = 1;
    this.anyDirty = true;
    this.inserted();
    return slot;
  }

  /**
   * Room for one more account: OK (the file grown if it had to be), CAPACITY_EXCEEDED at the hard limit, or
   * throws IO_ERROR (a full disk) with nothing changed.
   */
  room(): number {
    if (this.count < this.capacity) return BatchStatus.OK;
    if (this.capacity >= MAX_ACCOUNTS_PER_SHARD) return BatchStatus.CAPACITY_EXCEEDED;
    this.growData(nextDataCapacity(this.capacity));
    return BatchStatus.OK;
  }

  /** Extends the file (refused before anything changes when the disk cannot take it), then the memory behind it. */
  growData(to: number): void {
    const bytes = to * 128;
    const size = fileSize(this.dataFd);
    if (size < bytes) {
      // Node has no fallocate: the file grows sparse, after a check of the free space (as the logs do).
      if (freeBytes(this.dir) < bytes - size) fail(BatchStatus.IO_ERROR, `allocate ${this.dataName}: No space left on device`);
      resize(this.dataFd, bytes, this.dataName);
    }
    // (Segments come when their regions are first loaded: nothing to allocate or copy here.)
    this.capacity = to;
    this.dataBytes = bytes;
    this.dataPages = Math.ceil(bytes / PAGE_SIZE);
    // Flags per region and per page (small: copied at their exact size); per slot: copied into an array at
    // least twice as long, so that copying costs O(1) per account over a shard's life.
    const grown = (a: Uint8Array, n: number, atLeast = n): Uint8Array => {
      if (a.length >= n) return a;
      const b = new Uint8Array(atLeast);
      b.set(a);
      return b;
    };
    this.loaded = grown(this.loaded, Math.ceil(to / REGION_SLOTS));
    this.checked = grown(this.checked, to, Math.min(MAX_ACCOUNTS_PER_SHARD, Math.max(to, 2 * this.checked.length)));
    this.dirtyData = grown(this.dirtyData, this.dataPages);
    crashPoint('grow:after-data-extend');
  }

  /** Replay: the file large enough for `slot`, by the same steps as live growth. */
  growFor(slot: number): void {
    while (slot >= this.capacity) this.growData(nextDataCapacity(this.capacity));
  }

  /** Reads the lines of the record an index entry names, if it is in memory: a prefetch (returns junk). */
  touch(e: number): number {
    const slot = e - 1;
    // (the current table only: during a rehash an older key may be in the old one)
    if (slot < 0 || slot >= this.capacity || this.loaded[slot >>> REGION_SHIFT] === 0) return 0;
    const u = this.segs32[slot >>> SEG_SHIFT];
    const w = (slot & SEG_MASK) << 5;
    return u[w] ^ u[w + A_CRC] ^ this.checked[slot];
  }

  // ------------------------------------------------------------------ index

  /** Reads page `page` of a table from the file and checks it against its CRC. */
  private verifyPage(idx: Uint32Array, page: number, entriesOff: number, crcs: Uint32Array, verified: Uint8Array): boolean {
    readAt(this.indexFd, new Uint8Array(idx.buffer, idx.byteOffset + page * PAGE_SIZE, PAGE_SIZE), 0, PAGE_SIZE,
      entriesOff + page * PAGE_SIZE, this.indexName);
    if (crc32cWords(idx, page * 1024, 1024) === crcs[page]) {
      verified[page] = 1;
      return true;
    }
    return false;
  }

  private keyEq(slot: number): boolean {
    const u = this.rec32(slot);
    const w = (slot & SEG_MASK) << 5;
    const k = K;
    return u[w] === k[0] && u[w + 1] === k[1] && u[w + 2] === k[2] && u[w + 3] === k[3] &&
      u[w + 4] === k[4] && u[w + 5] === k[5] && u[w + 6] === k[6] && u[w + 7] === k[7];
  }

  /** Rebuilds the index from inside a lookup: keeps the key register. */
  private rebuildKeepingKey(): void {
    const saved = K.slice();
    this.rebuildIndex();
    K.set(saved);
  }

  /** Probes one table for the key in K: the slot, -1 (this.pos = the empty entry) or DAMAGED. */
  private probe(idx: Uint32Array, mask: number, verified: Uint8Array, fromFile: boolean, entriesOff: number,
    crcs: Uint32Array, hash: number): number {
    let i = bucketOf(hash, mask);
    for (let probes = 0; probes <= mask; probes++) {
      const page = i >>> 9;
      if (fromFile && verified[page] === 0 && !this.verifyPage(idx, page, entriesOff, crcs, verified)) return DAMAGED;
      const e = idx[i * 2];
      if (e === 0) {
        this.pos = i;
        return -1;
      }
      if (idx[i * 2 + 1] === hash && e <= this.capacity && this.keyEq(e - 1)) return e - 1;
      i = (i + 1) & mask;
    }
    return DAMAGED; // a full table cannot happen in a valid index
  }

  /** Slot of the key in K, or -1 with this.pos set to the empty entry where it would go. */
  find(hash: number): number {
    for (;;) {
      const found = this.probe(this.idx, this.mask, this.verified, this.fromFile, this.entriesOff, this.pageCrcs, hash);
      if (found === DAMAGED) {
        // A damaged index page: the account file is the truth, rebuild from it.
        this.rebuildKeepingKey();
        continue;
      }
      if (found >= 0 || this.oldIdx === undefined) return found;
      // Not (yet) moved to the new table: the old one, which never changes.
      const pos = this.pos;
      const old = this.probe(this.oldIdx, this.oldMask, this.oldVerified!, this.oldFromFile, this.oldEntriesOff,
        this.oldPageCrcs!, hash);
      if (old === DAMAGED) {
        this.rebuildKeepingKey();
        continue;
      }
      this.pos = pos; // new keys go to the current table
      return old;
    }
  }

  // ------------------------------------------------------------------ index growth (native Shard::Inserted)

  /** After a key was put into the current table: a rehash step, or the start of one. */
  inserted(): void {
    if (this.oldIdx !== undefined) this.rehashStep(REHASH_ENTRIES_PER_INSERT);
    else if (this.count * INDEX_LOAD_DIVISOR >= this.mask + 1 && this.mask + 1 < MAX_INDEX_CAPACITY) this.startRehash();
  }

  /** A zeroed table of `capacity` entries built in memory (all verified) becomes the current one. */
  private newTable(capacity: number): void {
    this.idx = new Uint32Array(capacity * 2);
    this.idxBytes = Buffer.from(this.idx.buffer, this.idx.byteOffset, this.idx.byteLength);
    this.mask = capacity - 1;
    this.indexPages = capacity / ENTRIES_PER_PAGE;
    this.fromFile = false;
    this.verified = new Uint8Array(this.indexPages).fill(1);
    this.dirtyIdx = new Uint8Array(this.indexPages);
  }

  private startRehash(): void {
    this.oldIdx = this.idx;
    this.oldMask = this.mask;
    this.oldVerified = this.verified;
    this.oldFromFile = this.fromFile;
    this.oldEntriesOff = this.entriesOff;
    this.oldPageCrcs = this.pageCrcs;
    this.newTable((this.mask + 1) * 2);
    this.rehashPos = 0;
    this.anyDirty = true;
    crashPoint('grow:after-rehash-start');
  }

  /** Moves the entries of `positions` positions of the old table, in order. */
  private rehashStep(positions: number): void {
    const old = this.oldIdx!;
    const idx = this.idx;
    const mask = this.mask;
    for (; positions > 0 && this.rehashPos <= this.oldMask; positions--, this.rehashPos++) {
      const p = this.rehashPos;
      if (this.oldFromFile && this.oldVerified![p >>> 9] === 0 &&
        !this.verifyPage(old, p >>> 9, this.oldEntriesOff, this.oldPageCrcs!, this.oldVerified!)) {
        this.rebuildKeepingKey(); // ends the rehash
        return;
      }
      const e = old[p * 2];
      if (e === 0) continue;
      // Never in the new table yet: new keys go there only when absent from both.
      const tag = old[p * 2 + 1];
      let i = bucketOf(tag, mask);
      while (idx[i * 2] !== 0) i = (i + 1) & mask;
      idx[i * 2] = e;
      idx[i * 2 + 1] = tag;
      this.dirtyIdx[i >>> 9] = 1;
    }
    if (this.rehashPos > this.oldMask) this.endRehash();
  }

  private endRehash(): void {
    this.oldIdx = this.oldVerified = this.oldPageCrcs = undefined;
    this.indexResizes++;
    // The file holds the old layout: the next checkpoint writes the table whole.
    this.dirtyIdx.fill(1);
    this.anyDirty = true;
    crashPoint('grow:after-rehash-end');
  }

  /** Moves the rest of the old table (foreground checkpoints write one table, whole). */
  finishRehash(): void {
    while (this.oldIdx !== undefined) this.rehashStep(this.oldMask + 1);
  }

  /**
   * Header check only: O(1). Valid for the manifest's checkpoint, or one epoch ahead: the index of a background
   * checkpoint that crashed after writing it and before its commit. Every entry in that one is of an account
   * whose creation was durable in the log before the page was written (the write-ahead rule), so replaying
   * both generations on top of it is exact; it never makes an open clean (indexAhead).
   */
  loadIndex(m: ShardManifest): boolean {
    const h = this.head;
    const epoch = Number(h.readBigUInt64LE(24));
    const checkpointLsn = Number(h.readBigUInt64LE(32));
    this.indexAhead = epoch === m.epoch + 1 && checkpointLsn >= m.checkpointLsn;
    const ok = h.readUInt32LE(60) === crc32cWords(new Uint32Array(h.buffer, h.byteOffset, 15), 0, 15) &&
      h.readUInt32LE(0) === INDEX_MAGIC && h.readUInt32LE(4) === INDEX_VERSION && h.readUInt32LE(8) === this.number &&
      h.readUInt32LE(12) === this.mask + 1 && h.readUInt32LE(20) === this.indexPages &&
      h.readUInt32LE(40) === m.seed && h.readUInt32LE(16) <= this.capacity &&
      h.readUInt32LE(44) === crc32cWords(this.pageCrcs, 0, this.indexPages);
    if (!ok || !((epoch === m.epoch && checkpointLsn === m.checkpointLsn) || this.indexAhead)) return false;
    this.count = h.readUInt32LE(16);
    this.verified.fill(0);
    return true;
  }

  /** From the account file: every non-empty record, in slot order. */
  rebuildIndex(): void {
    this.indexRebuilds++;
    // A rehash in progress is dropped: one table, large enough for every slot of the file.
    this.oldIdx = this.oldVerified = this.oldPageCrcs = undefined;
    const want = indexCapacityFor(this.capacity, this.mask + 1);
    if (want !== this.mask + 1) this.newTable(want);
    else this.idx.fill(0);
    this.fromFile = false;
    this.verified.fill(1);
    this.dirtyIdx.fill(1);
    this.anyDirty = true;
    let last = 0;
    const regions = this.loaded.length;
    for (let r = 0; r < regions; r++) {
      const first = r << REGION_SHIFT;
      const segOff = (first & SEG_MASK) * 128;
      const len = Math.min(REGION_BYTES, this.dataBytes - r * REGION_BYTES);
      if (this.loaded[r] === 0) {
        // Read into the zero-filled segment only when the file holds something
        // there: a rebuild costs memory in proportion to the data, not the capacity.
        // (An empty region stays unloaded: its segment may not exist.)
        const n = readUpTo(this.dataFd, ZEROS_SCRATCH, 0, len, r * REGION_BYTES, this.dataName);
        if (ZEROS.compare(ZEROS_SCRATCH, 0, n, 0, n) === 0) continue;
        ZEROS_SCRATCH.copy(this.segment(first >>> SEG_SHIFT), segOff, 0, n);
        this.loaded[r] = 1;
      } else if (ZEROS.compare(this.segs[first >>> SEG_SHIFT], segOff, segOff + len, 0, len) === 0) {
        continue;
      }
      const seg = this.segs[first >>> SEG_SHIFT];
      const u = this.segs32[first >>> SEG_SHIFT];
      const end = Math.min(first + REGION_SLOTS, this.capacity);
      for (let s = first; s < end; s++) {
        const w = (s & SEG_MASK) << 5;
        if (u[w + A_VERSION] === 0 && ZEROS.compare(seg, w * 4, w * 4 + 128, 0, 128) === 0) continue;
        const hash = hashKeyWords(u, w, this.seed);
        if (this.find(hash) < 0) {
          this.idx[this.pos * 2] = s + 1;
          this.idx[this.pos * 2 + 1] = hash;
        }
        last = s + 1;
      }
    }
    this.count = last;
  }

  // ------------------------------------------------------------------ log

  /** The file of the records of `epoch`. */
  logOf(epoch: number): WalLog {
    return this.logs[epoch & 1];
  }

  /** Ensures file room in the active log for `n` more records after those written and staged. */
  reserve(n: number): void {
    const log = this.log;
    // Appends follow a header of the current epoch, never anything else.
    if (log.pos < WAL_RECORD_SIZE) fail(BatchStatus.IO_ERROR, `${log.name}: log has no header to append to`);
    const need = log.pos + this.staged + n * WAL_RECORD_SIZE;
    while (need > log.mapped) {
      // Small logs stay small (a quiet shard costs 256 KiB); busy ones grow by 4 MiB. The boundaries are
      // those of the native log (256K, 512K, 1M, 2M, 4M, 8M, ...), so both engines give a log the same size.
      const chunk = Math.min(WAL_CHUNK, Math.max(WAL_FIRST_CHUNK, log.mapped));
      if (log.mapped + chunk > WAL_RESERVATION) fail(BatchStatus.IO_ERROR, `log of shard ${this.number} is full`);
      const target = log.mapped + chunk;
      const size = fileSize(log.fd);
      if (size < target) {
        // Node has no fallocate: the file grows sparse. Refuse here, before the operation changes
        // anything, when the disk clearly cannot take the chunk (a write that still fails later
        // makes the ledger read-only, as a failed fsync does).
        if (freeBytes(this.dir) < target - size) fail(BatchStatus.IO_ERROR, `allocate ${log.name}: No space left on device`);
        resize(log.fd, target, log.name);
      }
      log.mapped = target;
    }
  }

  /** Room for one more record in the staging buffer (writing out what is there when full). */
  stageWord(): number {
    let stage = this.stage;
    if (stage === undefined) {
      stage = this.stage = Buffer.alloc(STAGE_RECORDS * WAL_RECORD_SIZE);
      this.stage32 = new Uint32Array(stage.buffer, stage.byteOffset, stage.length / 4);
    }
    if (this.staged === stage.length) this.flush();
    const w = this.staged >>> 2;
    this.staged += WAL_RECORD_SIZE;
    return w;
  }

  /**
   * Appends the post-image of `slot` as a log record of `epoch` (to the staging buffer); `durable` is the
   * ledger's durable LSN now: every record of every log up to it is on stable storage.
   */
  /** `supply`: an IMAGE record's (the wal:false journal stands for a checkpoint); the others hold zero there. */
  append(type: number, slot: number, lsn: number, epoch: number, legs: number, leg: number,
    amountLo: number, amountHi: number, tsLo: number, tsHi: number, durable: number, supply?: bigint): void {
    const w = this.stageWord();
    const s = this.stage32!;
    const u = this.segs32[slot >>> SEG_SHIFT];
    const r = (slot & SEG_MASK) << 5;
    s[w] = WAL_MAGIC;
    s[w + W_TIMESTAMP] = tsLo;
    s[w + W_TIMESTAMP + 1] = tsHi;
    s[w + W_TYPE] = type;
    for (let i = 0; i < 32; i++) s[w + W_ACCOUNT + i] = u[r + i];
    s[w + W_LSN] = lo32(lsn);
    s[w + W_LSN + 1] = hi32(lsn);
    s[w + W_EPOCH] = lo32(epoch);
    s[w + W_EPOCH + 1] = hi32(epoch);
    s[w + W_SHARD] = this.number;
    s[w + W_SLOT] = slot;
    s[w + W_LEGS] = legs;
    s[w + W_LEG] = leg;
    s[w + W_AMOUNT] = amountLo;
    s[w + W_AMOUNT + 1] = amountHi;
    s[w + W_DURABLE_LSN] = lo32(durable);
    s[w + W_DURABLE_LSN + 1] = hi32(durable);
    if (supply === undefined) {
      s[w + W_SUPPLY] = 0;
      s[w + W_SUPPLY + 1] = 0;
      s[w + W_SUPPLY + 2] = 0;
      s[w + W_SUPPLY + 3] = 0;
    } else {
      for (let i = 0; i < 4; i++) s[w + W_SUPPLY + i] = Number((supply >> BigInt(32 * i)) & 0xffffffffn);
    }
    // (the reserved words after it are zero: nothing else is ever written there)
    if (this.checked[slot] === 1) {
      // The image's own CRC is right: reuse it for the 124 bytes it covers.
      let c = crcWords(0xffffffff, s, w, W_CRC);
      c = crcOverRecord(c, s[w + W_ACCOUNT + A_CRC]);
      s[w + W_CRC] = ~crcWords(c, s, w + W_ACCOUNT + A_CRC, WAL_WORDS - W_ACCOUNT - A_CRC) >>> 0;
    } else {
      s[w + W_CRC] = walCrc(s, w);
    }
    this.log.lastLsn = lsn;
  }

  /** Writes the staged records to the kernel (one positioned write into the active log). */
  flush(): void {
    const n = this.staged;
    if (n === 0) return;
    const log = this.log;
    writeAt(log.fd, this.stage!, 0, n, log.pos, log.name);
    log.pos += n;
    this.staged = 0;
  }

  /**
   * Writes a HEADER of `epoch` over record 0 of `log` (not synced: the caller fsyncs); appends to it start
   * after the header. As native: the file and its blocks are kept for the new epoch (the header makes every
   * old record stale), unless it grew far past what its last use wrote, or `empty` (the checkpoint that ends
   * a recovery: damage it cut must not be met again by later opens); then it is cut back to nothing first.
   */
  resetLog(log: WalLog, epoch: number, now: number, empty = false): void {
    if (log === this.log) this.staged = 0;
    if (empty || fileSize(log.fd) > 4 * log.pos + WAL_CHUNK) {
      resize(log.fd, 0, log.name);
      log.mapped = 0;
    }
    encodeLogHeader(this.number, epoch, now);
    writeAt(log.fd, HEADER, 0, WAL_RECORD_SIZE, 0, log.name);
    log.pos = WAL_RECORD_SIZE;
    log.lastLsn = 0;
  }

  /**
   * True when `log` is a valid HEADER of `epoch` followed by nothing, zeros, or an intact record of an earlier
   * epoch (the file is reused); then appends may start after the header. O(1): two records are read.
   */
  headerOnly(log: WalLog, epoch: number): boolean {
    const size = fileSize(log.fd);
    if (size < WAL_RECORD_SIZE) return false;
    const n = size >= 2 * WAL_RECORD_SIZE ? 2 : 1;
    const h = PROBE;
    const u = PROBE32;
    readAt(log.fd, h, 0, n * WAL_RECORD_SIZE, 0, log.name);
    if (!(u[0] === WAL_MAGIC && u[W_TYPE] === WalType.HEADER && epochAt(u, 0) === epoch && u[W_SHARD] === this.number &&
      u[W_CRC] === walCrc(u, 0))) return false;
    if (n === 2) {
      const w = WAL_WORDS;
      const zero = ZEROS.compare(h, WAL_RECORD_SIZE, 2 * WAL_RECORD_SIZE, 0, WAL_RECORD_SIZE) === 0;
      const stale = u[w] === WAL_MAGIC && epochAt(u, w) < epoch && u[w + W_CRC] === walCrc(u, w);
      if (!zero && !stale) return false;
    }
    log.pos = WAL_RECORD_SIZE;
    log.mapped = 0;
    return true;
  }

  /** True when the record after the header of `log` is an intact record of `epoch`: the file holds operations to replay. */
  holdsRecordsOf(log: WalLog, epoch: number): boolean {
    if (fileSize(log.fd) < 2 * WAL_RECORD_SIZE) return false;
    const u = PROBE32;
    readAt(log.fd, PROBE, 0, WAL_RECORD_SIZE, WAL_RECORD_SIZE, log.name);
    return u[0] === WAL_MAGIC && epochAt(u, 0) === epoch && u[W_SHARD] === this.number && u[W_TYPE] !== WalType.HEADER &&
      u[W_CRC] === walCrc(u, 0);
  }

  /** Recovery pass 1 over one file of this shard (scanWal). */
  scanLog(log: WalLog, epoch: number, checkpointLsn: number): LogScan {
    return scanWal(log, this.number, epoch, checkpointLsn);
  }

  /** Recovery pass 3: applies every record of the prefix below the global cut; returns how many. */
  applyLog(log: WalLog, cutLsn: number, indexValid: boolean, dropped: { bytes: number }, minted: Supply): number {
    let applied = 0;
    const u = log.scan32;
    for (let o = WAL_RECORD_SIZE; o < log.prefixEnd; o += WAL_RECORD_SIZE) {
      const w = o >>> 2;
      const lsn = u![w + W_LSN] + u![w + W_LSN + 1] * TWO32;
      if (lsn >= cutLsn) {
        dropped.bytes += log.prefixEnd - o;
        break;
      }
      const slot = u![w + W_SLOT];
      // The file may have lost a growth the log outlived (a power cut): grow it again, by the same steps.
      if (slot >= this.capacity) this.growFor(slot);
      const type = u![w + W_TYPE];
      if (type === WalType.MINT) minted.add(u![w + W_AMOUNT], u![w + W_AMOUNT + 1]);
      else if (type === WalType.IMAGE) minted.set(supplyAt(u!, w + W_SUPPLY));
      const r = this.rec32(slot);
      const rw = (slot & SEG_MASK) << 5;
      for (let i = 0; i < 32; i++) r[rw + i] = u![w + W_ACCOUNT + i];
      this.checked[slot] = 0;
      this.dirtyData[slot >>> 5] = 1;
      this.anyDirty = true;
      if (slot >= this.count) this.count = slot + 1;
      if (indexValid) {
        const hash = hashKeyWords(u!, w + W_ACCOUNT, this.seed);
        const found = this.find(hash);
        if (found < 0) {
          this.idx[this.pos * 2] = slot + 1;
          this.idx[this.pos * 2 + 1] = hash;
          this.dirtyIdx[this.pos >>> 9] = 1;
          this.inserted();
        } else if (found !== slot) {
          fail(BatchStatus.CORRUPTION, `${log.name}: account at offset ${o} names slot ${slot} but the index holds it at slot ${found}`);
        }
      }
      applied++;
    }
    log.closeScan();
    return applied;
  }

  // ------------------------------------------------------------------ checkpoint

  /** Calls f for every used slot of a dirty page, in slot order. */
  forEachDirtySlot(f: (slot: number) => void): void {
    const d = this.dirtyData;
    for (let p = 0; p < d.length; p++) {
      if (d[p] === 0) continue;
      const first = p * SLOTS_PER_PAGE;
      for (let s = first; s < first + SLOTS_PER_PAGE && s < this.count; s++) f(s);
    }
  }

  /** Non-empty slots in dirty pages (the wal:false journal size). */
  imageSlots(): number {
    let n = 0;
    this.forEachDirtySlot(() => n++);
    return n;
  }

  // Foreground: no operation runs, the live sets are written from the pages themselves.

  /** Writes dirty pages back (runs of pages in one write each), then fdatasync. */
  writeBackData(): void {
    const d = this.dirtyData;
    for (let p = 0; p < d.length;) {
      if (d[p] === 0) {
        p++;
        continue;
      }
      let e = p + 1;
      // a run ends at a clean page or at a segment boundary
      while (e < d.length && d[e] !== 0 && e % SEG_PAGES !== 0) e++;
      const off = p * PAGE_SIZE;
      const len = Math.min((e - p) * PAGE_SIZE, this.dataBytes - off);
      writeAt(this.dataFd, this.segs[Math.floor(p / SEG_PAGES)], (p % SEG_PAGES) * PAGE_SIZE, len, off, this.dataName);
      p = e;
    }
    crashPoint('checkpoint:after-data-write');
    dataSyncOrThrow(this.dataFd, this.dataName);
  }

  /** Dirty pages, the CRC table and the header, then fdatasync. The caller has finished any rehash. */
  writeIndex(next: ShardManifest): void {
    if (this.mask + 1 !== this.fileCapacity) this.resizeIndexFile(this.mask + 1);
    const d = this.dirtyIdx;
    for (let p = 0; p < d.length;) {
      if (d[p] === 0) {
        p++;
        continue;
      }
      let e = p;
      for (; e < d.length && d[e] !== 0; e++) this.pageCrcs[e] = crc32cWords(this.idx, e * 1024, 1024);
      writeAt(this.indexFd, this.idxBytes, p * PAGE_SIZE, (e - p) * PAGE_SIZE, this.entriesOff + p * PAGE_SIZE, this.indexName);
      p = e;
    }
    const table = this.writeIndexTable(0, this.indexPages, 0xffffffff);
    this.writeIndexHeader(next, this.count, ~table >>> 0, this.mask + 1);
    dataSyncOrThrow(this.indexFd, this.indexName);
  }

  /**
   * A table of another capacity than the file's is written whole, in its layout: the header is made invalid
   * and durable first, so that no crash can pair it with pages of the new layout; then the file grows.
   */
  resizeIndexFile(capacity: number): void {
    this.invalidateIndexHeader();
    dataSyncOrThrow(this.indexFd, this.indexName);
    this.extendIndexFile(capacity);
  }

  invalidateIndexHeader(): void {
    this.head.fill(0);
    writeAt(this.indexFd, this.head, 0, 64, 0, this.indexName);
  }

  /** The second half of resizeIndexFile (a background checkpoint fsyncs the header on the pool in between). */
  extendIndexFile(capacity: number): void {
    if (fileSize(this.indexFd) < indexFileBytes(capacity)) resize(this.indexFd, indexFileBytes(capacity), this.indexName);
    this.fileCapacity = capacity;
    this.entriesOff = PAGE_SIZE + indexTableBytes(capacity / ENTRIES_PER_PAGE);
    this.pageCrcs = new Uint32Array(capacity / ENTRIES_PER_PAGE);
    crashPoint('checkpoint:after-index-resize');
  }

  // Background: the captured sets, copied out a chunk at a time while operations go on changing the pages
  // (native Shard::WritePages). The core makes the log durable as far as the copy may reach before it
  // writes the copy: the file never holds a change that the log could lose.

  /** The hand-over: the live sets become the captured ones (those are all zero) and start empty. */
  capture(): void {
    const d = this.capturedData;
    this.capturedData = this.dirtyData;
    this.dirtyData = d.length === this.dataPages ? d : new Uint8Array(this.dataPages);
    this.anyDirty = false;
    this.capturedCount = this.count;
    this.capturedRebuilds = this.indexRebuilds;
    if (this.oldIdx !== undefined) {
      // Two tables: neither is the index alone. This checkpoint leaves the index file invalid (a crash before
      // the next one rebuilds it); the dirty pages stay live for the checkpoint after the rehash.
      this.capturedIdxBytes = undefined;
      this.capturedIdx = new Uint8Array(0);
      this.anyDirty = true;
      return;
    }
    this.capturedIdxBytes = this.idxBytes;
    this.capturedIndexCapacity = this.mask + 1;
    const x = this.capturedIdx;
    this.capturedIdx = this.dirtyIdx;
    this.dirtyIdx = x.length === this.indexPages ? x : new Uint8Array(this.indexPages);
    // Written whole, in its layout (extendIndexFile gives it a CRC table of its size).
    if (this.capturedIndexCapacity !== this.fileCapacity) this.capturedIdx.fill(1);
  }

  /**
   * Adds copies of up to `max` captured data pages from `page` on to `chunk` (as far as it holds; their
   * captured flags are cleared); returns the page to go on from, dataPages when the set is done.
   */
  copyCapturedData(page: number, chunk: Chunk, max: number): number {
    const d = this.capturedData;
    const end = Math.min(WRITEBACK_PAGES, chunk.n + max);
    while (chunk.n < end) {
      const p = d.indexOf(1, page);
      if (p < 0) return d.length;
      d[p] = 0;
      const off = (p % SEG_PAGES) * PAGE_SIZE;
      this.segs[Math.floor(p / SEG_PAGES)].copy(chunk.buf, chunk.n * PAGE_SIZE, off, off + PAGE_SIZE);
      chunk.pages[chunk.n++] = p;
      page = p + 1;
    }
    return page;
  }

  /** Plans the writes of the copies [from, to) of `chunk` (Chunk.plan). */
  planDataWrites(chunk: Chunk, from: number, to: number): void {
    chunk.plan(from, to, 0, this.dataBytes);
  }

  /** As copyCapturedData, for index pages; notes the CRC of each copy. */
  copyCapturedIndex(page: number, chunk: Chunk, max: number): number {
    const d = this.capturedIdx;
    const end = Math.min(WRITEBACK_PAGES, chunk.n + max);
    while (chunk.n < end) {
      const p = d.indexOf(1, page);
      if (p < 0) return d.length;
      d[p] = 0;
      const at = chunk.n * PAGE_SIZE;
      this.capturedIdxBytes!.copy(chunk.buf, at, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
      chunk.crcs[chunk.n] = crc32cWords(chunk.words, at >>> 2, PAGE_SIZE / 4);
      chunk.pages[chunk.n++] = p;
      page = p + 1;
    }
    return page;
  }

  planIndexWrites(chunk: Chunk, from: number, to: number): void {
    const pages = this.capturedIndexCapacity / ENTRIES_PER_PAGE;
    chunk.plan(from, to, PAGE_SIZE + indexTableBytes(pages), pages * PAGE_SIZE);
  }

  /** The index page copies [from, to) of `chunk` are written: the CRC table names what the file holds. */
  indexCopiesWritten(chunk: Chunk, from: number, to: number): void {
    for (let i = from; i < to; i++) this.pageCrcs[chunk.pages[i]] = chunk.crcs[i];
  }

  /** Writes `n` entries of the page-CRC table from entry `first`; returns the raw CRC state carried over them. */
  writeIndexTable(first: number, n: number, state: number): number {
    writeAt(this.indexFd, new Uint8Array(this.pageCrcs.buffer, this.pageCrcs.byteOffset + first * 4, n * 4), 0, n * 4,
      PAGE_SIZE + first * 4, this.indexName);
    return crcWords(state, this.pageCrcs, first, n);
  }

  /**
   * The header naming `next` (with `count` accounts and the table's CRC); or, when the index was rebuilt since
   * the hand-over (its copies may have been taken half cleared), an invalid one: the next open rebuilds it
   * and the next checkpoint writes it whole.
   */
  writeIndexHeader(next: ShardManifest, count: number, tableCrc: number, capacity: number, valid = true): void {
    if (valid) {
      encodeIndexHeader(this.head, this.number, capacity, count, capacity / ENTRIES_PER_PAGE, next.epoch,
        next.checkpointLsn, this.seed, tableCrc);
    } else {
      this.head.fill(0);
    }
    writeAt(this.indexFd, this.head, 0, 64, 0, this.indexName);
  }

  /** After a background checkpoint that stopped part way: nothing stays captured. */
  dropCaptured(): void {
    this.capturedData.fill(0);
    this.capturedIdx.fill(0);
    this.capturedIdxBytes = undefined;
  }

  clearDirty(): void {
    this.dirtyData.fill(0);
    this.dirtyIdx.fill(0);
    this.anyDirty = false;
  }
}

