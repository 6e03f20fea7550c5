/**
 * `npm run demo`: the ledger's main job on a temporary directory. Mints and
 * moves money in batches and one by one, prints throughput, then runs a child
 * process that is killed with SIGKILL mid-stream and shows the recovery: every
 * acknowledged operation back, balances still summing to what was minted.
 * Ends with `geoledger info` on the directory.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Registry } from 'prom-client';
import { Ledger, registerMetrics } from './index';

const ACCOUNTS = 200_000;
const MINT = 1_000_000n;

function keysFor(n: number, seed: number): Buffer {
  // Deterministic keys so the crashed child and the parent agree on them.
  const b = Buffer.alloc(32 * n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < b.length; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, i);
  }
  return b;
}

function rate(n: number, ms: number): string {
  const r = (n / ms) * 1000;
  return r >= 1e6 ? `${(r / 1e6).toFixed(2)}M ops/s` : `${(r / 1e3).toFixed(0)}k ops/s`;
}

async function child(dir: string): Promise<void> {
  const keys = keysFor(ACCOUNTS, 7);
  const ledger = await Ledger.open(dir);
  let acked = 0;
  for (let round = 0; ; round++) {
    const ops = Buffer.alloc(72 * 1000);
    for (let i = 0; i < 1000; i++) {
      const a = (round * 1000 + i) % ACCOUNTS;
      const b = (a * 7 + 13) % ACCOUNTS;
      keys.copy(ops, i * 72, a * 32, a * 32 + 32);
      keys.copy(ops, i * 72 + 32, b * 32, b * 32 + 32);
      ops.writeBigUInt64LE(BigInt(1 + (i % 50)), i * 72 + 64);
    }
    ledger.transferBatch(ops);
    acked += 1000;
    if (round % 50 === 0) process.stdout.write(`acked ${acked}\n`);
  }
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') return child(process.argv[3]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'geometric-ledger-demo-'));
  console.log(`geometric-ledger demo in ${dir}\n`);
  const keys = keysFor(ACCOUNTS, 7);

  let t = performance.now();
  // Created for 16 x 1,000 accounts: the shards grow as the accounts arrive.
  let ledger = await Ledger.open(dir, { shards: 16, accountsPerShard: 1_000 });
  console.log(`open (new)                ${(performance.now() - t).toFixed(1)} ms  (16 shards created for 1,000 accounts each)`);

  const mints = Buffer.alloc(40 * ACCOUNTS);
  for (let i = 0; i < ACCOUNTS; i++) {
    keys.copy(mints, i * 40, i * 32, i * 32 + 32);
    mints.writeBigUInt64LE(MINT, i * 40 + 32);
  }
  t = performance.now();
  let worst = 0;
  for (let o = 0; o < ACCOUNTS; o += 10_000) {
    const c = performance.now();
    ledger.mintBatch(mints.subarray(o * 40, (o + 10_000) * 40));
    worst = Math.max(worst, performance.now() - c);
  }
  console.log(`mintBatch                 ${rate(ACCOUNTS, performance.now() - t)}  (${ACCOUNTS} accounts, WAL on; slowest call of 10,000: ${worst.toFixed(1)} ms)`);
  const grown = ledger.stats().shards;
  console.log(`shards grew               capacity ${Math.min(...grown.map((s) => s.capacity))}-${Math.max(...grown.map((s) => s.capacity))} accounts, ` +
    `index ${Math.min(...grown.map((s) => s.indexCapacity))}-${Math.max(...grown.map((s) => s.indexCapacity))} entries ` +
    `(${grown.reduce((n, s) => n + s.indexResizes, 0)} index doublings, each an incremental rehash)`);

  const N = 1_000_000;
  const transfers = Buffer.alloc(72 * N);
  for (let i = 0; i < N; i++) {
    const a = (i * 7919) % ACCOUNTS;
    const b = (i * 104_729 + 1) % ACCOUNTS;
    keys.copy(transfers, i * 72, a * 32, a * 32 + 32);
    keys.copy(transfers, i * 72 + 32, b * 32, b * 32 + 32);
    transfers.writeBigUInt64LE(BigInt(1 + (i % 100)), i * 72 + 64);
  }
  t = performance.now();
  let refused = 0;
  for (let o = 0; o < N; o += 10_000) {
    const st = ledger.transferBatch(transfers.subarray(o * 72, (o + 10_000) * 72));
    for (const s of st) if (s !== 0) refused++;
  }
  console.log(`transferBatch             ${rate(N, performance.now() - t)}  (${N} transfers, ${refused} refused)`);

  t = performance.now();
  for (let i = 0; i < 100_000; i++) {
    ledger.transfer(keys.subarray((i % ACCOUNTS) * 32, (i % ACCOUNTS) * 32 + 32), keys.subarray(((i + 1) % ACCOUNTS) * 32, ((i + 1) % ACCOUNTS) * 32 + 32), 1n);
  }
  console.log(`transfer, one by one      ${rate(100_000, performance.now() - t)}`);
  t = performance.now();
  for (let i = 0; i < 100_000; i++) ledger.balance(keys.subarray((i % ACCOUNTS) * 32, (i % ACCOUNTS) * 32 + 32));
  console.log(`balance, one by one       ${rate(100_000, performance.now() - t)}`);
  t = performance.now();
  await ledger.sync();
  console.log(`sync()                    ${(performance.now() - t).toFixed(1)} ms`);
  t = performance.now();
  await ledger.close();
  console.log(`close (checkpoint)        ${(performance.now() - t).toFixed(1)} ms`);
  t = performance.now();
  ledger = await Ledger.open(dir);
  console.log(`open after clean close    ${(performance.now() - t).toFixed(1)} ms  (mode: ${ledger.recovery.mode})`);
  await ledger.close();

  console.log('\ncrash test: a child process transfers in batches of 1,000; we SIGKILL it mid-stream');
  const proc = spawn(process.execPath, [__filename, '--child', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  let acked = 0;
  await new Promise<void>((resolve) => {
    proc.stdout!.on('data', (d: Buffer) => {
      for (const m of String(d).matchAll(/acked (\d+)/g)) acked = Number(m[1]);
      if (acked >= 300_000) proc.kill('SIGKILL');
    });
    proc.on('exit', () => resolve());
  });
  console.log(`child killed after it had acknowledged at least ${acked} transfers`);
  t = performance.now();
  ledger = await Ledger.open(dir);
  const r = ledger.recovery;
  console.log(`reopen                    ${r.ms.toFixed(1)} ms  (mode: ${r.mode}, ${r.walRecordsReplayed} log records replayed, ${r.walBytesDropped} bytes dropped)`);
  const all = ledger.getBatch(keys);
  let total = 0n;
  for (let i = 0; i < ACCOUNTS; i++) total += all.subarray(i * 128 + 32, i * 128 + 40).reduce((acc, b, j) => acc + (BigInt(b) << BigInt(8 * j)), 0n);
  const expected = MINT * BigInt(ACCOUNTS);
  // Each successful operation before the child took one LSN, so the child's
  // recovered transfers are the LSNs past them.
  const recovered = Number(ledger.stats().lsn) - (ACCOUNTS + N - refused + 100_000);
  const ok = total === expected && recovered >= acked && ledger.stats().supply === expected;
  console.log(`sum of all balances       ${total} (minted ${expected}): ${total === expected ? 'conserved' : 'MISMATCH'}`);
  console.log(`child transfers recovered ${recovered} (acknowledged before the kill: ${acked}): ${recovered >= acked ? 'none lost' : 'LOST SOME'}`);
  const supply = ledger.stats().supply;
  console.log(`supply (total minted)     ${supply}: ${supply === total ? 'equals the sum of balances' : 'MISMATCH'}`);
  const registry = new Registry();
  registerMetrics(ledger, { registry, labels: { ledger: 'demo' } });
  console.log('\nmetrics (some lines of the Prometheus exposition, registerMetrics):');
  for (const line of (await registry.metrics()).split('\n')) {
    if (/^geoledger_(accounts|lsn|durable_lsn|supply|recovery_wal_records|recovery_duration_seconds|checkpoints_total)[{ ]/.test(line)) {
      console.log(`  ${line}`);
    }
  }
  await ledger.close();

  // What an operator sees of the directory, without writing code: the geoledger command.
  console.log(`\n$ geoledger info ${dir}`);
  const info = spawnSync(process.execPath, [path.join(__dirname, 'cli.js'), 'info', dir], { stdio: 'inherit' });
  fs.rmSync(dir, { recursive: true, force: true });
  if (!ok || info.status !== 0) process.exit(1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
