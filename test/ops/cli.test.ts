// The geoledger CLI (dist/cli.js), run as a child process: exit codes, JSON and text on healthy, damaged and
// locked ledgers. verifyLedger's own cases are in verify.test.ts; here, what the command line makes of them.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ACCOUNT_SIZE, Account, Wal, indexEntriesOffset, readManifest } from '../../dist/format.js';
import { toBase58 } from '../../dist/index.js';
import {
  DIST, dirDigest, engines, flipBit, key, Ledger, logRecords, MANUAL_SYNC, open, snapshot, tmpDir,
} from '../core/helpers';
import { N, SHAPE, closedLedger, crashedLedger, slotOf, removedAfterEach } from './ledgers';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  json: any;
}

function geoledger(...args: string[]): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
  let json: unknown;
  if (args.includes('--json')) {
    try {
      json = JSON.parse(r.stdout);
    } catch {
      json = undefined;
    }
  }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json };
}



describe('geoledger: usage', () => {
  it('an unknown command, a missing argument, a bad option or a bad key is exit 2 with usage', () => {
    const unknown = geoledger('frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/unknown command 'frobnicate'/);
    expect(unknown.stderr).toMatch(/Usage: geoledger/);
    const missing = geoledger('verify');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/missing required argument 'dir'/);
    expect(geoledger('get', 'x', 'y', '--engine', 'rust').code).toBe(2);
    const bad = geoledger('get', 'any-dir', 'not-base58!'); // the key is refused before the directory is looked at
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/base58/);
    expect(geoledger().code).toBe(2);
    const help = geoledger('--help');
    expect(help.code).toBe(0);
    for (const c of ['info', 'verify', 'get', 'checkpoint', 'backup', 'repair', 'bench']) expect(help.stdout).toContain(c);
  });

  it('a missing directory, or one without a ledger, is exit 2 and nothing is created', () => {
    const dir = tmpDir('gl-cli');
    const missing = geoledger('verify', path.join(dir, 'nope'), '--json');
    expect(missing.code).toBe(2);
    expect(missing.json.error.message).toMatch(/no such directory/);
    for (const cmd of ['info', 'checkpoint']) {
      const empty = geoledger(cmd, dir, '--json');
      expect(empty.code, cmd).toBe(2);
      expect(empty.json.error.message, cmd).toMatch(/holds no ledger/);
    }
    expect(fs.readdirSync(dir)).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('bench --quick runs the built-in benchmark and says so', () => {
    const r = geoledger('bench', '--quick', '--json');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json).toMatchObject({ runner: 'built-in', engine: 'native', accounts: 20_000 });
    expect(r.json.rows.map((x: { what: string }) => x.what)).toEqual([
      'mintBatch (1,000 per call)', 'transferBatch (1,000 per call)', 'getBatch (1,000 per call)',
      'transfer, one by one', 'balance, one by one', 'sync()',
    ]);
    for (const row of r.json.rows) expect(row.opsPerSecond, row.what).toBeGreaterThan(0);
  });
});

// info and verify read the files only: the engine that wrote them does not matter (verify.test.ts runs both).
describe('geoledger info and verify', () => {
  const made = removedAfterEach();

  it('info: manifest, shape, accounts and load per shard, log size, clean marker, lock; verify: exit 0, no byte changed', async () => {
    const dir = await made(closedLedger('native'));
    const m = readManifest(dir)!;
    const before = dirDigest(dir, true);
    const r = geoledger('info', dir, '--json');
    expect(r.code, r.stderr).toBe(0);
    const i = r.json;
    expect(i.manifest).toMatchObject({ shards: 2, accountsPerShard: 1000, indexCapacity: m.indexCapacity, seed: m.seed,
      epoch: String(m.epoch), checkpointLsn: String(m.checkpointLsn) });
    expect(i.accountsAtCheckpoint).toBe(N);
    expect(i.capacity).toBe(2000);
    expect(i.shards).toHaveLength(2);
    expect(i.shards[0].accounts + i.shards[1].accounts).toBe(N);
    expect(i.shards[0].loadFactor).toBeCloseTo(i.shards[0].accounts / 1000);
    expect(i.log.fileBytes).toBe(['0', '1'].reduce((a, g) =>
      a + fs.statSync(path.join(dir, `shard_000.${g}.wal`)).size + fs.statSync(path.join(dir, `shard_001.${g}.wal`)).size, 0));
    expect(i.cleanShutdown).toEqual({ present: true, matchesCheckpoint: true });
    expect(i.lock).toEqual({ held: false, pid: null });
    const text = geoledger('info', dir);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/accounts +300 \(load 15\.0%\) at the checkpoint/);
    expect(text.stdout).toMatch(/clean marker +present, names this checkpoint/);
    expect(text.stdout).toMatch(/lock +free/);

    const v = geoledger('verify', dir, '--json');
    expect(v.code, v.stderr).toBe(0);
    expect(v.json).toMatchObject({ ok: true, atCheckpoint: true, accounts: N, balanceSum: String((N * (N + 1)) / 2), findings: [] });
    const vt = geoledger('verify', dir);
    expect(vt.code).toBe(0);
    expect(vt.stdout).toMatch(/result +clean/);
    expect(vt.stderr).toBe(''); // no progress bar without a terminal
    expect(dirDigest(dir, true)).toEqual(before);
  });

  it.skipIf(spawnSync('script', ['--version']).status !== 0)('verify shows a progress bar on a terminal (script(1) gives it one)', async () => {
    const dir = await made(closedLedger('native'));
    const r = spawnSync('script', ['-qec', `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} verify ${JSON.stringify(dir)}`,
      '/dev/null'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stdout).toBe(0);
    expect(r.stdout).toMatch(/verify \[[^\]]*\] \d+% \| ETA/);
    expect(r.stdout).toMatch(/result +clean/);
  });

  it('verify: exit 1 with file and offset for a flipped bit in an account, in an index page, in a synced log record', async () => {
    const cases: [string, (dir: string) => { file: string; offset: number }][] = [
      ['account', (dir) => {
        const { file, slot } = slotOf(dir, 3);
        flipBit(file, slot * ACCOUNT_SIZE + Account.LAMPORTS);
        return { file: path.basename(file), offset: slot * ACCOUNT_SIZE };
      }],
      ['index page', (dir) => {
        const at = indexEntriesOffset(readManifest(dir)!.indexCapacity / 512);
        flipBit(path.join(dir, 'index_000.bin'), at + 8);
        return { file: 'index_000.bin', offset: at };
      }],
      ['synced log record', (dir) => {
        const rec = logRecords(dir).find((x) => x.lsn === 2n)!;
        flipBit(path.join(dir, rec.file), rec.offset + Wal.LSN);
        return { file: rec.file, offset: rec.offset };
      }],
    ];
    for (const [what, damage] of cases) {
      const dir = await made(what === 'synced log record' ? crashedLedger('native') : closedLedger('native'));
      const where = damage(dir);
      const before = dirDigest(dir, true);
      const r = geoledger('verify', dir, '--json');
      expect(r.code, `${what}: ${r.stderr}`).toBe(1);
      expect(r.json.ok, what).toBe(false);
      expect(r.json.findings, what).toEqual([expect.objectContaining(where)]);
      if (what === 'synced log record') {
        const text = geoledger('verify', dir);
        expect(text.code, what).toBe(1);
        expect(text.stdout, what).toContain(`${where.file} @ ${where.offset}: `);
      }
      expect(dirDigest(dir, true), what).toEqual(before);
    }
  });
});

// The commands that open the ledger, and the lock (a native holder flocks LOCK; a JS one writes its pid there).
describe.each(engines)('%s engine: geoledger', (engine) => {
  const made = removedAfterEach();

  it('a ledger held by a live process: verify exits 2 (LOCKED) changing nothing, info names the holder', async () => {
    const dir = await made(closedLedger(engine));
    const child = spawn(process.execPath, ['-e', `
      require(${JSON.stringify(DIST)}).Ledger.open(${JSON.stringify(dir)}, { engine: '${engine}' })
        .then((l) => { globalThis.held = l; console.log('open'); setInterval(() => {}, 1000); });`], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d) => String(d).includes('open') && resolve());
        child.on('exit', (code) => reject(new Error(`the child could not open the ledger (exit ${code})`)));
      });
      const before = dirDigest(dir, true);
      const v = geoledger('verify', dir, '--json');
      expect(v.code).toBe(2);
      expect(v.json.error).toMatchObject({ code: 'LOCKED', message: expect.stringContaining(`process ${child.pid}`) });
      expect(dirDigest(dir, true)).toEqual(before);
      const i = geoledger('info', dir, '--json');
      expect(i.code).toBe(0);
      expect(i.json.lock).toEqual({ held: true, pid: child.pid });
      expect(i.json.cleanShutdown.present).toBe(false);
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.on('exit', r));
    }
  });

  it('get: an account as JSON (exit 0), a missing one (exit 1)', async () => {
    const dir = await made(closedLedger(engine));
    const r = geoledger('get', dir, toBase58(key(41)), '--json', '--engine', engine);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ found: true, pubkey: toBase58(key(41)), balance: '42' });
    const missing = geoledger('get', dir, toBase58(key(N + 1)), '--json', '--engine', engine);
    expect(missing.code).toBe(1);
    expect(missing.json).toEqual({ pubkey: toBase58(key(N + 1)), found: false });
  });

  it('checkpoint: replays a crashed ledger and closes it clean; verify then checks the counts', async () => {
    const dir = await made(crashedLedger(engine));
    const r = geoledger('checkpoint', dir, '--json', '--engine', engine);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json.recovery).toMatchObject({ mode: 'replay', walRecordsReplayed: N });
    expect(r.json.checkpointLsn).toBe(String(N));
    const v = geoledger('verify', dir, '--json');
    expect(v.code).toBe(0);
    expect(v.json).toMatchObject({ atCheckpoint: true, accounts: N, counts: { checked: true } });
    const l = await Ledger.open(dir, { engine });
    expect(l.recovery.mode).toBe('clean');
    expect(l.balance(key(N - 1))).toBe(BigInt(N));
    await l.close();
  });

  it('repair: refuses without --yes (exit 2, nothing changed); with it, opens the valid prefix and says what was dropped', async () => {
    const dir = await made(crashedLedger(engine));
    const rec = logRecords(dir).find((x) => x.lsn === 5n)!;
    flipBit(path.join(dir, rec.file), rec.offset + Wal.AMOUNT);
    const before = dirDigest(dir);
    const no = geoledger('repair', dir, '--engine', engine);
    expect(no.code).toBe(2);
    expect(no.stderr).toMatch(/--yes/);
    expect(dirDigest(dir)).toEqual(before);
    const damaged = geoledger('checkpoint', dir, '--json', '--engine', engine);
    expect(damaged.code).toBe(1);
    expect(damaged.json.error.code).toBe('CORRUPTION');
    expect(dirDigest(dir)).toEqual(before);
    const r = geoledger('repair', dir, '--yes', '--json', '--engine', engine);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json.recovery.walBytesDropped).toBeGreaterThan(0);
    expect(r.json.recovery.reason).toMatch(/repair dropped/);
    expect(geoledger('verify', dir).code).toBe(0);
  });

  it(
    'backup: a copy that verifies clean and opens clean with the same balances', async () => {
      const dir = await made(closedLedger(engine));
      const dest = path.join(await made(Promise.resolve(tmpDir('gl-cli'))), 'copy');
      const r = geoledger('backup', dir, dest, '--json', '--engine', engine);
      expect(r.code, r.stderr).toBe(0);
      expect(r.json.lsn).toBe(String(N));
      expect(geoledger('verify', dest).code).toBe(0);
      const l = await Ledger.open(dest, { engine });
      expect(l.recovery.mode).toBe('clean');
      for (let i = 0; i < N; i += 37) expect(l.balance(key(i))).toBe(BigInt(i + 1));
      await l.close();
    });
});
