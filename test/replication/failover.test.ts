// Failures on a real 3-node JetStream cluster: kill -9 of the leader process mid-load and promotion of a follower,
// kill -9 of a JetStream node mid-load, kill -9 of a follower mid-apply.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Ledger, LedgerError, LEDGER, balances, findPrefix, follow, makePlan, nats, replicate, startCluster, state,
  streamLeader, streamName, streamState, tmpRoot, type Cluster,
} from './helpers';
// @ts-ignore -- plain ESM module without type declarations
import { runChild } from '../fixtures/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const LEADER_CHILD = path.join(here, 'fixtures/leader.mjs');
const FOLLOWER_CHILD = path.join(here, 'fixtures/follower.mjs');
const key = (s: string | number): Buffer => createHash('sha256').update(`k${s}`).digest();

interface ChildResult { code: number | null; signal: string | null; killed: boolean; timedOut: boolean; lastAck: number; lines: string[]; stderr: string }

describe.skipIf(!nats.ok)('failover on a 3-node JetStream cluster', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster({ label: 'failover' });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it.each([
    { seed: 7, killAtAck: 1500 },
    { seed: 8, killAtAck: 2600 },
  ])('kill -9 of the leader mid-load, promote a follower: every operation a resolved sync() covered is there, the state is an exact prefix, the old leader is fenced and rejoins (seed $seed)',
    async ({ seed, killAtAck }) => {
      const root = tmpRoot('kill9');
      const stream = streamName('kill9');
      const oldDir = path.join(root, 'leader');
      const ops = 3000;
      const child: Promise<ChildResult> = runChild({
        script: LEADER_CHILD, killAtAck, timeoutMs: 90_000,
        args: ['--dir', oldDir, '--servers', cluster.servers.join(','), '--stream', stream, '--seed', String(seed), '--ops', String(ops)],
      });
      // The follower starts while the leader works (it waits for the leader's first snapshot).
      const f = await follow(path.join(root, 'follower'), { servers: cluster.servers, stream, bootstrapTimeoutMs: 60_000 });
      const r = await child;
      expect(r.killed, `child: ${r.stderr}`).toBe(true);
      expect(r.lines.some((l) => l.startsWith('error'))).toBe(false);
      const synced = Math.max(0, ...r.lines.filter((l) => l.startsWith('sync ')).map((l) => Number(l.slice(5))));
      expect(synced).toBeGreaterThan(0);

      const t0 = Date.now();
      await f.promote();
      const plan = makePlan({ seed, ops });
      const found = balances(f, plan.keys);
      const prefix = findPrefix(plan, found, synced, plan.ops.length);
      // An exact prefix of the issued operations, holding every one a resolved sync() covered...
      expect(prefix.k, `no prefix >= ${synced} matches (closest: ${prefix.bestK}, ${prefix.best} accounts differ)`).toBeGreaterThanOrEqual(synced);
      // ... and nothing the leader had not issued when it died (it issues at most one batch of 48 past its last ack line).
      expect(prefix.k).toBeLessThanOrEqual(r.lastAck + 48);
      // The new leader writes at once.
      f.mint(key('after'), 1n);
      await f.sync();
      console.log(`seed ${seed}: killed at ack ${r.lastAck}, synced ${synced}, promoted at prefix ${prefix.k}; ` +
        `promote + first replicated write ${Date.now() - t0} ms`);

      // The old leader, restarted, cannot take the stream back; it rejoins as a follower and converges.
      const old = await Ledger.open(oldDir);
      let fenced: unknown;
      try {
        await replicate(old, { servers: cluster.servers, stream });
      } catch (e) {
        fenced = e;
      }
      expect((fenced as LedgerError)?.code).toBe('FENCED');
      await old.close();
      const rejoined = await follow(oldDir, { servers: cluster.servers, stream });
      expect(rejoined.movedAside).toBeDefined();
      await rejoined.caughtUp();
      const keys = [...plan.keys, key('after')];
      expect(state(rejoined, keys).digest).toBe(state(f, keys).digest);
      expect(rejoined.stats().lsn).toBe(f.stats().lsn);
      await rejoined.close();
      await f.close();
    }, 120_000);

  it('automatic failover: the leader is killed, its lease lapses, a follower takes it and promotes itself; every synced operation is there', async () => {
    const root = tmpRoot('lease');
    const stream = streamName('lease');
    const seed = 9;
    const ops = 3000;
    const ttlMs = 1500;
    const child: Promise<ChildResult> = runChild({
      script: LEADER_CHILD, killAtAck: 1800, timeoutMs: 90_000,
      args: ['--dir', path.join(root, 'leader'), '--servers', cluster.servers.join(','), '--stream', stream, '--seed', String(seed),
        '--ops', String(ops), '--lease-ms', String(ttlMs)],
    });
    let promotedAt = 0;
    let promoteError: Error | undefined;
    const f = await follow(path.join(root, 'follower'), {
      servers: cluster.servers, stream, bootstrapTimeoutMs: 60_000, autoPromote: { ttlMs },
      onPromoted: (_rep, e) => {
        promotedAt = Date.now();
        promoteError = e;
      },
    });
    const r = await child;
    const killedAt = Date.now();
    expect(r.killed, `child: ${r.stderr}`).toBe(true);
    // While the leader renewed its lease (several seconds), the follower did not take over.
    expect(f.replication).toBeUndefined();
    for (let t = 0; t < 300 && promotedAt === 0; t++) await new Promise((res) => setTimeout(res, 100));
    expect(promoteError).toBeUndefined();
    expect(f.replication).toBeDefined();
    const synced = Math.max(0, ...r.lines.filter((l) => l.startsWith('sync ')).map((l) => Number(l.slice(5))));
    const plan = makePlan({ seed, ops });
    const prefix = findPrefix(plan, balances(f, plan.keys), synced, plan.ops.length);
    expect(prefix.k).toBeGreaterThanOrEqual(synced);
    f.mint(key('after'), 1n);
    await f.sync();
    console.log(`lease ${ttlMs} ms: promoted ${promotedAt - killedAt} ms after the kill, at prefix ${prefix.k} (synced ${synced})`);
    await f.close();
  }, 120_000);

  it('kill -9 of the JetStream node leading the stream mid-load: every acknowledged operation is in the stream', async () => {
    const root = tmpRoot('nodekill');
    const stream = streamName('nodekill');
    const leader = await Ledger.open(path.join(root, 'leader'), LEDGER);
    const rep = await replicate(leader, { servers: cluster.servers, stream, timeoutMs: 1500, maxBatchBytes: 32 * 1024 });
    const f = await follow(path.join(root, 'f'), { servers: cluster.servers, stream });
    const accounts = 200;
    for (let i = 0; i < accounts; i++) leader.mint(key(i), 1_000_000_000n);
    await leader.sync();
    const ops = Buffer.alloc(500 * 72);
    let rng = 12345;
    const next = (n: number): number => {
      rng = (Math.imul(rng, 1103515245) + 12345) >>> 0;
      return rng % n;
    };
    let ackedLsn = 0n;
    let killed = -1;
    for (let round = 0; round < 30; round++) {
      for (let j = 0; j < 500; j++) {
        const a = next(accounts);
        key(a).copy(ops, j * 72);
        key((a + 1 + next(accounts - 1)) % accounts).copy(ops, j * 72 + 32);
        ops.writeBigUInt64LE(BigInt(1 + next(1000)), j * 72 + 64);
      }
      leader.transferBatch(ops);
      const lsn = leader.stats().lsn;
      const p = leader.sync();
      if (round === 8) {
        killed = await streamLeader(cluster.servers, stream);
        await cluster.kill(killed); // while this round's messages are in flight
      }
      await p;
      ackedLsn = lsn;
      if (round === 20) await cluster.start(killed);
    }
    console.log(`node n${killed} (the stream's leader) killed in round 8, back in round 20; publishes retried: ${rep.stats().retries}`);
    const s = await streamState(cluster.servers, stream);
    expect(s.lastLsn).toBe(ackedLsn);
    expect(rep.stats().ackedLsn).toBe(ackedLsn);
    // A follower from scratch applies a gapless log up to the last acknowledged LSN and equals the leader.
    const g = await follow(path.join(root, 'g'), { servers: cluster.servers, stream });
    await g.caughtUp();
    await f.caughtUp();
    const keys = Array.from({ length: accounts }, (_, i) => key(i));
    expect(g.stats().lsn).toBe(ackedLsn);
    expect(state(g, keys).digest).toBe(state(leader, keys).digest);
    expect(state(f, keys).digest).toBe(state(leader, keys).digest);
    await g.close();
    await f.close();
    await leader.close();
  }, 120_000);

  it('a follower killed mid-apply resumes from the sequence it recorded, and converges', async () => {
    const root = tmpRoot('fkill');
    const stream = streamName('fkill');
    const leader = await Ledger.open(path.join(root, 'leader'), LEDGER);
    await replicate(leader, { servers: cluster.servers, stream, maxBatchBytes: 4 * 1024 });
    const accounts = 100;
    for (let i = 0; i < accounts; i++) leader.mint(key(i), 1_000_000n);
    await leader.sync();
    const fdir = path.join(root, 'f');
    const p = spawn(process.execPath, [FOLLOWER_CHILD, '--dir', fdir, '--servers', cluster.servers.join(','), '--stream', stream],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    let appliedSeq = 0;
    let buf = '';
    p.stdout!.on('data', (d) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) if (l.startsWith('applied ')) appliedSeq = Number(l.split(' ')[1]);
    });
    const exited = new Promise((r) => p.once('exit', r));
    // Load while it applies; kill it once it is well into the stream and the stream still grows.
    let i = 0;
    for (let round = 0; round < 400 && appliedSeq < 150; round++) {
      for (let j = 0; j < 20; j++, i++) leader.transfer(key(i % accounts), key((i * 7 + 1) % accounts), 1n);
      await leader.sync();
    }
    expect(appliedSeq).toBeGreaterThanOrEqual(150);
    p.kill('SIGKILL');
    await exited;
    for (let round = 0; round < 20; round++) {
      for (let j = 0; j < 20; j++, i++) leader.transfer(key(i % accounts), key((i * 7 + 1) % accounts), 1n);
    }
    await leader.sync();
    // What it recorded before it died: a stream sequence well past the snapshot it started from (sequence 1).
    const recorded = JSON.parse(fs.readFileSync(path.join(fdir, 'REPLICATION'), 'utf8')) as { role: string; seq: number };
    expect(recorded.role).toBe('follower');
    expect(recorded.seq).toBeGreaterThan(50);
    const f = await follow(fdir, { servers: cluster.servers, stream });
    expect(f.movedAside).toBeUndefined(); // resumed in place, not from a snapshot
    expect(f.appliedSeq).toBeGreaterThanOrEqual(recorded.seq);
    await f.caughtUp();
    const keys = Array.from({ length: accounts }, (_, k) => key(k));
    expect(state(f, keys).digest).toBe(state(leader, keys).digest);
    expect(f.stats().lsn).toBe(leader.stats().lsn);
    await f.close();
    await leader.close();
  }, 120_000);
});
