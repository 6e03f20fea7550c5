#!/usr/bin/env node
// npm run demo:cluster — replication and failover on a real 3-node JetStream cluster, in under a minute:
// starts the cluster (nats-server on 127.0.0.1), a leader (a child process) writing transfers with sync(), a
// follower (this process); kills the leader with SIGKILL, promotes the follower, checks that every synced
// operation survived, writes on the new leader, and brings the old leader back as a follower.
//
// Needs `npm run build` and nats-server (Debian: apt-get install nats-server).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const { Ledger } = require(path.join(here, '../dist/index.js'));
const { replicate, follow } = require(path.join(here, '../dist/replication.js'));
const key = (i) => createHash('sha256').update(`demo-${i}`).digest();
const ACCOUNTS = 1000;

if (process.argv[2] === '--leader') {
  // The leader: mints the accounts, then transfers in batches of 100, each followed by sync(); prints the LSN each
  // resolved sync() covered (locally durable and acknowledged by JetStream).
  const [, , , dir, servers, stream] = process.argv;
  const ledger = await Ledger.open(dir, { shards: 4, accountsPerShard: 1024 });
  await replicate(ledger, { servers: servers.split(','), stream });
  for (let i = 0; i < ACCOUNTS; i++) ledger.mint(key(i), 1_000_000n);
  await ledger.sync();
  console.log(`synced ${ledger.stats().lsn}`);
  const ops = Buffer.alloc(100 * 72);
  for (let n = 0; ; n++) {
    for (let j = 0; j < 100; j++) {
      const a = (n * 100 + j) % ACCOUNTS;
      key(a).copy(ops, j * 72);
      key((a * 7 + 3) % ACCOUNTS).copy(ops, j * 72 + 32);
      ops.writeBigUInt64LE(1n, j * 72 + 64);
    }
    ledger.transferBatch(ops);
    const lsn = ledger.stats().lsn;
    await ledger.sync();
    console.log(`synced ${lsn}`);
  }
}

const { natsAvailable, startCluster } = await import('../test/support/nats-cluster.mjs');
const ok = natsAvailable();
if (!ok.ok) {
  console.error(ok.reason);
  process.exit(1);
}
const t0 = Date.now();
const say = (s) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${s}`);
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gl-demo-cluster-'));
const cluster = await startCluster({ label: 'demo' });
say(`JetStream cluster up: 3 nats-server nodes (${ok.reason}), ${cluster.servers.join(' ')}`);
const stream = 'demo';
const leaderDir = path.join(root, 'leader');
let synced = 0n;
const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--leader', leaderDir, cluster.servers.join(','), stream],
  { stdio: ['ignore', 'pipe', 'inherit'] });
let buf = '';
child.stdout.on('data', (d) => {
  buf += d;
  const lines = buf.split('\n');
  buf = lines.pop();
  for (const l of lines) if (l.startsWith('synced ')) synced = BigInt(l.slice(7));
});
say(`leader started (pid ${child.pid}): transfers in batches of 100, sync() after each`);
const f = await follow(path.join(root, 'follower'), { servers: cluster.servers, stream });
say(`follower bootstrapped from the leader's first snapshot at LSN ${f.lag().lsn}, applying the stream`);
for (let i = 0; i < 6; i++) {
  await new Promise((r) => setTimeout(r, 500));
  const lag = f.lag();
  say(`leader synced LSN ${synced}; follower at LSN ${lag.lsn}, ${lag.behindRecords} behind, ${lag.behindMs} ms`);
}
const gone = new Promise((r) => child.once('exit', r));
child.kill('SIGKILL');
await gone;
const lastSynced = synced;
const killedAt = Date.now();
say(`leader killed with SIGKILL; the last sync() it saw resolve covered LSN ${lastSynced}`);
const rep = await f.promote();
const lsn = f.stats().lsn;
say(`follower promoted in ${Date.now() - killedAt} ms: it holds LSN ${lsn} (>= ${lastSynced}: ${lsn >= lastSynced ? 'yes' : 'NO'})`);
const before = f.balance(key(1));
f.transfer(key(0), key(1), 5n);
await f.sync();
say(`new leader wrote transfer LSN ${f.stats().lsn} and JetStream acknowledged it ${Date.now() - killedAt} ms after the kill; ` +
  `balance of account 1: ${before} -> ${f.balance(key(1))} (term ${rep.stats().term})`);
const old = await Ledger.open(leaderDir);
const oldLsn = old.stats().lsn;
try {
  await replicate(old, { servers: cluster.servers, stream });
  say('old leader took the stream back: THIS IS WRONG');
} catch (e) {
  say(`old leader restarted at LSN ${oldLsn}: replicate() refused it with ${e.code}`);
}
await old.close();
const rejoined = await follow(leaderDir, { servers: cluster.servers, stream });
await rejoined.caughtUp();
say(`old leader rejoined as a follower (its directory moved aside to ${path.basename(rejoined.movedAside ?? '(kept)')}), ` +
  `now at LSN ${rejoined.stats().lsn}, account 1 = ${rejoined.balance(key(1))}`);
await rejoined.close();
await f.close();
await cluster.stop();
fs.rmSync(root, { recursive: true, force: true });
say('done');
