#!/usr/bin/env node
/**
 * geoledger: the operator's tool for a ledger directory (docs/operations.md).
 *
 *   geoledger info <dir>              what is on disk: shape, checkpoint, accounts, log, marker, lock holder
 *   geoledger verify <dir>            every checksum and count, read-only (exit 0 clean, 1 damage, 2 cannot run)
 *   geoledger get <dir> <pubkey>      one account (opens the ledger)
 *   geoledger checkpoint <dir>        open (recovering if needed), checkpoint, close cleanly
 *   geoledger backup <dir> <dest>     a consistent copy (Ledger.backup)
 *   geoledger repair <dir> --yes      open with repair: true, print what was dropped
 *   geoledger bench [--quick]         a small built-in benchmark (--suite: bench/run.mjs of a checkout)
 *
 * Every command takes --json (one JSON document on stdout; 64-bit numbers as decimal strings, keys in base58).
 * Exit codes: 0 done; 1 the command ran and found a problem (damage, account not found, CORRUPTION or IO_ERROR);
 * 2 it could not run (usage, no such directory, no ledger there, locked by a live process). It never prompts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { Command, CommanderError, Option } from 'commander';
import type { Ledger, LedgerOptions } from './ledger';
import { LedgerError } from './errors';
import {
  ACCOUNT_SIZE, INDEX_HEADER_CRC_LEN, INDEX_HEADER_SIZE, Index, MANIFEST_FILE, crc32c, readManifest, readMarker,
  shardFile, walFile, type Manifest,
} from './format';
import { keyBytes, toBase58 } from './pubkey';
import { lockHolder } from './js/lock';
import type { VerifyReport } from './verify';

// Loaded by the commands that need them: every command starts a process, and info needs neither.
function ledgerClass(): typeof Ledger {
  require('./js/register'); // the engine: 'js' option
  return (require('./ledger') as typeof import('./ledger')).Ledger;
}
const verifyModule = (): typeof import('./verify') => require('./verify');

/** Exit codes (the header comment says when). */
const EXIT_OK = 0;
const EXIT_PROBLEM = 1;
const EXIT_CANNOT_RUN = 2;

/** A failure that ends the command with `exitCode`. */
class Exit extends Error {
  constructor(readonly exitCode: number, message: string, readonly code = 'USAGE') {
    super(message);
  }
}

interface Common {
  json?: boolean;
}
interface Opening extends Common {
  engine: 'native' | 'js';
}

/** JSON with bigints as decimal strings and byte arrays (keys) in base58. */
function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString()
    : x instanceof Uint8Array ? toBase58(x) : x), 2);
}

function out(opts: Common, json: unknown, text: string): void {
  process.stdout.write(opts.json ? `${toJson(json)}\n` : `${text}\n`);
}

const n = (x: number | bigint): string => x.toLocaleString('en-US');
function bytes(x: number): string {
  if (x < 1024) return `${x} B`;
  if (x < 1024 ** 2) return `${(x / 1024).toFixed(1)} KiB`;
  if (x < 1024 ** 3) return `${(x / 1024 ** 2).toFixed(1)} MiB`;
  return `${(x / 1024 ** 3).toFixed(2)} GiB`;
}

/** A progress bar on stderr, only for a person at a terminal (never with --json). */
function progressBar(opts: Common, label: string): { update(done: number, total: number): void; stop(): void } {
  if (opts.json || !process.stderr.isTTY) return { update() {}, stop() {} };
  const { SingleBar, Presets } = require('cli-progress') as typeof import('cli-progress');
  const bar = new SingleBar({ format: `${label} [{bar}] {percentage}% | ETA {eta_formatted}`, stream: process.stderr,
    hideCursor: true, clearOnComplete: true }, Presets.shades_classic);
  let started = false;
  return {
    update(done, total) {
      if (!started) {
        bar.start(total, done);
        started = true;
      } else {
        bar.setTotal(total);
        bar.update(done);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/** `dir` must be a directory that holds a ledger: never create one by accident. */
function requireLedger(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new Exit(EXIT_CANNOT_RUN, `no such directory: ${dir}`, 'NOT_FOUND');
  }
  if (!st.isDirectory()) throw new Exit(EXIT_CANNOT_RUN, `not a directory: ${dir}`, 'NOT_FOUND');
  if (!fs.existsSync(path.join(dir, MANIFEST_FILE)) && !fs.existsSync(path.join(dir, shardFile('shard', 0, 'bin')))) {
    throw new Exit(EXIT_CANNOT_RUN, `${dir} holds no ledger (no ${MANIFEST_FILE})`, 'NOT_FOUND');
  }
}

async function openLedger(dir: string, opts: Opening, extra: LedgerOptions = {}): Promise<Ledger> {
  requireLedger(dir);
  // No checkpoint by timer: a command is short and closes (checkpoint + marker) when done.
  return ledgerClass().open(dir, { engine: opts.engine, checkpointIntervalMs: 0, ...extra });
}

// ------------------------------------------------------------------ info

interface ShardInfo {
  shard: number;
  /** Accounts at the checkpoint, from the index header; null when the index is not the checkpoint's. */
  accounts: number | null;
  capacity: number;
  loadFactor: number | null;
  /** Bytes of both log files on disk. */
  logFileBytes: number;
}

export interface Info {
  dir: string;
  manifest: Manifest;
  accountsAtCheckpoint: number | null;
  capacity: number;
  shards: ShardInfo[];
  log: { files: number; fileBytes: number };
  cleanShutdown: { present: boolean; matchesCheckpoint: boolean };
  lock: { held: boolean; pid: number | null };
  files: number;
  diskBytes: number;
}

/** The index header's account count when the header is intact and names the manifest's checkpoint. */
function indexCount(dir: string, shard: number, m: Manifest): number | null {
  let fd: number;
  try {
    fd = fs.openSync(path.join(dir, shardFile('index', shard, 'bin')), 'r');
  } catch {
    return null;
  }
  try {
    const h = Buffer.alloc(INDEX_HEADER_SIZE);
    if (fs.readSync(fd, h, 0, INDEX_HEADER_SIZE, 0) !== INDEX_HEADER_SIZE) return null;
    const ok = h.readUInt32LE(Index.CRC) === crc32c(h, 0, INDEX_HEADER_CRC_LEN) && h.readUInt32LE(Index.SHARD) === shard &&
      h.readBigUInt64LE(Index.EPOCH) === m.epoch && h.readBigUInt64LE(Index.CHECKPOINT_LSN) === m.checkpointLsn;
    return ok ? h.readUInt32LE(Index.COUNT) : null;
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads only headers and sizes: O(shards), safe on a live ledger (its numbers are those of the last checkpoint). */
export function ledgerInfo(dir: string): Info {
  requireLedger(dir);
  const m = readManifest(dir)!;
  const size = (f: string): number => {
    try {
      return fs.statSync(path.join(dir, f)).size;
    } catch {
      return 0;
    }
  };
  const shards: ShardInfo[] = [];
  let logBytes = 0;
  for (let s = 0; s < m.shards; s++) {
    const accounts = indexCount(dir, s, m);
    const logFileBytes = size(walFile(s, 0)) + size(walFile(s, 1));
    logBytes += logFileBytes;
    // Shards grow (issue 8): a shard's capacity is its account file's size; the manifest has the initial one.
    const capacity = Math.max(m.accountsPerShard, Math.floor(size(shardFile('shard', s, 'bin')) / ACCOUNT_SIZE));
    shards.push({ shard: s, accounts, capacity, loadFactor: accounts === null ? null : accounts / capacity, logFileBytes });
  }
  const marker = readMarker(dir);
  const holder = lockHolder(dir);
  const names = fs.readdirSync(dir);
  return {
    dir,
    manifest: m,
    accountsAtCheckpoint: shards.every((s) => s.accounts !== null) ? shards.reduce((a, s) => a + s.accounts!, 0) : null,
    capacity: shards.reduce((a, s) => a + s.capacity, 0),
    shards,
    log: { files: m.shards * 2, fileBytes: logBytes },
    cleanShutdown: {
      present: marker !== undefined,
      matchesCheckpoint: marker !== undefined && marker.epoch === m.epoch && marker.checkpointLsn === m.checkpointLsn,
    },
    lock: { held: holder !== 0, pid: holder > 0 ? holder : null },
    files: names.length,
    diskBytes: names.reduce((a, f) => a + size(f), 0),
  };
}

function infoText(i: Info): string {
  const m = i.manifest;
  const supply = m.supply;
  const load = i.accountsAtCheckpoint === null ? '' : ` (load ${((i.accountsAtCheckpoint / i.capacity) * 100).toFixed(1)}%)`;
  const lines = [
    `ledger         ${i.dir}`,
    `shape          ${m.shards} shards, created for ${n(m.accountsPerShard)} accounts each; capacity now ${n(i.capacity)}; ` +
      `index ${n(m.indexCapacity)} entries per shard at creation (doubles as a shard grows); seed ${m.seed}`,
    `checkpoint     epoch ${m.epoch}, LSN ${n(m.checkpointLsn)}`,
    `accounts       ${i.accountsAtCheckpoint === null ? 'unknown (an index is not the checkpoint\'s: the next open rebuilds it)'
      : n(i.accountsAtCheckpoint)}${load} at the checkpoint`,
    `supply         ${n(supply)}`,
    `log            ${bytes(i.log.fileBytes)} on disk in ${i.log.files} files (headers, records since the checkpoint, ` +
      'space allocated ahead)',
    `clean marker   ${!i.cleanShutdown.present ? 'absent (the ledger is open, or did not close cleanly)'
      : i.cleanShutdown.matchesCheckpoint ? 'present, names this checkpoint' : 'present but stale (names another checkpoint)'}`,
    `lock           ${!i.lock.held ? 'free' : i.lock.pid !== null ? `held by process ${i.lock.pid}` : 'held by a live ledger'}`,
    `files          ${i.files}, ${bytes(i.diskBytes)} (apparent size)`,
    '',
    'shard  accounts   capacity    load   log files',
    ...i.shards.map((s) => `${String(s.shard).padStart(5)}  ${(s.accounts === null ? '?' : n(s.accounts)).padStart(8)}  ` +
      `${n(s.capacity).padStart(9)}  ${(s.loadFactor === null ? '?' : `${(s.loadFactor * 100).toFixed(1)}%`).padStart(6)}  ` +
      `${bytes(s.logFileBytes).padStart(10)}`),
  ];
  return lines.join('\n');
}

// ------------------------------------------------------------------ verify

function verifyText(r: VerifyReport): string {
  const lines: string[] = [];
  lines.push(`verified       ${r.dir}: ${n(r.checked.files)} files, ${bytes(r.checked.bytes)} in ${r.ms.toFixed(0)} ms`);
  lines.push(`accounts       ${n(r.accounts)} records checked (checksum, version, slot); the valid ones' balances sum to ${n(r.balanceSum)}`);
  lines.push(`index          ${n(r.checked.indexPages)} entry pages checked against their CRC table`);
  lines.push(`log            ${n(r.log.records)} records after the checkpoint (${n(r.log.replayable)} to replay), ` +
    `${n(r.log.droppedBytes)} bytes the next open would drop`);
  lines.push(`counts         ${r.counts.checked ? 'per shard, index count against accounts in the shard file and index entries' : `not checked: ${r.counts.reason}`}`);
  lines.push(`supply         ${r.supply.checked ? `sum of balances against the manifest's supply ${n(r.supply.expected!)}` : `not checked: ${r.supply.reason}`}`);
  for (const note of r.notes) lines.push(`note           ${note}`);
  if (r.ok) {
    lines.push('result         clean');
  } else {
    lines.push(`result         ${r.findings.length} finding${r.findings.length > 1 ? 's' : ''}: DAMAGE`);
    for (const f of r.findings) lines.push(`  ${f.file} @ ${f.offset}: ${f.what}`);
  }
  return lines.join('\n');
}

// ------------------------------------------------------------------ bench

interface BenchRow {
  what: string;
  ops: number;
  ms: number;
  opsPerSecond: number;
}

/** The built-in run: one ledger on a temporary directory, batches of 1,000 and one-by-one calls, WAL on. */
async function builtinBench(engine: 'native' | 'js', accounts: number): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'geoledger-bench-'));
  const rows: BenchRow[] = [];
  const time = async (what: string, ops: number, f: () => unknown): Promise<void> => {
    const t = performance.now();
    await f();
    const ms = performance.now() - t;
    rows.push({ what, ops, ms, opsPerSecond: Math.round((ops / ms) * 1000) });
  };
  try {
    const ledger = await ledgerClass().open(dir, { engine, shards: 4, accountsPerShard: Math.ceil(accounts / 2), checkpointIntervalMs: 0 });
    try {
      const BATCH = 1000;
      const keys = Buffer.alloc(32 * accounts);
      for (let i = 0; i < accounts; i++) {
        keys.writeUInt32LE(i + 1, i * 32); // distinct keys, spread by the ledger's hash
        keys.writeUInt32LE((0x9e3779b9 ^ i) >>> 0, i * 32 + 4);
      }
      const mints = Buffer.alloc(40 * accounts);
      for (let i = 0; i < accounts; i++) {
        keys.copy(mints, i * 40, i * 32, i * 32 + 32);
        mints.writeBigUInt64LE(1_000_000n, i * 40 + 32);
      }
      const transfers = Buffer.alloc(72 * accounts);
      for (let i = 0; i < accounts; i++) {
        const to = (i * 7919 + 1) % accounts;
        keys.copy(transfers, i * 72, i * 32, i * 32 + 32);
        keys.copy(transfers, i * 72 + 32, to * 32, to * 32 + 32);
        transfers.writeBigUInt64LE(1n, i * 72 + 64);
      }
      await time(`mintBatch (${n(BATCH)} per call)`, accounts, () => {
        for (let o = 0; o < accounts; o += BATCH) ledger.mintBatch(mints.subarray(o * 40, Math.min(o + BATCH, accounts) * 40));
      });
      await time(`transferBatch (${n(BATCH)} per call)`, accounts, () => {
        for (let o = 0; o < accounts; o += BATCH) ledger.transferBatch(transfers.subarray(o * 72, Math.min(o + BATCH, accounts) * 72));
      });
      const out = new Uint8Array(BATCH * 128);
      await time(`getBatch (${n(BATCH)} per call)`, accounts, () => {
        for (let o = 0; o + BATCH <= accounts; o += BATCH) ledger.getBatch(keys.subarray(o * 32, (o + BATCH) * 32), out);
      });
      const one = Math.min(accounts, 100_000);
      await time('transfer, one by one', one, () => {
        for (let i = 0; i < one; i++) ledger.transfer(keys.subarray(i * 32, i * 32 + 32), keys.subarray(((i + 1) % accounts) * 32, ((i + 1) % accounts) * 32 + 32), 1n);
      });
      await time('balance, one by one', one, () => {
        for (let i = 0; i < one; i++) ledger.balance(keys.subarray(i * 32, i * 32 + 32));
      });
      await time('sync()', 1, () => ledger.sync());
    } finally {
      await ledger.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

// ------------------------------------------------------------------ the program

function program(): Command {
  const prog = new Command('geoledger');
  prog
    .description('Look into, check and operate a geometric-ledger directory (docs/operations.md).')
    .exitOverride()
    .showHelpAfterError()
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s) });
  const json = (): Option => new Option('--json', 'print one JSON document on stdout');
  const engine = (): Option => new Option('--engine <engine>', 'the engine that opens the ledger').choices(['native', 'js'])
    .default('native');

  prog.command('info').argument('<dir>', 'ledger directory')
    .description('what is on disk: shape, checkpoint, accounts and load per shard, log size, clean marker, lock holder')
    .addOption(json())
    .action((dir: string, opts: Common) => {
      const i = ledgerInfo(dir);
      out(opts, i, infoText(i));
    });

  prog.command('verify').argument('<dir>', 'ledger directory')
    .description('check every account, index page and log record and the account counts; read-only. ' +
      'Exit 0 clean, 1 damage found, 2 cannot run')
    .addOption(json())
    .action(async (dir: string, opts: Common) => {
      requireLedger(dir);
      const bar = progressBar(opts, 'verify');
      let r: VerifyReport;
      try {
        r = await verifyModule().verifyLedger(dir, { onProgress: (p) => bar.update(p.done, p.total) });
      } finally {
        bar.stop();
      }
      out(opts, r, verifyText(r));
      process.exitCode = r.ok ? EXIT_OK : EXIT_PROBLEM;
    });

  prog.command('get').argument('<dir>', 'ledger directory').argument('<pubkey>', 'the account key, base58')
    .description('one account (opens the ledger, recovering it if needed). Exit 1 when the account does not exist')
    .addOption(json()).addOption(engine())
    .action(async (dir: string, pubkey: string, opts: Opening) => {
      const key = keyBytes(pubkey); // INVALID_PUBKEY before anything is opened
      const ledger = await openLedger(dir, opts);
      try {
        const a = ledger.get(key);
        if (!a) {
          out(opts, { pubkey: key, found: false }, `${pubkey}: no such account`);
          process.exitCode = EXIT_PROBLEM;
          return;
        }
        out(opts, { found: true, ...a }, [
          `pubkey       ${toBase58(a.pubkey)}`,
          `balance      ${n(a.balance)}`,
          `lsn          ${a.lsn} (last change), created at ${a.createdLsn}`,
          `slot         ${a.slot}`,
        ].join('\n'));
      } finally {
        await ledger.close();
      }
    });

  prog.command('checkpoint').argument('<dir>', 'ledger directory')
    .description('open (recovering if needed), checkpoint, close cleanly: afterwards the log is empty and verify checks counts')
    .addOption(json()).addOption(engine())
    .action(async (dir: string, opts: Opening) => {
      const t = performance.now();
      const ledger = await openLedger(dir, opts);
      const recovery = ledger.recovery;
      try {
        await ledger.checkpoint();
      } finally {
        await ledger.close();
      }
      const m = readManifest(dir)!;
      const r = { recovery, epoch: m.epoch, checkpointLsn: m.checkpointLsn, ms: performance.now() - t };
      out(opts, r, [
        `opened        ${recovery.mode} (${recovery.reason}; ${n(recovery.walRecordsReplayed)} log records replayed, ` +
          `${n(recovery.walBytesDropped)} bytes dropped)`,
        `checkpoint    epoch ${m.epoch}, LSN ${n(m.checkpointLsn)}, closed cleanly in ${r.ms.toFixed(0)} ms`,
      ].join('\n'));
    });

  prog.command('backup').argument('<dir>', 'ledger directory').argument('<dest>', 'where the copy goes (must not hold a ledger)')
    .description('a consistent copy of the ledger at one LSN (Ledger.backup); restore by opening the copy')
    .addOption(json()).addOption(engine())
    .action(async (dir: string, dest: string, opts: Opening) => {
      const ledger = await openLedger(dir, opts);
      try {
        const bar = progressBar(opts, 'backup');
        let b: { lsn: bigint; bytes: number; ms: number };
        try {
          b = await ledger.backup(dest, { onProgress: (p) => bar.update(p.bytes, p.total) });
        } finally {
          bar.stop();
        }
        out(opts, { dest, ...b }, `backup        ${dest}: state at LSN ${n(b.lsn)}, ${bytes(b.bytes)} in ${b.ms.toFixed(0)} ms`);
      } finally {
        await ledger.close();
      }
    });

  prog.command('repair').argument('<dir>', 'ledger directory')
    .description('open with repair: true: keep the valid prefix of a damaged log, drop the rest and say what was dropped. ' +
      'May lose acknowledged operations: needs --yes')
    .addOption(new Option('--yes', 'really repair (this tool never prompts)'))
    .addOption(json()).addOption(engine())
    .action(async (dir: string, opts: Opening & { yes?: boolean }) => {
      if (!opts.yes) {
        throw new Exit(EXIT_CANNOT_RUN, 'repair keeps the valid prefix of a damaged log and drops the rest, which may ' +
          'include acknowledged operations: run `geoledger verify` first, take a copy, then repeat with --yes');
      }
      const ledger = await openLedger(dir, opts, { repair: true });
      const r = ledger.recovery;
      await ledger.close();
      out(opts, { recovery: r }, [
        `opened        ${r.mode}: ${r.reason}`,
        `replayed      ${n(r.walRecordsReplayed)} log records`,
        `dropped       ${n(r.walBytesDropped)} log bytes${r.walBytesDropped > 0 ? ' (torn tails and everything after the damage)' : ''}`,
        `rebuilt       ${r.shardsRebuilt} shard index${r.shardsRebuilt === 1 ? '' : 'es'}`,
      ].join('\n'));
    });

  prog.command('bench')
    .description('a small built-in benchmark on a temporary directory (WAL on); --suite runs bench/run.mjs of a ' +
      'source checkout instead')
    .addOption(new Option('--quick', 'a short run: 20,000 accounts (default 200,000); with --suite, the suite\'s quick mode'))
    .addOption(new Option('--suite', 'run the benchmark suite bench/run.mjs (a source checkout only; prints, writes no file)'))
    .addOption(json()).addOption(engine())
    .action(async (opts: Opening & { quick?: boolean; suite?: boolean }) => {
      if (opts.suite) {
        const script = path.join(__dirname, '..', 'bench', 'run.mjs');
        if (!fs.existsSync(script)) {
          throw new Exit(EXIT_CANNOT_RUN, 'the benchmark suite (bench/run.mjs) is only in a source checkout', 'NOT_FOUND');
        }
        const args = [script, ...(opts.quick ? ['--quick'] : []), '--no-write'];
        // With --json the suite's report goes to stderr: stdout holds the one JSON document.
        const r = spawnSync(process.execPath, args, { stdio: ['ignore', opts.json ? 2 : 'inherit', 'inherit'] });
        if (opts.json) out(opts, { runner: 'bench/run.mjs', args: args.slice(1), exitCode: r.status }, '');
        process.exitCode = r.status === 0 ? EXIT_OK : EXIT_PROBLEM;
        return;
      }
      const accounts = opts.quick ? 20_000 : 200_000;
      const rows = await builtinBench(opts.engine, accounts);
      const machine = `${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), Node ${process.version}`;
      out(opts, { runner: 'built-in', engine: opts.engine, accounts, machine, rows }, [
        `built-in run: ${opts.engine} engine, ${n(accounts)} accounts, 4 shards, WAL on; ${machine}`,
        '(one run, no warm-up or trials: for comparable numbers use the suite, `npm run bench`)',
        ...rows.map((r) => `${r.what.padEnd(32)} ${r.what === 'sync()' ? `${r.ms.toFixed(1)} ms` : `${n(r.opsPerSecond)} ops/s`}`),
      ].join('\n'));
    });

  return prog;
}

/** Runs the CLI on `argv` (the user's arguments only); resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  const prog = program();
  const json = argv.includes('--json');
  try {
    await prog.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT_OK : EXIT_CANNOT_RUN; // usage printed already
    let exitCode = EXIT_PROBLEM;
    let code = 'ERROR';
    if (e instanceof Exit) {
      exitCode = e.exitCode;
      code = e.code;
    } else if (e instanceof LedgerError) {
      code = e.code;
      // Cannot run: a live holder, or arguments the ledger refused. Damage and I/O failures are problems found.
      if (code === 'LOCKED' || code === 'INVALID_OPTIONS' || code === 'INVALID_PUBKEY') exitCode = EXIT_CANNOT_RUN;
    }
    const message = e instanceof Error ? e.message : String(e);
    if (json) process.stdout.write(`${toJson({ error: { code, message } })}\n`);
    else process.stderr.write(`geoledger: ${message}\n`);
    return exitCode;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, (e) => {
    process.stderr.write(`geoledger: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = EXIT_PROBLEM;
  });
}
