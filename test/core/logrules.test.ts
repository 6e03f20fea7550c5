// The log rules (docs/durability.md, "Recovery"), as one table of damaged logs and what opening each must give,
// run against both engines with the same expectations.
//
// Every record carries the durable LSN at the time it was written. D = the largest one carried by any intact record
// of a live generation; the cut = the first LSN that is missing or has fewer records than its legs. cut <= D: some
// synced operation is damaged or missing, and the open fails with CORRUPTION, names the damaged file and offset (or,
// when no file stopped at damage, a record that proves the LSN durable), and changes no byte on disk; repair: true
// then keeps the prefix before the cut. cut > D: a torn tail, cut and counted in recovery.walBytesDropped.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  dirDigest, engines, flipBit, garbage, key, Ledger, logRecords, MANUAL_SYNC, open, overwrite, snapshot, tmpDir,
  type LogRecord,
} from './helpers';
import { readManifest, walFile } from '../../dist/format.js';

const WAL = 224;
const SEED = 0x5eed1234;
const KEYS = 8;
/** LSNs 1..SYNCED are written, then sync(), then SYNCED+1..LAST: each of those carries the durable point SYNCED. */
const SYNCED = 40;
const LAST = 60;
/** The cross-shard transfers (two legs, one per shard): every LSN = 4 mod 5 after the first mints. */
const isTransfer = (lsn: number) => lsn > KEYS && lsn % 5 === 4;
const PROVEN_TRANSFER = 24; // <= SYNCED
const UNPROVEN_TRANSFER = 44; // > SYNCED

type Fixture = 'plain' | 'checkpointing';
type Op = { t: 'mint'; to: number; amount: bigint } | { t: 'transfer'; from: number; to: number; amount: bigint };

/** One built log: the undamaged crashed directory, its records, and the operation of each LSN. */
interface Built {
  dir: string;
  records: LogRecord[];
  ops: Op[]; // ops[lsn - 1]
}

/** What a case is given to damage and to compute what it expects. */
class Log {
  constructor(readonly b: Built) {}
  /** The record of leg `leg` of `lsn`. */
  at(lsn: number, leg = 0): LogRecord {
    const r = this.b.records.find((x) => x.lsn === BigInt(lsn) && x.leg === leg);
    if (!r) throw new Error(`no record of LSN ${lsn} leg ${leg}`);
    return r;
  }
  /** Records of LSN >= lsn (in files other than `except`). */
  legsFrom(lsn: number, except?: string): number {
    return this.b.records.filter((x) => x.lsn >= BigInt(lsn) && x.file !== except).length;
  }
  /** The record after the last one of a file. */
  endOf(file: string): number {
    return Math.max(...this.b.records.filter((x) => x.file === file).map((x) => x.offset)) + WAL;
  }
  path(dir: string, r: LogRecord | string): string {
    return path.join(dir, typeof r === 'string' ? r : r.file);
  }
}

function zeroRecord(dir: string, log: Log, r: LogRecord): void {
  overwrite(log.path(dir, r), r.offset, Buffer.alloc(WAL));
}

/** Takes a record out of its file, the records after it move up: nothing is damaged, a leg is just not there. */
function spliceOut(dir: string, log: Log, r: LogRecord): void {
  const file = log.path(dir, r);
  const b = fs.readFileSync(file);
  fs.writeFileSync(file, Buffer.concat([b.subarray(0, r.offset), b.subarray(r.offset + WAL), Buffer.alloc(WAL)]));
}

type Outcome =
  | { open: true } // a torn tail (or nothing lost): opens with the records before the cut
  | { damaged: [lsn: number, leg: number] } // CORRUPTION naming the file and offset of this record
  | { missing: true }; // CORRUPTION: the cut's LSN is missing, named with a record that proves it durable

interface Case {
  name: string;
  fixture: Fixture;
  damage: (dir: string, log: Log) => void;
  /** The first LSN that is not recovered (LAST + 1: none lost). */
  cut: number;
  outcome: Outcome;
  /** recovery.walBytesDropped of the open (torn tail) or of the open with repair: true (CORRUPTION). */
  dropped: (log: Log) => number;
}

const flip = (lsn: number, leg = 0) => (dir: string, log: Log) => flipBit(log.path(dir, log.at(lsn, leg)), log.at(lsn, leg).offset + 40);
const flipped = (lsn: number, leg = 0): Pick<Case, 'damage' | 'cut' | 'dropped'> => ({
  damage: flip(lsn, leg), cut: lsn, dropped: (log) => WAL * log.legsFrom(lsn),
});

const CASES: Case[] = [
  // ------------------------------------------------ bit flips at every depth of a synced log
  { name: 'a bit flipped in the first record of a synced log', fixture: 'plain', ...flipped(1), outcome: { damaged: [1, 0] } },
  { name: 'a bit flipped in the middle of a synced log', fixture: 'plain', ...flipped(20), outcome: { damaged: [20, 0] } },
  {
    name: 'a bit flipped in the credit leg of a synced cross-shard transfer', fixture: 'plain',
    ...flipped(PROVEN_TRANSFER, 1), outcome: { damaged: [PROVEN_TRANSFER, 1] },
  },
  { name: 'a bit flipped just before the durable point', fixture: 'plain', ...flipped(SYNCED - 1), outcome: { damaged: [SYNCED - 1, 0] } },
  { name: 'a bit flipped at the durable point', fixture: 'plain', ...flipped(SYNCED), outcome: { damaged: [SYNCED, 0] } },
  { name: 'a bit flipped just after the durable point', fixture: 'plain', ...flipped(SYNCED + 1), outcome: { open: true } },
  { name: 'a bit flipped well after the durable point', fixture: 'plain', ...flipped(50), outcome: { open: true } },
  { name: 'a bit flipped in the last record', fixture: 'plain', ...flipped(LAST), outcome: { open: true } },
  {
    name: 'garbage over a synced record', fixture: 'plain', outcome: { damaged: [20, 0] }, cut: 20,
    damage: (dir, log) => overwrite(log.path(dir, log.at(20)), log.at(20).offset, garbage(WAL)),
    dropped: (log) => WAL * log.legsFrom(20),
  },
  // ------------------------------------------------ truncation
  {
    // the other shard's log still holds records that prove LSN 30 durable
    name: 'a log cut inside a synced record', fixture: 'plain', outcome: { damaged: [30, 0] }, cut: 30,
    damage: (dir, log) => fs.truncateSync(log.path(dir, log.at(30)), log.at(30).offset + 100),
    dropped: (log) => 100 + WAL * log.legsFrom(30, log.at(30).file),
  },
  {
    name: 'a log cut between synced records', fixture: 'plain', outcome: { missing: true }, cut: 30,
    damage: (dir, log) => fs.truncateSync(log.path(dir, log.at(30)), log.at(30).offset),
    dropped: (log) => WAL * log.legsFrom(30, log.at(30).file),
  },
  {
    name: 'a torn last record', fixture: 'plain', outcome: { open: true }, cut: LAST,
    damage: (dir, log) => fs.truncateSync(log.path(dir, log.at(LAST)), log.at(LAST).offset + 100),
    dropped: () => 100,
  },
  // ------------------------------------------------ zeros and garbage
  {
    name: 'zeros appended after the last records', fixture: 'plain', outcome: { open: true }, cut: LAST + 1,
    damage: (dir, log) => {
      for (const f of new Set(log.b.records.map((r) => r.file))) {
        fs.truncateSync(log.path(dir, f), log.endOf(f));
        fs.appendFileSync(log.path(dir, f), Buffer.alloc(64 * 1024));
      }
    },
    dropped: () => 0,
  },
  {
    name: 'zeros in place of the last records', fixture: 'plain', outcome: { open: true }, cut: 56,
    damage: (dir, log) => log.b.records.filter((r) => r.lsn >= 56n).forEach((r) => zeroRecord(dir, log, r)),
    dropped: () => 0,
  },
  {
    name: 'zeros in place of a synced record', fixture: 'plain', outcome: { missing: true }, cut: 30,
    damage: (dir, log) => zeroRecord(dir, log, log.at(30)),
    dropped: (log) => WAL * (log.legsFrom(30) - 1),
  },
  {
    name: 'a garbage tail', fixture: 'plain', outcome: { open: true }, cut: LAST + 1,
    damage: (dir, log) => {
      const f = log.at(LAST).file;
      fs.truncateSync(log.path(dir, f), log.endOf(f));
      fs.appendFileSync(log.path(dir, f), garbage(1000));
    },
    dropped: () => 1000,
  },
  {
    name: 'a damaged header of the prepared next generation', fixture: 'plain', outcome: { open: true }, cut: LAST + 1,
    damage: (dir, log) => flipBit(log.path(dir, walFile(log.at(1).shard, log.at(1).epoch + 1n)), 40),
    dropped: () => WAL,
  },
  // ------------------------------------------------ missing legs
  {
    name: 'a missing leg of a cross-shard transfer that is proven durable', fixture: 'plain', outcome: { missing: true },
    cut: PROVEN_TRANSFER,
    damage: (dir, log) => spliceOut(dir, log, log.at(PROVEN_TRANSFER, 1)),
    dropped: (log) => WAL * (log.legsFrom(PROVEN_TRANSFER) - 1),
  },
  {
    name: 'a missing leg of a cross-shard transfer after the durable point', fixture: 'plain', outcome: { open: true },
    cut: UNPROVEN_TRANSFER,
    damage: (dir, log) => spliceOut(dir, log, log.at(UNPROVEN_TRANSFER, 1)),
    dropped: (log) => WAL * (log.legsFrom(UNPROVEN_TRANSFER) - 1),
  },
  // ------------------------------------------------ a crash during a background checkpoint
  // LSNs 1..SYNCED in the generation of the manifest's epoch E (kept for the checkpoint), the rest in E+1.
  {
    name: 'a crash during a background checkpoint replays both generations', fixture: 'checkpointing',
    outcome: { open: true }, cut: LAST + 1, damage: () => {}, dropped: () => 0,
  },
  {
    name: 'a bit flipped in the older generation\'s file during a background checkpoint', fixture: 'checkpointing',
    ...flipped(25), outcome: { damaged: [25, 0] },
  },
  {
    name: 'the newer generation\'s last record torn during a background checkpoint', fixture: 'checkpointing',
    outcome: { open: true }, cut: LAST,
    damage: (dir, log) => fs.truncateSync(log.path(dir, log.at(LAST)), log.at(LAST).offset + 100),
    dropped: () => 100,
  },
];

/** Balances of key(0..KEYS-1) after the operations before `cut`. */
function model(ops: Op[], cut: number): bigint[] {
  const b = new Array<bigint>(KEYS).fill(0n);
  for (const op of ops.slice(0, cut - 1)) {
    if (op.t === 'transfer') b[op.from] -= op.amount;
    b[op.to] += op.amount;
  }
  return b;
}

function balances(l: Ledger): bigint[] {
  return Array.from({ length: KEYS }, (_, i) => l.balance(key(i)));
}

/** The file and offset of the first "file ... offset N" in a message. */
function firstPlace(message: string): [string, number] | undefined {
  const m = /(shard_\d{3}\.[01]\.wal)\D{0,40}?offset (\d+)/.exec(message);
  return m ? [m[1], Number(m[2])] : undefined;
}

async function build(engine: 'native' | 'js', fixture: Fixture): Promise<Built> {
  const live = tmpDir('gl-rules');
  const l = await open(live, engine, { shards: 2, accountsPerShard: 1000, seed: SEED, ...MANUAL_SYNC });
  try {
    const ops: Op[] = [];
    const run = (lsn: number) => {
      let op: Op;
      if (lsn <= KEYS) op = { t: 'mint', to: lsn - 1, amount: 1000n };
      else if (isTransfer(lsn)) op = lsn % 2 ? { t: 'transfer', from: X, to: Y, amount: 3n } : { t: 'transfer', from: Y, to: X, amount: 2n };
      else op = { t: 'mint', to: lsn % KEYS, amount: BigInt(lsn) };
      if (op.t === 'mint') l.mint(key(op.to), op.amount);
      else l.transfer(key(op.from), key(op.to), op.amount);
      ops.push(op);
      expect(l.stats().lsn).toBe(BigInt(lsn));
    };
    let X = 0;
    let Y = -1;
    for (let lsn = 1; lsn <= KEYS; lsn++) run(lsn);
    // two accounts in different shards, for the cross-shard transfers
    const first = logRecords(live);
    const shardOf = (k: number) => first.find((r) => r.lsn === BigInt(k + 1))!.shard;
    X = 0;
    Y = Array.from({ length: KEYS }, (_, k) => k).find((k) => shardOf(k) !== shardOf(X)) ?? -1;
    expect(Y, 'the seed puts key(0..7) in both shards').toBeGreaterThan(0);

    for (let lsn = KEYS + 1; lsn <= SYNCED; lsn++) run(lsn);
    await l.sync();
    let dir: string;
    if (fixture === 'plain') {
      for (let lsn = SYNCED + 1; lsn <= LAST; lsn++) run(lsn);
      dir = snapshot(live);
    } else {
      // The files as a crash during the write-back of a background checkpoint leaves them: the manifest, shard
      // and index files and the log of epoch E from before the hand-over, and the log of E+1 that the operations
      // after the hand-over went to (the checkpoint writes nothing to it).
      dir = snapshot(live);
      const E = readManifest(dir)!.epoch;
      const done = l.checkpoint();
      expect(l.stats().checkpointInProgress).toBe(true);
      for (let lsn = SYNCED + 1; lsn <= LAST; lsn++) run(lsn);
      for (let s = 0; s < 2; s++) fs.copyFileSync(path.join(live, walFile(s, E + 1n)), path.join(dir, walFile(s, E + 1n)));
      await done;
      const records = logRecords(dir);
      expect(records.filter((r) => r.epoch === E).map((r) => Number(r.lsn)).every((n) => n <= SYNCED)).toBe(true);
      expect(records.filter((r) => r.epoch === E + 1n).map((r) => Number(r.lsn)).every((n) => n > SYNCED)).toBe(true);
    }
    const records = logRecords(dir);
    const lsns = [...new Set(records.map((r) => Number(r.lsn)))].sort((a, b) => a - b);
    expect(lsns).toEqual(Array.from({ length: LAST }, (_, i) => i + 1));
    expect(records.length).toBe(LAST + Array.from({ length: LAST }, (_, i) => i + 1).filter(isTransfer).length);
    for (const r of records) {
      if (r.lsn <= BigInt(SYNCED)) continue;
      // every record written after sync() carries its LSN (or, while a checkpoint syncs, a later durable point)
      if (fixture === 'plain') expect(r.durableLsn, `durable point of LSN ${r.lsn}`).toBe(BigInt(SYNCED));
      else expect(r.durableLsn >= BigInt(SYNCED) && r.durableLsn < r.lsn, `durable point of LSN ${r.lsn}`).toBe(true);
    }
    const shards = new Set(records.filter((r) => r.lsn > BigInt(SYNCED)).map((r) => r.shard));
    expect(shards.size, 'both shards hold records that prove LSN 1..SYNCED durable').toBe(2);
    return { dir, records, ops };
  } finally {
    await l.close();
  }
}

describe.each(engines)('%s engine: the log rules', (engine) => {
  const built = new Map<Fixture, Promise<Built>>();
  const fixture = (f: Fixture) => {
    if (!built.has(f)) built.set(f, build(engine, f));
    return built.get(f)!;
  };

  it.each(CASES)('$name', async (c) => {
    const b = await fixture(c.fixture);
    const log = new Log(b);
    const dir = snapshot(b.dir);
    c.damage(dir, log);
    const legsBefore = b.records.filter((r) => r.lsn < BigInt(c.cut)).length;
    const dropped = c.dropped(log);
    const expectRecovered = async (l: Ledger, what: string) => {
      expect(l.stats().lsn, `${what}: LSN`).toBe(BigInt(c.cut - 1));
      expect(l.recovery.mode, what).toBe('replay');
      expect(l.recovery.walRecordsReplayed, `${what}: records replayed`).toBe(legsBefore);
      expect(l.recovery.walBytesDropped, `${what}: bytes dropped`).toBe(dropped);
      expect(balances(l), `${what}: balances`).toEqual(model(b.ops, c.cut));
      await l.close();
      // (whether that open is clean: recovery.test.ts, "damage a recovery cut is reported once")
      const again = await Ledger.open(dir, { engine });
      expect(again.stats().lsn, `${what}, then reopened: LSN`).toBe(BigInt(c.cut - 1));
      expect(balances(again), `${what}, then reopened: balances`).toEqual(model(b.ops, c.cut));
      await again.close();
    };

    if ('open' in c.outcome) {
      await expectRecovered(await Ledger.open(dir, { engine }), 'open');
      return;
    }
    const before = dirDigest(dir);
    let error: { code?: string; message?: string } | undefined;
    try {
      const l = await Ledger.open(dir, { engine });
      await l.close();
    } catch (e) {
      error = e as typeof error;
    }
    expect(error?.code, `opened: ${String(error?.message)}`).toBe('CORRUPTION');
    const message = String(error!.message);
    if ('damaged' in c.outcome) {
      const r = log.at(...c.outcome.damaged);
      expect(firstPlace(message), message).toEqual([r.file, r.offset]);
    } else {
      // No file stopped at damage: the message names the missing LSN and a record that proves it durable.
      expect(message).toMatch(new RegExp(`LSN ${c.cut}\\b`));
      const place = firstPlace(message);
      expect(place, message).toBeDefined();
      const proof = b.records.find((r) => r.file === place![0] && r.offset === place![1]);
      expect(proof, `${message}: names an intact record`).toBeDefined();
      expect(proof!.durableLsn >= BigInt(c.cut), `${message}: the record named proves LSN ${c.cut} durable`).toBe(true);
    }
    expect(dirDigest(dir), 'a failed open changes no byte').toEqual(before);
    await expectRecovered(await Ledger.open(dir, { engine, repair: true }), 'repair: true');
  });
});
