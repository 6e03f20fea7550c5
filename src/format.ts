/**
 * The on-disk formats, TypeScript side. native/format.h is the reference; the
 * constants here mirror it (test/core/formats.test.ts checks that they agree
 * with the files the native core writes). docs/formats.md has the grammar.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LedgerError } from './errors';
import { crc32cBytes } from './js/crc';

export const ACCOUNT_SIZE = 128;
export const ACCOUNT_CRC_LEN = 124;
export const ACCOUNT_VERSION = 1;
export const Account = Object.freeze({
  PUBKEY: 0, LAMPORTS: 32, LSN: 40, OWNER: 48, RENT_EPOCH: 80, CREATED_LSN: 88,
  SLOT: 96, FLAGS: 100, DATA_LEN: 104, VERSION: 108, CRC: 124,
});

export const WAL_RECORD_SIZE = 224;
export const WAL_MAGIC = 0x57324c47; // "GL2W"
/** Log files per shard: epoch e lives in shard_NNN.<e & 1>.wal (walFile). */
export const WAL_GENERATIONS = 2;
export const WalType = Object.freeze({ HEADER: 1, MINT: 2, DEBIT: 3, CREDIT: 4, IMAGE: 5 });
export const Wal = Object.freeze({
  MAGIC: 0, TIMESTAMP: 4, TYPE: 12, CRC: 16, ACCOUNT: 20, LSN: 148, EPOCH: 156, SHARD: 164,
  SLOT: 168, LEGS: 172, LEG: 176, AMOUNT: 180, DURABLE_LSN: 188, SUPPLY: 196,
});

export const PAGE_SIZE = 4096;
export const INDEX_MAGIC = 0x58494c47;
export const INDEX_HEADER_SIZE = 64;
export const INDEX_VERSION = 1;
/** The index header's CRC covers bytes [0, 60). */
export const INDEX_HEADER_CRC_LEN = 60;
/** 8-byte entries (slot_plus_1, tag) per 4096-byte page: one page-CRC table entry each. */
export const ENTRIES_PER_PAGE = PAGE_SIZE / 8;
/** Index header fields (native/format.h IndexHeader): the file's first 64 bytes. */
export const Index = Object.freeze({
  MAGIC: 0, VERSION: 4, SHARD: 8, CAPACITY: 12, COUNT: 16, PAGES: 20, EPOCH: 24, CHECKPOINT_LSN: 32, SEED: 40,
  TABLE_CRC: 44, CRC: 60,
});
/** Bytes of the page-CRC table (one u32 per entry page, padded to a page); it starts at PAGE_SIZE. */
export function indexTableBytes(pages: number): number {
  return Math.ceil((pages * 4) / PAGE_SIZE) * PAGE_SIZE;
}
/** Where the entry pages of an index start: after the header page and the page-CRC table. */
export function indexEntriesOffset(pages: number): number {
  return PAGE_SIZE + indexTableBytes(pages);
}

// Growth (native/format.h): the hard limit of a shard, the account file's growth steps, and the index's
// incremental rehash, the same in both engines so that they leave the same files.
/** Accounts a shard can ever hold: the address space each shard reserves for its file (16 GiB) x 4096 shards fits. */
export const MAX_ACCOUNTS_PER_SHARD = 2 ** 27;
export const DATA_GROW_MAX_SLOTS = 2 ** 17;
export const MAX_INDEX_CAPACITY = 2 * MAX_ACCOUNTS_PER_SHARD;
export const INDEX_LOAD_DIVISOR = 2;
export const REHASH_ENTRIES_PER_INSERT = 8;
/** The capacity a shard's account file grows to from `capacity`: doubling, at most DATA_GROW_MAX_SLOTS more, whole pages. */
export function nextDataCapacity(capacity: number): number {
  const slotsPerPage = PAGE_SIZE / ACCOUNT_SIZE;
  const next = Math.ceil((capacity + Math.min(capacity, DATA_GROW_MAX_SLOTS)) / slotsPerPage) * slotsPerPage;
  return Math.min(next, MAX_ACCOUNTS_PER_SHARD);
}
/** The index capacity a rebuild gives a shard of `slots`: from `atLeast`, doubled until it holds them at the load factor. */
export function indexCapacityFor(slots: number, atLeast: number): number {
  let c = atLeast;
  while (c < slots * INDEX_LOAD_DIVISOR && c < MAX_INDEX_CAPACITY) c *= 2;
  return c;
}

export const MANIFEST_FILE = 'MANIFEST';
export const MANIFEST_MAGIC = 0x464d4c47;
/** Version 2 added the supply; a version-1 manifest is refused (docs/formats.md). */
export const MANIFEST_VERSION = 2;
export const MANIFEST_SIZE = 64;
export const ManifestField = Object.freeze({ EPOCH: 24, CHECKPOINT_LSN: 32, SUPPLY: 40, CRC: 60 });
/** The supply is a u128: total minted can pass 2^64 - 1 across accounts. */
export const MAX_SUPPLY = (1n << 128n) - 1n;

export const MARKER_FILE = '.clean_shutdown';
export const MARKER_MAGIC = 0x53434c47; // "GLCS"
export const MARKER_SIZE = 32;

export const MINT_OP_SIZE = 40;
export const TRANSFER_OP_SIZE = 72;

export function shardFile(prefix: 'shard' | 'index', shard: number, ext: 'bin'): string {
  return `${prefix}_${String(shard).padStart(3, '0')}.${ext}`;
}
/** The log file that holds the records of `epoch` for `shard`: shard_003.0.wal or shard_003.1.wal. */
export function walFile(shard: number, epoch: number | bigint): string {
  return `shard_${String(shard).padStart(3, '0')}.${Number(BigInt(epoch) & 1n)}.wal`;
}

// ---------------------------------------------------------------- CRC-32C
// One implementation for both engines' TypeScript code (src/js/crc.ts).
/** Raw CRC-32C state update (start at 0xFFFFFFFF, finish with ~state >>> 0). */
export { crcBytes as crc32cUpdate } from './js/crc';
export function crc32c(buf: Uint8Array, start = 0, end = buf.length): number {
  return crc32cBytes(buf, start, end);
}

// ---------------------------------------------------------------- manifest
export interface Manifest {
  shards: number;
  /** Initial capacity of each shard; a shard's account file grows, its size is the current capacity. */
  accountsPerShard: number;
  /** Initial capacity of each shard's index; its header holds the current one. */
  indexCapacity: number;
  seed: number;
  epoch: bigint;
  checkpointLsn: bigint;
  /** Total minted by the operations up to checkpointLsn (u128): replay adds the mints after it. */
  supply: bigint;
}

export function encodeManifest(m: Manifest): Buffer {
  const b = Buffer.alloc(MANIFEST_SIZE);
  b.writeUInt32LE(MANIFEST_MAGIC, 0);
  b.writeUInt32LE(MANIFEST_VERSION, 4);
  b.writeUInt32LE(m.shards, 8);
  b.writeUInt32LE(m.accountsPerShard, 12);
  b.writeUInt32LE(m.indexCapacity, 16);
  b.writeUInt32LE(m.seed, 20);
  b.writeBigUInt64LE(m.epoch, 24);
  b.writeBigUInt64LE(m.checkpointLsn, ManifestField.CHECKPOINT_LSN);
  b.writeBigUInt64LE(m.supply & 0xffffffffffffffffn, ManifestField.SUPPLY);
  b.writeBigUInt64LE(m.supply >> 64n, ManifestField.SUPPLY + 8);
  b.writeUInt32LE(crc32c(b, 0, ManifestField.CRC), ManifestField.CRC);
  return b;
}

export function decodeManifest(b: Uint8Array, where: string): Manifest {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (buf.length !== MANIFEST_SIZE || buf.readUInt32LE(0) !== MANIFEST_MAGIC || buf.readUInt32LE(60) !== crc32c(buf, 0, 60)) {
    throw new LedgerError('CORRUPTION', `${where}: manifest is damaged (size, magic or checksum)`);
  }
  const version = buf.readUInt32LE(4);
  if (version === 1) {
    // Version 1 has no supply, and none can be made up for it: refused, never migrated behind the user's back.
    throw new LedgerError('CORRUPTION', `${where}: manifest version 1 (written before the supply was kept) is not ` +
      `supported by this version; open it with the version that wrote it`);
  }
  if (version !== MANIFEST_VERSION) {
    throw new LedgerError('CORRUPTION', `${where}: manifest version ${version} is not supported`);
  }
  return {
    shards: buf.readUInt32LE(8),
    accountsPerShard: buf.readUInt32LE(12),
    indexCapacity: buf.readUInt32LE(16),
    seed: buf.readUInt32LE(20),
    epoch: buf.readBigUInt64LE(24),
    checkpointLsn: buf.readBigUInt64LE(ManifestField.CHECKPOINT_LSN),
    supply: buf.readBigUInt64LE(ManifestField.SUPPLY) | (buf.readBigUInt64LE(ManifestField.SUPPLY + 8) << 64n),
  };
}

/** The manifest of `dir`, or undefined for a directory that holds no ledger yet. */
export function readManifest(dir: string): Manifest | undefined {
  const file = path.join(dir, MANIFEST_FILE);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      if (fs.existsSync(path.join(dir, shardFile('shard', 0, 'bin')))) {
        throw new LedgerError('CORRUPTION', `${file}: missing, but the directory holds shard files`);
      }
      return undefined;
    }
    throw new LedgerError('IO_ERROR', `${file}: ${(e as Error).message}`);
  }
  return decodeManifest(bytes, file);
}

// ---------------------------------------------------------------- clean-shutdown marker
// A hint only: it lets open skip scanning the logs when it names the current
// epoch and checkpoint and every log is an empty header. A stale one never
// skips replay, because the logs are still checked.
export interface Marker {
  epoch: bigint;
  checkpointLsn: bigint;
}

export function encodeMarker(m: Marker): Buffer {
  const b = Buffer.alloc(MARKER_SIZE);
  b.writeUInt32LE(MARKER_MAGIC, 0);
  b.writeUInt32LE(1, 4);
  b.writeBigUInt64LE(m.epoch, 8);
  b.writeBigUInt64LE(m.checkpointLsn, 16);
  b.writeUInt32LE(crc32c(b, 0, 28), 28);
  return b;
}

export function decodeMarker(b: Buffer): Marker | undefined {
  if (b.length !== MARKER_SIZE || b.readUInt32LE(0) !== MARKER_MAGIC || b.readUInt32LE(28) !== crc32c(b, 0, 28)) return undefined;
  return { epoch: b.readBigUInt64LE(8), checkpointLsn: b.readBigUInt64LE(16) };
}

/** Reads the marker. It describes the previous run only: open removes it (removeMarker) once it has succeeded. */
export function readMarker(dir: string): Marker | undefined {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(path.join(dir, MARKER_FILE));
  } catch {
    return undefined;
  }
  return decodeMarker(bytes);
}

export function removeMarker(dir: string): void {
  fs.rmSync(path.join(dir, MARKER_FILE), { force: true });
}

export function writeMarker(dir: string, m: Marker): void {
  const file = path.join(dir, MARKER_FILE);
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, encodeMarker(m));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  syncDir(dir);
}

export function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
