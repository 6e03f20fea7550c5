#!/usr/bin/env node
// Replication on a real 3-node JetStream cluster (nats-server on 127.0.0.1, all on this machine):
//
//   node bench/replication.mjs [--accounts 100000] [--seconds 10] [--failovers 3] [--lease-ms 1500] [--no-follower] [--no-write]
//
//  1. throughput: a leader process runs transferBatch(1,000 random transfers) + await sync() in a loop for
//     --seconds, once without replication (local sync only) and once replicated (sync = local + JetStream ack);
//     transfers/s of each.
//  2. follower lag: during the replicated run a follower (this process) applies the stream; its lag() is
//     sampled every 50 ms: behindMs and behindRecords, median / p99 / max.
//  3. failover: --failovers times, a leader process under the same load is killed with SIGKILL; time from the
//     kill to the first successful write on the promoted follower (promote() returned, transfer() returned), and to
//     that write's replicated sync() resolving; then as many automatic failovers: the leader holds a lease of
//     --lease-ms, the follower has autoPromote and promotes itself once the lease lapses (detection included).
// Prints the machine, date and load average, and the results; writes bench/results/replication.json.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, execSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';

const SELF = fileURLToPath(import.meta.url);
const here = path.dirname(SELF);
const require = createRequire(import.meta.url);
const { Ledger } = require(path.join(here, '../dist/index.js'));
const { replicate, follow } = require(path.join(here, '../dist/replication.js'));

const argv = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const ACCOUNTS = Number(arg('accounts', 100_000));
const key = (i) => createHash('sha256').update(`bench-${i}`).digest();

if (argv[0] === '--leader') await leader();
else await driver();

/** Child: funds the accounts, prints `ready`, then transferBatch(1000) + sync() until `--seconds` or killed. */
async function leader() {
  const dir = arg('dir');
  const servers = arg('servers');
  const seconds = Number(arg('seconds', 10));
  const ledger = await Ledger.open(dir, { shards: 16, accountsPerShard: Math.max(1024, Math.ceil(ACCOUNTS / 16)) });
  const lease = arg('lease-ms');
  if (servers) await replicate(ledger, { servers: servers.split(','), stream: arg('stream'), lease: lease ? { ttlMs: Number(lease) } : undefined });
  const mint = Buffer.alloc(10_000 * 40);
  for (let i = 0; i < ACCOUNTS; i += 10_000) {
    const n = Math.min(10_000, ACCOUNTS - i);
    for (let j = 0; j < n; j++) {
      key(i + j).copy(mint, j * 40);
      mint.writeBigUInt64LE(1_000_000_000n, j * 40 + 32);
    }
    ledger.mintBatch(mint.subarray(0, n * 40));
    await ledger.sync();
  }
  const keys = Array.from({ length: ACCOUNTS }, (_, i) => key(i));
  const batches = Array.from({ length: 16 }, (_, b) => {
    const ops = Buffer.alloc(1000 * 72);
    let x = 12345 + b;
    for (let j = 0; j < 1000; j++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const a = x % ACCOUNTS;
      keys[a].copy(ops, j * 72);
      keys[(a + 1 + (x >>> 7) % (ACCOUNTS - 1)) % ACCOUNTS].copy(ops, j * 72 + 32);
      ops.writeBigUInt64LE(1n, j * 72 + 64);
    }
    return ops;
  });
  process.stdout.write('ready\n');
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < seconds * 1000) {
    ledger.transferBatch(batches[n % batches.length]);
    await ledger.sync();
    n++;
    if (n % 10 === 0) process.stdout.write(`synced ${n * 1000}\n`);
  }
  const ms = performance.now() - t0;
  process.stdout.write(`result ${JSON.stringify({ transfers: n * 1000, ms })}\n`);
  await ledger.close();
  process.exit(0);
}

function runLeader(args) {
  const p = spawn(process.execPath, [SELF, '--leader', '--accounts', String(ACCOUNTS), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = [];
  const waiters = [];
  let buf = '';
  p.stdout.on('data', (d) => {
    buf += d;
    const ls = buf.split('\n');
    buf = ls.pop();
    for (const l of ls) {
      lines.push(l);
      for (const w of waiters.splice(0)) w();
    }
  });
  const exit = new Promise((r) => p.once('exit', r));
  const until = async (pred) => {
    while (!lines.some(pred)) await new Promise((r) => waiters.push(r));
  };
  return { p, lines, exit, until };
}

function pct(xs, q) {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

async function driver() {
  const seconds = Number(arg('seconds', 10));
  const failovers = Number(arg('failovers', 3));
  const { natsAvailable, startCluster } = await import('../test/support/nats-cluster.mjs');
  const nats = natsAvailable();
  if (!nats.ok) throw new Error(nats.reason);
  const machine = {
    date: new Date().toISOString(), cpus: os.cpus().length, cpu: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavg: os.loadavg().map((x) => x.toFixed(2)), node: process.version, natsServer: nats.reason,
    commit: (() => {
      try {
        return execSync('git rev-parse --short HEAD', { cwd: here }).toString().trim();
      } catch {
        return '?';
      }
    })(),
  };
  console.log(`machine: ${machine.cpus} x ${machine.cpu}, ${machine.memGiB} GiB, load ${machine.loadavg.join(' ')}; ` +
    `${machine.node}, ${machine.natsServer}; commit ${machine.commit}; ${machine.date}`);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gl-bench-repl-'));
  const cluster = await startCluster({ label: 'bench' });
  const results = { machine, accounts: ACCOUNTS, seconds };
  try {
    // 1. local only
    {
      const l = runLeader(['--dir', path.join(root, 'local'), '--seconds', String(seconds)]);
      await l.exit;
      const r = JSON.parse(l.lines.find((x) => x.startsWith('result ')).slice(7));
      results.local = { transfersPerSec: Math.round((r.transfers / r.ms) * 1000) };
      console.log(`local only (transferBatch 1,000 + sync): ${results.local.transfersPerSec} transfers/s`);
    }
    // 1 + 2. replicated, with a follower
    {
      const stream = 'bench-tput';
      const l = runLeader(['--dir', path.join(root, 'tput'), '--seconds', String(seconds), '--servers', cluster.servers.join(','), '--stream', stream]);
      // --no-follower: the leader alone (how much of the cost is the follower's reads on the same machine).
      const f = argv.includes('--no-follower') ? undefined
        : await follow(path.join(root, 'tput-f'), { servers: cluster.servers, stream, bootstrapTimeoutMs: 120_000 });
      await l.until((x) => x === 'ready');
      const ms = [];
      const recs = [];
      const timer = setInterval(() => {
        if (!f) return;
        const lag = f.lag();
        ms.push(lag.behindMs);
        recs.push(Number(lag.behindRecords));
      }, 50);
      await l.exit;
      clearInterval(timer);
      const r = JSON.parse(l.lines.find((x) => x.startsWith('result ')).slice(7));
      const t = Date.now();
      await f?.caughtUp();
      results.replicated = {
        transfersPerSec: Math.round((r.transfers / r.ms) * 1000),
        lagMs: { median: pct(ms, 0.5), p99: pct(ms, 0.99), max: Math.max(0, ...ms) },
        lagLsns: { median: pct(recs, 0.5), p99: pct(recs, 0.99), max: Math.max(0, ...recs) },
        drainAfterStopMs: Date.now() - t,
      };
      console.log(`replicated (transferBatch 1,000 + sync = local + JetStream ack): ${results.replicated.transfersPerSec} transfers/s`);
      console.log(`follower lag while it ran: behindMs median ${results.replicated.lagMs.median}, p99 ${results.replicated.lagMs.p99}, ` +
        `max ${results.replicated.lagMs.max}; behind LSNs median ${results.replicated.lagLsns.median}, p99 ${results.replicated.lagLsns.p99}, ` +
        `max ${results.replicated.lagLsns.max}; caught up ${results.replicated.drainAfterStopMs} ms after the leader stopped`);
      await f?.close();
    }
    // 3. failover
    results.failover = [];
    for (let i = 0; i < failovers; i++) {
      const stream = `bench-failover-${i}`;
      const l = runLeader(['--dir', path.join(root, `fo${i}`), '--seconds', '600', '--servers', cluster.servers.join(','), '--stream', stream]);
      const f = await follow(path.join(root, `fo${i}-f`), { servers: cluster.servers, stream, bootstrapTimeoutMs: 120_000 });
      await l.until((x) => x === 'ready');
      await l.until((x) => x === 'synced 20000');
      const killed = performance.now();
      l.p.kill('SIGKILL');
      await l.exit;
      await f.promote();
      const promoted = performance.now();
      f.transfer(key(0), key(1), 1n);
      const wrote = performance.now();
      await f.sync();
      const acked = performance.now();
      const r = { promoteMs: Math.round(promoted - killed), firstWriteMs: Math.round(wrote - killed), firstSyncedWriteMs: Math.round(acked - killed) };
      results.failover.push(r);
      console.log(`failover ${i + 1}: kill -9 -> promoted ${r.promoteMs} ms, first write ${r.firstWriteMs} ms, its sync() ${r.firstSyncedWriteMs} ms`);
      await f.close();
    }
    // 3b. automatic failover (lease)
    const leaseMs = Number(arg('lease-ms', 1500));
    results.autoFailover = [];
    for (let i = 0; i < failovers; i++) {
      const stream = `bench-auto-${i}`;
      const l = runLeader(['--dir', path.join(root, `af${i}`), '--seconds', '600', '--servers', cluster.servers.join(','), '--stream', stream,
        '--lease-ms', String(leaseMs)]);
      let promoted = 0;
      const f = await follow(path.join(root, `af${i}-f`), {
        servers: cluster.servers, stream, bootstrapTimeoutMs: 120_000, autoPromote: { ttlMs: leaseMs },
        onPromoted: () => {
          promoted = performance.now();
        },
      });
      await l.until((x) => x === 'ready');
      await l.until((x) => x === 'synced 20000');
      const killed = performance.now();
      l.p.kill('SIGKILL');
      await l.exit;
      while (promoted === 0) await new Promise((r) => setTimeout(r, 5));
      f.transfer(key(0), key(1), 1n);
      const wrote = performance.now();
      await f.sync();
      const acked = performance.now();
      const r = { leaseMs, promoteMs: Math.round(promoted - killed), firstWriteMs: Math.round(wrote - killed), firstSyncedWriteMs: Math.round(acked - killed) };
      results.autoFailover.push(r);
      console.log(`automatic failover ${i + 1} (lease ${leaseMs} ms): kill -9 -> promoted ${r.promoteMs} ms, first write ${r.firstWriteMs} ms, ` +
        `its sync() ${r.firstSyncedWriteMs} ms`);
      await f.close();
    }
  } finally {
    await cluster.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
  if (!argv.includes('--no-write')) {
    fs.mkdirSync(path.join(here, 'results'), { recursive: true });
    fs.writeFileSync(path.join(here, 'results/replication.json'), JSON.stringify(results, null, 2) + '\n');
  }
}
