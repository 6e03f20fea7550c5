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
 * Log: records are built in a per-shard staging buffer and written with one
 * positioned write per operation (or per batch): in the kernel, so surviving
 * kill -9, before the call returns. The file grows in 4 MiB steps like the
 * native log, so both engines leave the same shape of file behind.
 */
import * as fs from 'node:fs';
import { BatchStatus } from '../errors';
import {
  ACCOUNT_VERSION, INDEX_MAGIC, PAGE_SIZE, WAL_MAGIC, WAL_RECORD_SIZE, WalType, shardFile,
} from '../format';
import { crc32cWords, crcOverRecord, crcWords, recordCrcDelta } from './crc';
import { K, bucketOf, hashKeyWords } from './hash';
import {
  O_CREAT, O_RDWR, O_TRUNC, closeFile, dataSyncOrThrow, fail, fileSize, openFile, readAt, readUpTo, resize, writeAt,
  crashPoint,
} from './io';

export const INDEX_VERSION = 1;
export const ENTRIES_PER_PAGE = PAGE_SIZE / 8; // 512
const SLOTS_PER_PAGE = PAGE_SIZE / 128; // 32
const SEG_SHIFT = 24; // slots per segment: 2^24 (2 GiB), under the Buffer limit
const SEG_MASK = (1 << SEG_SHIFT) - 1;
const REGION_SHIFT = 9; // slots read from the file at a time: 512 (64 KiB)
const REGION_SLOTS = 1 << REGION_SHIFT;
const REGION_BYTES = REGION_SLOTS * 128;
const WAL_WORDS = WAL_RECORD_SIZE / 4; // 56
export const WAL_CHUNK = 4 * 1024 * 1024;
const WAL_FIRST_CHUNK = 256 * 1024;
const WAL_RESERVATION = 64 * 1024 * 1024 * 1024;
const STAGE_RECORDS = 512;
const TWO32 = 4294967296;

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
const W_WINDOW = 47;

function freeBytes(dir: string): number {
  try {
    const st = fs.statfsSync(dir);
    return st.bavail * st.bsize;
  } catch {
    return Infinity;
  }
}

export function indexTableBytes(pages: number): number {
  return Math.ceil((pages * 4) / PAGE_SIZE) * PAGE_SIZE;
}
export function indexFileBytes(capacity: number): number {
  return PAGE_SIZE + indexTableBytes(capacity / ENTRIES_PER_PAGE) + capacity * 8;
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
export function walCrc(u: Uint32Array, w: number): number {
  return ~crcWords(crcWords(0xffffffff, u, w, W_CRC), u, w + W_ACCOUNT, WAL_WORDS - W_ACCOUNT) >>> 0;
}

function lo32(v: number): number {
  return v >>> 0;
}
function hi32(v: number): number {
  return Math.floor(v / TWO32) >>> 0;
}

export interface WalScan {
  validEnd: number;
  droppedBytes: number;
  records: number;
  maxLsn: number;
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

export class Shard {
  readonly index: number;
  readonly capacity: number;
  readonly seed: number;
  readonly dir: string;
  count = 0;
  indexRebuilds = 0;
  /** Out-parameter of find(): the empty entry where a missing key would go. */
  pos = 0;

  // ---- accounts
  dataFd = -1;
  readonly dataBytes: number;
  readonly dataPages: number;
  readonly segs: Buffer[] = [];
  readonly segs32: Uint32Array[] = [];
  readonly loaded!: Uint8Array;
  /** Records whose CRC has been checked (or that this engine sealed) since they were read. */
  readonly checked!: Uint8Array;
  readonly dirtyData!: Uint8Array;
  anyDirty = false;

  // ---- index
  indexFd = -1;
  readonly mask: number;
  readonly indexPages: number;
  readonly entriesOff: number;
  readonly head = Buffer.alloc(64);
  readonly pageCrcs!: Uint32Array;
  readonly idx!: Uint32Array;
  readonly verified!: Uint8Array;
  readonly dirtyIdx!: Uint8Array;

  // ---- log
  walFd = -1;
  /** File offset after the last record written to the kernel. */
  walPos = 0;
  /** File size reserved for records (0 after open or a reset: the first reserve grows it). */
  walMapped = 0;
  walLastLsn = 0;
  stage: Buffer | undefined;
  stage32: Uint32Array | undefined;
  /** Bytes of records in the staging buffer, not yet written (they go at walPos). */
  staged = 0;
  /** On the core's list of shards with staged records. */
  listed = false;
  scan: Buffer | undefined;
  scan32: Uint32Array | undefined;
  scanEnd = 0;

  readonly dataName: string;
  readonly indexName: string;
  readonly walName: string;

  static create(dir: string, index: number, m: ShardManifest): void {
    const dataName = shardFile('shard', index, 'bin');
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
    encodeIndexHeader(head, index, m.indexCapacity, 0, pages, m.epoch, m.checkpointLsn, m.seed, crc32cWords(table, 0, pages));
    fd = openFile(`${dir}/${shardFile('index', index, 'bin')}`, O_RDWR | O_CREAT | O_TRUNC);
    try {
      resize(fd, indexFileBytes(m.indexCapacity), 'index file');
      writeAt(fd, head, 0, head.length, 0, 'index file');
      dataSyncOrThrow(fd, 'index file');
    } finally {
      closeFile(fd);
    }

    closeFile(openFile(`${dir}/${shardFile('shard', index, 'wal')}`, O_RDWR | O_CREAT | O_TRUNC));
  }

  constructor(dir: string, index: number, m: ShardManifest) {
    this.dir = dir;
    this.index = index;
    this.capacity = m.accountsPerShard;
    this.seed = m.seed;
    this.dataName = shardFile('shard', index, 'bin');
    this.indexName = shardFile('index', index, 'bin');
    this.walName = shardFile('shard', index, 'wal');
    this.dataBytes = this.capacity * 128;
    this.dataPages = Math.ceil(this.dataBytes / PAGE_SIZE);
    this.indexPages = m.indexCapacity / ENTRIES_PER_PAGE;
    this.mask = m.indexCapacity - 1;
    this.entriesOff = PAGE_SIZE + indexTableBytes(this.indexPages);
    try {
      // Zero-filled allocations: the OS commits their pages as they are touched.
      this.loaded = new Uint8Array(Math.ceil(this.capacity / REGION_SLOTS));
      this.dirtyData = new Uint8Array(this.dataPages);
      this.checked = new Uint8Array(this.capacity);
      this.pageCrcs = new Uint32Array(this.indexPages);
      this.idx = new Uint32Array(m.indexCapacity * 2);
      this.verified = new Uint8Array(this.indexPages);
      this.dirtyIdx = new Uint8Array(this.indexPages);
      for (let first = 0; first < this.capacity; first += SEG_MASK + 1) {
        const slots = Math.min(SEG_MASK + 1, this.capacity - first);
        const seg = Buffer.alloc(Math.ceil(slots / REGION_SLOTS) * REGION_BYTES);
        this.segs.push(seg);
        this.segs32.push(new Uint32Array(seg.buffer, seg.byteOffset, seg.length / 4));
      }
    } catch (e) {
      fail(BatchStatus.IO_ERROR, `shard ${index}: cannot allocate memory for ${this.capacity} accounts and ` +
        `${m.indexCapacity} index entries: ${(e as Error).message}`);
    }
    try {
      this.dataFd = openFile(`${dir}/${this.dataName}`, O_RDWR);
      const size = fileSize(this.dataFd);
      if (size !== this.dataBytes) {
        fail(BatchStatus.CORRUPTION, `${this.dataName}: size ${size}, expected ${this.dataBytes}`);
      }

      this.indexFd = openFile(`${dir}/${this.indexName}`, O_RDWR | O_CREAT);
      const want = indexFileBytes(m.indexCapacity);
      // A short or missing index is rebuilt; give it its full size first.
      if (fileSize(this.indexFd) !== want) resize(this.indexFd, want, this.indexName);
      readAt(this.indexFd, this.head, 0, 64, 0, this.indexName);
      readAt(this.indexFd, new Uint8Array(this.pageCrcs.buffer), 0, this.indexPages * 4, PAGE_SIZE, this.indexName);

      this.walFd = openFile(`${dir}/${this.walName}`, O_RDWR | O_CREAT);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Closes the files (idempotent). */
  close(): void {
    this.scan = undefined;
    this.scan32 = undefined;
    for (const fd of [this.walFd, this.indexFd, this.dataFd]) if (fd >= 0) closeFile(fd);
    this.walFd = this.indexFd = this.dataFd = -1;
  }

  fds(): number[] {
    return [this.walFd, this.indexFd, this.dataFd].filter((fd) => fd >= 0);
  }

  // ------------------------------------------------------------------ accounts

  /** Reads a 64 KiB region of the account file into memory the first time it is touched. */
  loadRegion(r: number): void {
    const fileOff = r * REGION_BYTES;
    const len = Math.min(REGION_BYTES, this.dataBytes - fileOff);
    const first = r << REGION_SHIFT;
    readUpTo(this.dataFd, this.segs[first >>> SEG_SHIFT], (first & SEG_MASK) * 128, len, fileOff, this.dataName);
    this.loaded[r] = 1;
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
    this.idx[pos * 2] = slot + 1;
    this.idx[pos * 2 + 1] = hash;
    this.dirtyIdx[pos >>> 9] = 1;
    this.anyDirty = true;
    return slot;
  }

  /** Reads the lines of the record an index entry names, if it is in memory: a prefetch (returns junk). */
  touch(e: number): number {
    const slot = e - 1;
    if (slot < 0 || slot >= this.capacity || this.loaded[slot >>> REGION_SHIFT] === 0) return 0;
    const u = this.segs32[slot >>> SEG_SHIFT];
    const w = (slot & SEG_MASK) << 5;
    return u[w] ^ u[w + A_CRC] ^ this.checked[slot];
  }

  // ------------------------------------------------------------------ index

  private verifyPage(page: number): boolean {
    readAt(this.indexFd, new Uint8Array(this.idx.buffer, page * PAGE_SIZE, PAGE_SIZE), 0, PAGE_SIZE,
      this.entriesOff + page * PAGE_SIZE, this.indexName);
    if (crc32cWords(this.idx, page * 1024, 1024) === this.pageCrcs[page]) {
      this.verified[page] = 1;
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

  /** Slot of the key in K, or -1 with this.pos set to the empty entry where it would go. */
  find(hash: number): number {
    const idx = this.idx;
    const mask = this.mask;
    for (;;) {
      let i = bucketOf(hash, mask);
      let rebuilt = false;
      for (let probes = 0; probes <= mask; probes++) {
        const page = i >>> 9;
        if (this.verified[page] === 0 && !this.verifyPage(page)) {
          // A damaged index page: the account file is the truth, rebuild from it.
          this.rebuildKeepingKey();
          rebuilt = true;
          break;
        }
        const e = idx[i * 2];
        if (e === 0) {
          this.pos = i;
          return -1;
        }
        if (idx[i * 2 + 1] === hash && e <= this.capacity && this.keyEq(e - 1)) return e - 1;
        i = (i + 1) & mask;
      }
      if (!rebuilt) this.rebuildKeepingKey(); // a full table cannot happen in a valid index
    }
  }

  /** Header check only: O(1). */
  loadIndex(m: ShardManifest): boolean {
    const h = this.head;
    const ok = h.readUInt32LE(60) === crc32cWords(new Uint32Array(h.buffer, h.byteOffset, 15), 0, 15) &&
      h.readUInt32LE(0) === INDEX_MAGIC && h.readUInt32LE(4) === INDEX_VERSION && h.readUInt32LE(8) === this.index &&
      h.readUInt32LE(12) === m.indexCapacity && h.readUInt32LE(20) === this.indexPages &&
      h.readBigUInt64LE(24) === BigInt(m.epoch) && h.readBigUInt64LE(32) === BigInt(m.checkpointLsn) &&
      h.readUInt32LE(40) === m.seed && h.readUInt32LE(16) <= this.capacity &&
      h.readUInt32LE(44) === crc32cWords(this.pageCrcs, 0, this.indexPages);
    if (!ok) return false;
    this.count = h.readUInt32LE(16);
    this.verified.fill(0);
    return true;
  }

  /** From the account file: every non-empty record, in slot order. */
  rebuildIndex(): void {
    this.indexRebuilds++;
    this.idx.fill(0);
    this.verified.fill(1);
    this.dirtyIdx.fill(1);
    this.anyDirty = true;
    let last = 0;
    const regions = this.loaded.length;
    for (let r = 0; r < regions; r++) {
      const first = r << REGION_SHIFT;
      const seg = this.segs[first >>> SEG_SHIFT];
      const u = this.segs32[first >>> SEG_SHIFT];
      const segOff = (first & SEG_MASK) * 128;
      const len = Math.min(REGION_BYTES, this.dataBytes - r * REGION_BYTES);
      if (this.loaded[r] === 0) {
        // Read into the zero-filled segment only when the file holds something
        // there: a rebuild costs memory in proportion to the data, not the capacity.
        const n = readUpTo(this.dataFd, ZEROS_SCRATCH, 0, len, r * REGION_BYTES, this.dataName);
        this.loaded[r] = 1;
        if (ZEROS.compare(ZEROS_SCRATCH, 0, n, 0, n) === 0) continue;
        ZEROS_SCRATCH.copy(seg, segOff, 0, n);
      } else if (ZEROS.compare(seg, segOff, segOff + len, 0, len) === 0) {
        continue;
      }
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

  /** Ensures file room for `n` more records after those written and staged. */
  reserve(n: number): void {
    // Appends follow a header of the current epoch, never anything else.
    if (this.walPos < WAL_RECORD_SIZE) fail(BatchStatus.IO_ERROR, `${this.walName}: log has no header to append to`);
    const need = this.walPos + this.staged + n * WAL_RECORD_SIZE;
    while (need > this.walMapped) {
      // Small logs stay small (a quiet shard costs 256 KiB); busy ones grow by 4 MiB.
      const chunk = Math.min(WAL_CHUNK, Math.max(WAL_FIRST_CHUNK, this.walMapped));
      if (this.walMapped + chunk > WAL_RESERVATION) fail(BatchStatus.IO_ERROR, `log of shard ${this.index} is full`);
      const target = this.walMapped + chunk;
      const size = fileSize(this.walFd);
      if (size < target) {
        // Node has no fallocate: the file grows sparse. Refuse here, before the operation changes
        // anything, when the disk clearly cannot take the chunk (a write that still fails later
        // makes the ledger read-only, as a failed fsync does).
        if (freeBytes(this.dir) < target - size) fail(BatchStatus.IO_ERROR, `allocate ${this.walName}: No space left on device`);
        resize(this.walFd, target, this.walName);
      }
      this.walMapped = target;
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

  /** Appends the post-image of `slot` as a log record (to the staging buffer). */
  append(type: number, slot: number, lsn: number, epoch: number, legs: number, leg: number,
    amountLo: number, amountHi: number, tsLo: number, tsHi: number): void {
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
    s[w + W_SHARD] = this.index;
    s[w + W_SLOT] = slot;
    s[w + W_LEGS] = legs;
    s[w + W_LEG] = leg;
    s[w + W_AMOUNT] = amountLo;
    s[w + W_AMOUNT + 1] = amountHi;
    s[w + W_WINDOW] = 0;
    if (this.checked[slot] === 1) {
      // The image's own CRC is right: reuse it for the 124 bytes it covers.
      let c = crcWords(0xffffffff, s, w, W_CRC);
      c = crcOverRecord(c, s[w + W_ACCOUNT + A_CRC]);
      s[w + W_CRC] = ~crcWords(c, s, w + W_ACCOUNT + A_CRC, WAL_WORDS - W_ACCOUNT - A_CRC) >>> 0;
    } else {
      s[w + W_CRC] = walCrc(s, w);
    }
    this.walLastLsn = lsn;
  }

  /** Writes the staged records to the kernel (one positioned write). */
  flush(): void {
    const n = this.staged;
    if (n === 0) return;
    writeAt(this.walFd, this.stage!, 0, n, this.walPos, this.walName);
    this.walPos += n;
    this.staged = 0;
  }

  walBytes(): number {
    return this.walPos + this.staged;
  }

  walResetTo(epoch: number, window: number, now: number): void {
    this.closeWalScan();
    this.staged = 0;
    // As native: the file and its blocks are kept for the next epoch (the new
    // header makes every old record stale); a log that grew far past what this
    // epoch used is cut back.
    if (fileSize(this.walFd) > 4 * this.walPos + WAL_CHUNK) {
      this.walMapped = 0;
      resize(this.walFd, 0, this.walName);
    }
    const h = Buffer.alloc(WAL_RECORD_SIZE);
    const u = new Uint32Array(h.buffer, h.byteOffset, WAL_WORDS);
    u[0] = WAL_MAGIC;
    u[W_TIMESTAMP] = lo32(now);
    u[W_TIMESTAMP + 1] = hi32(now);
    u[W_TYPE] = WalType.HEADER;
    u[W_EPOCH] = lo32(epoch);
    u[W_EPOCH + 1] = hi32(epoch);
    u[W_SHARD] = this.index;
    u[W_WINDOW] = window;
    u[W_CRC] = walCrc(u, 0);
    writeAt(this.walFd, h, 0, WAL_RECORD_SIZE, 0, this.walName);
    dataSyncOrThrow(this.walFd, this.walName);
    this.walPos = WAL_RECORD_SIZE;
    this.walLastLsn = 0;
  }

  /**
   * True when the file is a valid header of `epoch` followed by nothing, zeros, or an intact record of
   * an earlier epoch (the file is reused); then appends may start after the header.
   */
  walHeaderOnly(epoch: number): boolean {
    const size = fileSize(this.walFd);
    if (size < WAL_RECORD_SIZE) return false;
    const n = size >= 2 * WAL_RECORD_SIZE ? 2 : 1;
    const h = Buffer.alloc(2 * WAL_RECORD_SIZE);
    readAt(this.walFd, h, 0, n * WAL_RECORD_SIZE, 0, this.walName);
    const u = new Uint32Array(h.buffer, h.byteOffset, 2 * WAL_WORDS);
    const ep = (w: number) => u[w + W_EPOCH] + u[w + W_EPOCH + 1] * TWO32;
    if (!(u[0] === WAL_MAGIC && u[W_TYPE] === WalType.HEADER && ep(0) === epoch && u[W_SHARD] === this.index &&
      u[W_CRC] === walCrc(u, 0))) return false;
    if (n === 2) {
      const w = WAL_WORDS;
      const zero = ZEROS.compare(h, WAL_RECORD_SIZE, 2 * WAL_RECORD_SIZE, 0, WAL_RECORD_SIZE) === 0;
      const stale = u[w] === WAL_MAGIC && ep(w) < epoch && u[w + W_CRC] === walCrc(u, w);
      if (!zero && !stale) return false;
    }
    this.walPos = WAL_RECORD_SIZE;
    return true;
  }

  closeWalScan(): void {
    this.scan = undefined;
    this.scan32 = undefined;
  }

  /** Recovery pass 1: validate the log and find where this file is cut (native Shard::ScanWal). */
  scanWal(epoch: number, checkpointLsn: number, fallbackWindow: number, repair: boolean): WalScan {
    const out: WalScan = { validEnd: 0, droppedBytes: 0, records: 0, maxLsn: 0 };
    const size = fileSize(this.walFd);
    this.closeWalScan();
    if (size > 0) {
      if (size > 0xffffffff) fail(BatchStatus.IO_ERROR, `${this.walName}: log of ${size} bytes is too large to replay here`);
      const b = Buffer.allocUnsafeSlow(size);
      const got = readUpTo(this.walFd, b, 0, size, 0, this.walName);
      b.fill(0, got);
      this.scan = b;
      this.scan32 = new Uint32Array(b.buffer, b.byteOffset, Math.floor(size / 4));
    }
    const b = this.scan!;
    const u = this.scan32!;
    const eLo = lo32(epoch);
    const eHi = hi32(epoch);
    const belongs = (w: number): boolean =>
      u[w] === WAL_MAGIC && u[w + W_EPOCH] === eLo && u[w + W_EPOCH + 1] === eHi && u[w + W_SHARD] === this.index &&
      u[w + W_CRC] === walCrc(u, w);
    const full = Math.floor(size / WAL_RECORD_SIZE) * WAL_RECORD_SIZE;
    let window = fallbackWindow;
    let off = 0;
    if (full >= WAL_RECORD_SIZE && belongs(0) && u[W_TYPE] === WalType.HEADER) {
      window = u[W_WINDOW];
      off = WAL_RECORD_SIZE;
      let prevLsn = 0;
      let prevLeg = 0;
      for (; off < full; off += WAL_RECORD_SIZE) {
        const w = off >>> 2;
        if (!belongs(w)) break;
        const type = u[w + W_TYPE];
        const legs = u[w + W_LEGS];
        const leg = u[w + W_LEG];
        const lsn = u[w + W_LSN] + u[w + W_LSN + 1] * TWO32;
        const ok = type >= WalType.MINT && type <= WalType.IMAGE && legs >= 1 && leg < legs &&
          u[w + W_SLOT] < this.capacity && lsn > checkpointLsn &&
          (lsn > prevLsn || (lsn === prevLsn && leg > prevLeg));
        if (!ok) break;
        prevLsn = lsn;
        prevLeg = leg;
        out.records++;
        out.maxLsn = lsn;
      }
    }
    out.validEnd = off;
    // Everything from `off` on is cut. That is a torn tail only if what follows
    // could still have been unsynced: at most `window` valid records.
    let validAfter = 0;
    for (let o = off; o < full; o += WAL_RECORD_SIZE) {
      const w = o >>> 2;
      if (belongs(w) && u[w + W_TYPE] !== WalType.HEADER) {
        validAfter++;
        out.droppedBytes += WAL_RECORD_SIZE;
      } else if (ZEROS.compare(b, o, o + WAL_RECORD_SIZE, 0, WAL_RECORD_SIZE) === 0) {
        // space extended ahead of the writer and never written
      } else if (u[w] === WAL_MAGIC && u[w + W_EPOCH] + u[w + W_EPOCH + 1] * TWO32 < epoch) {
        // left over from an earlier epoch (the file is reused): stale, not damage
      } else {
        out.droppedBytes += WAL_RECORD_SIZE;
      }
    }
    for (let o = full; o < size; o++) {
      if (b[o] !== 0) {
        out.droppedBytes += size - full;
        break;
      }
    }
    if (!repair && window !== 0xffffffff && validAfter > window) {
      fail(BatchStatus.CORRUPTION, `${this.walName}: damaged record at offset ${off} is followed by ${validAfter} valid records ` +
        `(more than one sync window of ${window})`);
    }
    this.scanEnd = out.validEnd;
    return out;
  }

  /** LSN and type of the first record kept by the scan; lsn 0 when there is none. */
  firstLsn(): { lsn: number; type: number } {
    if (this.scanEnd <= WAL_RECORD_SIZE) return { lsn: 0, type: 0 };
    const u = this.scan32!;
    const w = WAL_RECORD_SIZE >>> 2;
    return { lsn: u[w + W_LSN] + u[w + W_LSN + 1] * TWO32, type: u[w + W_TYPE] };
  }

  /** Recovery pass 2: count the legs of each transaction (all shards together decide the cut). */
  countWal(base: number, counts: Uint32Array, legs: Uint32Array): void {
    const u = this.scan32!;
    for (let o = WAL_RECORD_SIZE; o < this.scanEnd; o += WAL_RECORD_SIZE) {
      const w = o >>> 2;
      const lsn = u[w + W_LSN] + u[w + W_LSN + 1] * TWO32;
      if (lsn < base || lsn - base >= counts.length) continue;
      const i = lsn - base;
      counts[i]++;
      if (legs[i] === 0) legs[i] = u[w + W_LEGS];
      else if (legs[i] !== u[w + W_LEGS]) legs[i] = 0xffffffff; // disagreeing legs: never complete
    }
  }

  /** Recovery pass 3: applies every record below the global cut; returns how many. */
  applyWal(cutLsn: number, indexValid: boolean, dropped: { bytes: number }): number {
    let applied = 0;
    const u = this.scan32;
    for (let o = WAL_RECORD_SIZE; o < this.scanEnd; o += WAL_RECORD_SIZE) {
      const w = o >>> 2;
      const lsn = u![w + W_LSN] + u![w + W_LSN + 1] * TWO32;
      if (lsn >= cutLsn) {
        dropped.bytes += this.scanEnd - o;
        break;
      }
      const slot = u![w + W_SLOT];
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
        } else if (found !== slot) {
          fail(BatchStatus.CORRUPTION, `${this.walName}: account at offset ${o} names slot ${slot} but the index holds it at slot ${found}`);
        }
      }
      applied++;
    }
    this.closeWalScan();
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

  /** Writes dirty pages back (runs of pages in one write each), then fdatasync. */
  writeBackData(): void {
    const d = this.dirtyData;
    const pagesPerSeg = (SEG_MASK + 1) / SLOTS_PER_PAGE;
    for (let p = 0; p < d.length;) {
      if (d[p] === 0) {
        p++;
        continue;
      }
      let e = p + 1;
      // a run ends at a clean page or at a segment boundary
      while (e < d.length && d[e] !== 0 && e % pagesPerSeg !== 0) e++;
      const off = p * PAGE_SIZE;
      const len = Math.min((e - p) * PAGE_SIZE, this.dataBytes - off);
      writeAt(this.dataFd, this.segs[Math.floor(p / pagesPerSeg)], (p % pagesPerSeg) * PAGE_SIZE, len, off, this.dataName);
      p = e;
    }
    crashPoint('checkpoint:after-data-write');
    dataSyncOrThrow(this.dataFd, this.dataName);
  }

  /** Dirty pages, the CRC table and the header, then fdatasync. */
  writeIndex(next: ShardManifest): void {
    const d = this.dirtyIdx;
    for (let p = 0; p < d.length;) {
      if (d[p] === 0) {
        p++;
        continue;
      }
      let e = p;
      for (; e < d.length && d[e] !== 0; e++) this.pageCrcs[e] = crc32cWords(this.idx, e * 1024, 1024);
      writeAt(this.indexFd, new Uint8Array(this.idx.buffer, p * PAGE_SIZE, (e - p) * PAGE_SIZE), 0, (e - p) * PAGE_SIZE,
        this.entriesOff + p * PAGE_SIZE, this.indexName);
      p = e;
    }
    encodeIndexHeader(this.head, this.index, this.mask + 1, this.count, this.indexPages, next.epoch, next.checkpointLsn,
      this.seed, crc32cWords(this.pageCrcs, 0, this.indexPages));
    writeAt(this.indexFd, new Uint8Array(this.pageCrcs.buffer), 0, this.indexPages * 4, PAGE_SIZE, this.indexName);
    writeAt(this.indexFd, this.head, 0, 64, 0, this.indexName);
    dataSyncOrThrow(this.indexFd, this.indexName);
  }

  clearDirty(): void {
    this.dirtyData.fill(0);
    this.dirtyIdx.fill(0);
    this.anyDirty = false;
  }
}

