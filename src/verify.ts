/**
 * verifyLedger: checks every byte of a stopped ledger directory that a checksum or a count covers, without
 * opening the ledger: it never takes the lock and never writes (every file is opened read-only).
 *
 *   - MANIFEST: magic, version, checksum;
 *   - every log file of the live generations (the manifest's epoch E and E+1): the scan rules of recovery
 *     (scanWal and globalCut of src/js/shard.ts, the very code the JS engine replays with), so a log the next
 *     open would refuse with CORRUPTION is damage here, and a torn tail it would cut is a note;
 *   - every account record: checksum, version, its own slot; a record that the next open's replay rewrites
 *     (a page a crashed background checkpoint may have torn) is a note, not damage;
 *   - every index: header checksum and shape, the page-CRC table, every entry page against it, every entry
 *     against the record it names;
 *   - the seed's "account count drift", only where the files are exactly at the checkpoint (clean-shutdown
 *     marker of this checkpoint, no log record after it): the index's count against the accounts in the shard
 *     file and the entries in the index, and the sum of all balances against the manifest's supply.
 *
 * Damage is a finding (file, byte offset, what); everything else worth knowing is a note.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LedgerError } from './errors';
import {
  ACCOUNT_CRC_LEN, ACCOUNT_SIZE, ACCOUNT_VERSION, Account, ENTRIES_PER_PAGE, INDEX_HEADER_CRC_LEN, INDEX_HEADER_SIZE,
  INDEX_MAGIC, INDEX_VERSION, Index, MANIFEST_FILE, MAX_ACCOUNTS_PER_SHARD, MAX_INDEX_CAPACITY, PAGE_SIZE,
  WAL_RECORD_SIZE, Wal, crc32c, indexEntriesOffset,
  indexTableBytes, readManifest, readMarker, shardFile, walFile, type Manifest,
} from './format';
import { crc32cWords } from './js/crc';
import { hashKeyWords } from './js/hash';
import { lockHolder } from './js/lock';
import { WalLog, globalCut, scanWal, type ScannedLog } from './js/shard';

/** Bytes read per step (a whole number of account records and of index pages): progress and yields come per step. */
const STEP_BYTES = 4 * 1024 * 1024;
// What verify found in a slot of a shard file.
const EMPTY = 0;
const VALID = 1;
const DAMAGED = 2;
const ACCOUNT_WORDS = ACCOUNT_SIZE / 4;
const PAGE_WORDS = PAGE_SIZE / 4;

export interface VerifyFinding {
  /** File name inside the ledger directory. */
  file: string;
  /** Byte offset in that file of the damaged record, page or field. */
  offset: number;
  what: string;
}

export interface VerifyProgress {
  phase: 'log' | 'accounts' | 'index';
  /** Bytes read so far and in all, over the whole run. */
  done: number;
  total: number;
}

export interface VerifyOptions {
  onProgress?: (p: VerifyProgress) => void;
}

export interface VerifyReport {
  dir: string;
  /** No finding. */
  ok: boolean;
  /** The manifest (undefined when it is damaged: then it is the only finding). */
  manifest: Manifest | undefined;
  /** The clean-shutdown marker names this checkpoint and no log holds a record after it: the drift checks ran. */
  atCheckpoint: boolean;
  /** Used account records in the shard files, and the sum of their balances (valid records only). */
  accounts: number;
  balanceSum: bigint;
  log: {
    /** Records of the live generations after the checkpoint, and how many the next open would replay. */
    records: number;
    replayable: number;
    /** Bytes the next open would drop (torn tails and what follows them). */
    droppedBytes: number;
  };
  /** The sum of balances against the manifest's supply (total minted). */
  supply: { checked: boolean; expected?: bigint; reason?: string };
  /** The index count against the shard file and the index entries, per shard. */
  counts: { checked: boolean; reason?: string };
  /** What was read: files, bytes, records, pages. */
  checked: { files: number; bytes: number; accountRecords: number; indexPages: number; logRecords: number };
  findings: VerifyFinding[];
  notes: string[];
  ms: number;
}

interface IndexHead {
  valid: boolean;
  /** Exact for the manifest's checkpoint (epoch and checkpoint LSN). */
  current: boolean;
  count: number;
  pages: number;
}

/**
 * Verifies the ledger in `dir`, which no live process may hold (LOCKED). Throws INVALID_OPTIONS for a missing
 * directory or one that holds no ledger; everything wrong inside a ledger is a finding in the report.
 */
export async function verifyLedger(dir: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  if (typeof dir !== 'string' || dir.length === 0) throw new LedgerError('INVALID_OPTIONS', 'dir must be a non-empty string');
  if (options === null || typeof options !== 'object') throw new LedgerError('INVALID_OPTIONS', 'options must be an object');
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw new LedgerError('INVALID_OPTIONS', 'onProgress must be a function');
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new LedgerError('INVALID_OPTIONS', `no such directory: ${dir}`);
  }
  if (!st.isDirectory()) throw new LedgerError('INVALID_OPTIONS', `not a directory: ${dir}`);
  const holder = lockHolder(dir);
  if (holder !== 0) {
    throw new LedgerError('LOCKED', `${dir} is held by ${holder > 0 ? `process ${holder}` : 'a live ledger'}: ` +
      'verify a stopped ledger (or a backup of it)');
  }
  const started = performance.now();
  const report: VerifyReport = {
    dir, ok: true, manifest: undefined, atCheckpoint: false, accounts: 0, balanceSum: 0n,
    log: { records: 0, replayable: 0, droppedBytes: 0 },
    supply: { checked: false }, counts: { checked: false },
    checked: { files: 0, bytes: 0, accountRecords: 0, indexPages: 0, logRecords: 0 },
    findings: [], notes: [], ms: 0,
  };
  const finding = (file: string, offset: number, what: string): void => {
    report.findings.push({ file, offset, what });
  };
  const done = (): VerifyReport => {
    report.ok = report.findings.length === 0;
    report.ms = performance.now() - started;
    return report;
  };

  let m: Manifest | undefined;
  try {
    m = readManifest(dir);
  } catch (e) {
    if (!(e instanceof LedgerError) || e.code !== 'CORRUPTION') throw e;
    finding(MANIFEST_FILE, 0, e.message);
    report.counts.reason = report.supply.reason = 'the manifest is damaged: nothing else was checked';
    return done();
  }
  if (!m) throw new LedgerError('INVALID_OPTIONS', `${dir} holds no ledger (no ${MANIFEST_FILE})`);
  report.manifest = m;
  report.checked.files++;
  report.checked.bytes += fs.statSync(path.join(dir, MANIFEST_FILE)).size;

  const epoch = Number(m.epoch);
  const checkpointLsn = Number(m.checkpointLsn);
  const sizeOf = (name: string): number => {
    try {
      return fs.statSync(path.join(dir, name)).size;
    } catch {
      return -1;
    }
  };
  // Progress counts bytes over every file read.
  let total = 0;
  for (let s = 0; s < m.shards; s++) {
    for (const name of [shardFile('shard', s, 'bin'), shardFile('index', s, 'bin'), walFile(s, epoch), walFile(s, epoch + 1)]) {
      total += Math.max(0, sizeOf(name));
    }
  }
  let read = 0;
  const progress = async (phase: VerifyProgress['phase'], bytes: number): Promise<void> => {
    read += bytes;
    report.checked.bytes += bytes;
    options.onProgress?.({ phase, done: read, total });
    await new Promise<void>((resolve) => setImmediate(resolve));
  };

  // ---------------------------------------------------------------- the logs
  // First, because replay decides which damaged-looking account records are no damage.
  const files: (ScannedLog & { shard: number })[] = [];
  const replayed = new Map<number, Set<number>>(); // shard -> slots the next open's replay rewrites
  let logsHeaderOnly = true;
  try {
    for (let s = 0; s < m.shards; s++) {
      for (let e = epoch; e <= epoch + 1; e++) {
        const log = new WalLog(walFile(s, e));
        const size = sizeOf(log.name);
        if (size < 0) {
          finding(log.name, 0, `missing: the log of generation ${e} of shard ${s}`);
          logsHeaderOnly = false;
          continue;
        }
        log.fd = fs.openSync(path.join(dir, log.name), 'r');
        let scan;
        try {
          scan = scanWal(log, s, e, checkpointLsn);
        } catch (err) {
          fs.closeSync(log.fd);
          throw err;
        }
        files.push({ log, scan, shard: s });
        report.checked.files++;
        report.checked.logRecords += scan.records;
        report.log.records += scan.records;
        report.log.droppedBytes += scan.droppedBytes;
        // The file of E must be exactly its header (what the engines' clean open asks); the one of E+1 may hold
        // a prepared header but no record.
        if (scan.records > 0 || scan.droppedBytes > 0 || (e === epoch && (scan.prefixEnd < WAL_RECORD_SIZE || scan.damaged))) {
          logsHeaderOnly = false;
        }
        await progress('log', size);
      }
    }
    if (files.length > 0) {
      const cut = globalCut(files, checkpointLsn);
      if (cut.corruption !== undefined) {
        const damaged = files.find((f) => f.scan.damaged);
        if (damaged) finding(damaged.log.name, damaged.scan.prefixEnd, cut.corruption);
        else finding(cut.proof.log.name, cut.proof.scan.durableAt, cut.corruption);
      } else {
        for (const f of files) {
          if (f.scan.damaged) {
            report.notes.push(`${f.log.name}: a torn or damaged tail at offset ${f.scan.prefixEnd} that no later record ` +
              'proves durable: the next open cuts it and reports the bytes dropped');
          }
        }
      }
      // What the next open applies: the records of each valid prefix below the cut.
      for (const f of files) {
        const b = f.log.scan!;
        const shard = f.shard;
        for (let o = WAL_RECORD_SIZE; o < f.scan.prefixEnd; o += WAL_RECORD_SIZE) {
          if (Number(b.readBigUInt64LE(o + Wal.LSN)) >= cut.cut) break;
          report.log.replayable++;
          let slots = replayed.get(shard);
          if (!slots) replayed.set(shard, (slots = new Set()));
          slots.add(b.readUInt32LE(o + Wal.SLOT));
        }
      }
      if (report.log.records > 0) {
        report.notes.push(`the logs hold ${report.log.records} records after checkpoint LSN ${checkpointLsn}: the next ` +
          `open replays ${report.log.replayable} of them`);
      }
    }
  } finally {
    for (const f of files) {
      f.log.closeScan();
      if (f.log.fd >= 0) fs.closeSync(f.log.fd);
      f.log.fd = -1;
    }
  }
  const marker = readMarker(dir);
  const markerOk = marker !== undefined && marker.epoch === m.epoch && marker.checkpointLsn === m.checkpointLsn;
  if (!marker) report.notes.push('no clean-shutdown marker: the last run did not close cleanly, or the ledger is open');
  else if (!markerOk) report.notes.push('the clean-shutdown marker names another checkpoint (stale): the next open replays');

  // ---------------------------------------------------------------- accounts
  const recordsPerStep = STEP_BYTES / ACCOUNT_SIZE;
  const buf = Buffer.alloc(STEP_BYTES);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, STEP_BYTES / 4); // records and pages are word-aligned in it
  // Per shard, while its index is checked: the hash of each valid record's key, and each slot's state.
  const tags: Uint32Array[] = [];
  const slotState: Uint8Array[] = []; // EMPTY, VALID or DAMAGED
  const used: number[] = [];
  const capacities: number[] = [];
  let accountDamage = false;
  const checkAccounts = async (s: number): Promise<void> => {
    const name = shardFile('shard', s, 'bin');
    // Shards grow (issue 8): the file's size is the shard's capacity, from the initial one up to the hard limit.
    const size = sizeOf(name);
    const plausible = size > 0 && size % ACCOUNT_SIZE === 0 && size >= m.accountsPerShard * ACCOUNT_SIZE &&
      size <= MAX_ACCOUNTS_PER_SHARD * ACCOUNT_SIZE;
    const capacity = plausible ? size / ACCOUNT_SIZE : m.accountsPerShard;
    capacities.push(capacity);
    tags.push(new Uint32Array(capacity));
    slotState.push(new Uint8Array(capacity));
    used.push(0);
    if (!plausible) {
      finding(name, 0, size < 0 ? 'missing' : `size ${size}, expected whole ${ACCOUNT_SIZE}-byte records, from ` +
        `${m.accountsPerShard} (the initial capacity) to ${MAX_ACCOUNTS_PER_SHARD}`);
      accountDamage = true;
      await progress('accounts', Math.max(0, size));
      return;
    }
    report.checked.files++;
    const rewritten = replayed.get(s);
    const fd = fs.openSync(path.join(dir, name), 'r');
    try {
      for (let first = 0; first < capacity; first += recordsPerStep) {
        const n = Math.min(recordsPerStep, capacity - first);
        readFully(fd, buf, n * ACCOUNT_SIZE, first * ACCOUNT_SIZE);
        // Balances of this step, as exact sums of their low and high 32-bit words (each under 2^53).
        let sumLo = 0;
        let sumHi = 0;
        for (let i = 0; i < n; i++) {
          const w = i * ACCOUNT_WORDS;
          const slot = first + i;
          if (isZero(words, w, ACCOUNT_WORDS)) continue;
          used[s]++;
          report.checked.accountRecords++;
          const version = words[w + Account.VERSION / 4];
          const ownSlot = words[w + Account.SLOT / 4];
          const crcOk = words[w + Account.CRC / 4] === crc32cWords(words, w, ACCOUNT_CRC_LEN / 4);
          const problem = !crcOk ? 'checksum mismatch'
            : version !== ACCOUNT_VERSION ? `version ${version}, expected ${ACCOUNT_VERSION}`
              : ownSlot !== slot ? `record names slot ${ownSlot} (copied to the wrong place)` : '';
          if (problem !== '') {
            if (rewritten?.has(slot)) {
              report.notes.push(`${name}: slot ${slot} at offset ${slot * ACCOUNT_SIZE}: ${problem}; the next open's ` +
                'replay rewrites it from the log');
            } else {
              finding(name, slot * ACCOUNT_SIZE, `slot ${slot}: ${problem}`);
              accountDamage = true;
            }
            slotState[s][slot] = DAMAGED;
            continue;
          }
          slotState[s][slot] = VALID;
          tags[s][slot] = hashKeyWords(words, w + Account.PUBKEY / 4, m.seed);
          sumLo += words[w + Account.LAMPORTS / 4];
          sumHi += words[w + Account.LAMPORTS / 4 + 1];
        }
        report.balanceSum += BigInt(sumLo) + (BigInt(sumHi) << 32n);
        await progress('accounts', n * ACCOUNT_SIZE);
      }
    } finally {
      fs.closeSync(fd);
    }
    report.accounts += used[s];
  };

  // ---------------------------------------------------------------- indexes (each right after its shard file)
  const heads: IndexHead[] = [];
  const entries: number[] = [];
  const checkIndex = async (s: number): Promise<void> => {
    const name = shardFile('index', s, 'bin');
    const size = sizeOf(name);
    // An index doubles as its shard grows: the header says the capacity its file is laid out for.
    let indexCapacity = m.indexCapacity;
    if (size >= INDEX_HEADER_SIZE) {
      const h = Buffer.alloc(INDEX_HEADER_SIZE);
      const fd = fs.openSync(path.join(dir, name), 'r');
      try {
        readFully(fd, h, INDEX_HEADER_SIZE, 0);
      } finally {
        fs.closeSync(fd);
      }
      const c = h.readUInt32LE(Index.CAPACITY);
      if (c >= m.indexCapacity && c <= MAX_INDEX_CAPACITY && (c & (c - 1)) === 0) indexCapacity = c;
    }
    const slots = capacities[s];
    const pages = indexCapacity / ENTRIES_PER_PAGE;
    const entriesAt = indexEntriesOffset(pages);
    const expected = entriesAt + indexCapacity * 8;
    const head: IndexHead = { valid: false, current: false, count: 0, pages };
    heads.push(head);
    entries.push(0);
    if (size !== expected) {
      // A missing or short index is rebuilt by the next open: a note, the shard file is the truth.
      report.notes.push(`${name}: ${size < 0 ? 'missing' : `size ${size}, expected ${expected}`}: the next open rebuilds it`);
      await progress('index', Math.max(0, size));
      return;
    }
    report.checked.files++;
    const fd = fs.openSync(path.join(dir, name), 'r');
    try {
      const h = Buffer.alloc(INDEX_HEADER_SIZE);
      readFully(fd, h, INDEX_HEADER_SIZE, 0);
      if (h.readUInt32LE(Index.CRC) !== crc32c(h, 0, INDEX_HEADER_CRC_LEN) || h.readUInt32LE(Index.MAGIC) !== INDEX_MAGIC) {
        finding(name, 0, 'index header: checksum or magic mismatch (the next open rebuilds the index)');
        await progress('index', size);
        return;
      }
      const shape = h.readUInt32LE(Index.VERSION) === INDEX_VERSION && h.readUInt32LE(Index.SHARD) === s &&
        h.readUInt32LE(Index.CAPACITY) === indexCapacity && h.readUInt32LE(Index.PAGES) === pages &&
        h.readUInt32LE(Index.SEED) === m.seed && h.readUInt32LE(Index.COUNT) <= slots;
      if (!shape) {
        finding(name, 0, 'index header: version, shard, shape or seed does not match the manifest');
        await progress('index', size);
        return;
      }
      head.count = h.readUInt32LE(Index.COUNT);
      head.current = h.readBigUInt64LE(Index.EPOCH) === m.epoch && h.readBigUInt64LE(Index.CHECKPOINT_LSN) === m.checkpointLsn;
      if (!head.current) {
        report.notes.push(`${name}: written for epoch ${h.readBigUInt64LE(Index.EPOCH)}, not the manifest's ${m.epoch}: ` +
          'the next open rebuilds it (or replays onto it)');
      }
      const table = Buffer.alloc(indexTableBytes(pages));
      readFully(fd, table, table.length, PAGE_SIZE);
      if (h.readUInt32LE(Index.TABLE_CRC) !== crc32c(table, 0, pages * 4)) {
        finding(name, PAGE_SIZE, 'page-CRC table: checksum mismatch (the next open rebuilds the index)');
        await progress('index', size);
        return;
      }
      head.valid = true;
      await progress('index', entriesAt);
      const seen = new Uint8Array(slots);
      const pagesPerStep = STEP_BYTES / PAGE_SIZE;
      for (let first = 0; first < pages; first += pagesPerStep) {
        const n = Math.min(pagesPerStep, pages - first);
        readFully(fd, buf, n * PAGE_SIZE, entriesAt + first * PAGE_SIZE);
        for (let p = 0; p < n; p++) {
          const page = first + p;
          const at = entriesAt + page * PAGE_SIZE;
          report.checked.indexPages++;
          if (crc32cWords(words, p * PAGE_WORDS, PAGE_WORDS) !== table.readUInt32LE(page * 4)) {
            finding(name, at, `entry page ${page}: checksum mismatch (a lookup that touches it rebuilds the index)`);
            head.valid = false;
            continue;
          }
          for (let i = 0; i < ENTRIES_PER_PAGE; i++) {
            const w = p * PAGE_WORDS + i * 2; // entry = slot_plus_1:u32 tag:u32
            const slotPlus1 = words[w];
            if (slotPlus1 === 0) continue;
            entries[s]++;
            const slot = slotPlus1 - 1;
            const tag = words[w + 1];
            if (slot >= slots) {
              finding(name, at + i * 8, `entry names slot ${slot}, past the shard's ${slots}`);
            } else if (seen[slot] === 1) {
              finding(name, at + i * 8, `a second entry for slot ${slot}`);
            } else if (slotState[s][slot] === VALID && tags[s][slot] !== tag) {
              finding(name, at + i * 8, `entry for slot ${slot} carries tag ${tag}, the record's key hashes to ${tags[s][slot]}`);
            } else if (head.current && slotState[s][slot] === EMPTY && !replayed.get(s)?.has(slot)) {
              finding(name, at + i * 8, `entry names slot ${slot}, which holds no valid account`);
            }
            if (slot < slots) seen[slot] = 1;
          }
        }
        await progress('index', n * PAGE_SIZE);
      }
    } finally {
      fs.closeSync(fd);
    }
  };
  for (let s = 0; s < m.shards; s++) {
    await checkAccounts(s);
    await checkIndex(s);
    // What the index check needed of the shard: let it go before the next shard (memory in proportion to one shard).
    tags[s] = new Uint32Array(0);
    slotState[s] = new Uint8Array(0);
  }

  // ---------------------------------------------------------------- the seed's "account count drift"
  report.atCheckpoint = markerOk && logsHeaderOnly && heads.every((h) => h.current);
  if (!report.atCheckpoint) {
    const why = !markerOk ? 'no clean-shutdown marker of this checkpoint'
      : !logsHeaderOnly ? 'the logs hold records after the checkpoint'
        : 'an index is not the one of this checkpoint';
    const reason = `not at a checkpoint (${why}): open and close the ledger first (geoledger checkpoint <dir>)`;
    report.counts = { checked: false, reason };
    report.supply = { checked: false, reason };
  } else {
    report.counts = { checked: true };
    for (let s = 0; s < m.shards; s++) {
      const name = shardFile('index', s, 'bin');
      if (!heads[s].valid) {
        report.notes.push(`${name}: counts not compared, the index is damaged or not the checkpoint's`);
        continue;
      }
      if (heads[s].count !== used[s]) {
        finding(name, Index.COUNT, `index counts ${heads[s].count} accounts, ${shardFile('shard', s, 'bin')} holds ${used[s]}`);
      } else if (entries[s] !== used[s]) {
        finding(name, 0, `index holds ${entries[s]} entries for ${used[s]} accounts`);
      }
    }
    // Supply (issue 9): the manifest's total minted, exact.
    const supply = m.supply;
    if (accountDamage) {
      report.supply = { checked: false, expected: supply, reason: 'damaged account records: their balances are unknown' };
    } else {
      report.supply = { checked: true, expected: supply };
      if (report.balanceSum !== supply) {
        finding(MANIFEST_FILE, 0, `the balances sum to ${report.balanceSum}, the manifest's supply (total minted) is ` +
          `${supply}: drift ${report.balanceSum - supply}`);
      }
    }
  }
  return done();
}

function readFully(fd: number, buf: Buffer, len: number, pos: number): void {
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) {
      buf.fill(0, got, len);
      return;
    }
    got += n;
  }
}

function isZero(u: Uint32Array, w: number, n: number): boolean {
  for (let i = w; i < w + n; i++) if (u[i] !== 0) return false;
  return true;
}
