// Replication on a real 3-node JetStream cluster (nats-server processes on 127.0.0.1), leader and followers in
// this process: followers equal the leader, sync() means "acknowledged by JetStream", fencing, snapshots.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Ledger, LedgerError, LEDGER, balances, findPrefix, follow, makePlan, nats, replicate, runSteps, startCluster,
  state, streamName, streamState, tmpRoot, type Cluster,
} from './helpers';

const key = (s: string): Buffer => createHash('sha256').update(s).digest();

async function expectCode(p: Promise<unknown> | (() => unknown), code: string): Promise<void> {
  let thrown: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    thrown = e;
  }
  expect(thrown, `expected LedgerError ${code}`).toBeInstanceOf(LedgerError);
  expect((thrown as LedgerError).code).toBe(code);
}

describe.skipIf(!nats.ok)('replication on a 3-node JetStream cluster', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster({ label: 'repl' });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });

  it.each([
    ['native', 'native'],
    ['native', 'js'],
  ] as const)('a follower equals the leader at the same LSN, account for account, under a random workload (%s leader, %s follower)',
    async (leaderEngine, followerEngine) => {
      const root = tmpRoot('equal');
      const stream = streamName('equal');
      // Small checkpoints and messages: the tap meets background checkpoints, and the stream many messages.
      const leader = await Ledger.open(path.join(root, 'leader'), { ...LEDGER, engine: leaderEngine, checkpointEveryBytes: 128 * 1024 });
      // Messages compressed in one variant, as they are in the other (both encodings are applied and checked).
      const compress = followerEngine === 'native';
      const rep = await replicate(leader, { servers: cluster.servers, stream, maxBatchBytes: 8 * 1024, compress });
      const f = await follow(path.join(root, 'follower'), { servers: cluster.servers, stream, ledger: { engine: followerEngine } });
      const plan = makePlan({ seed: leaderEngine === followerEngine ? 101 : 202, ops: 4000 });
      let at = 0;
      for (const cut of [0.2, 0.45, 0.7, 1].map((x) => Math.floor(plan.steps.length * x))) {
        await runSteps(leader, plan, at, cut);
        at = cut;
        await leader.sync();
        const want = state(leader, plan.keys);
        await f.caughtUp();
        const got = state(f, plan.keys);
        expect(got.lsn).toBe(want.lsn);
        expect(got.supply).toBe(want.supply);
        expect(got.images.equals(want.images)).toBe(true);
        expect(f.lag().behindRecords).toBe(0n);
      }
      // The leader itself did what the model says: the follower holds the model after every operation.
      expect(findPrefix(plan, balances(f, plan.keys), plan.ops.length, plan.ops.length).k).toBe(plan.ops.length);
      expect(rep.stats().batches).toBeGreaterThan(10);
      const { publishedBytes, loggedBytes } = rep.stats();
      if (compress) expect(publishedBytes).toBeLessThan(loggedBytes / 2);
      else expect(publishedBytes).toBe(loggedBytes);
      await f.close();
      await leader.close();
      // Both reopen to the same state (the follower's own log and checkpoints hold what it applied).
      const a = await Ledger.open(path.join(root, 'leader'));
      const b = await Ledger.open(path.join(root, 'follower'), { engine: followerEngine });
      expect(state(b, plan.keys).digest).toBe(state(a, plan.keys).digest);
      expect(b.stats().lsn).toBe(a.stats().lsn);
      await a.close();
      await b.close();
    });

  it('a follower takes no writes (READ_ONLY) and they change nothing; its lag is zero once caught up', async () => {
    const root = tmpRoot('ro');
    const stream = streamName('ro');
    const leader = await Ledger.open(path.join(root, 'leader'), LEDGER);
    await replicate(leader, { servers: cluster.servers, stream });
    leader.mint(key('a'), 10n);
    await leader.sync();
    const f = await follow(path.join(root, 'follower'), { servers: cluster.servers, stream });
    await f.caughtUp();
    const before = state(f, [key('a'), key('b')]);
    await expectCode(() => f.mint(key('b'), 1n), 'READ_ONLY');
    await expectCode(() => f.transfer(key('a'), key('b'), 1n), 'READ_ONLY');
    await expectCode(() => f.transferBatch(Buffer.alloc(72)), 'READ_ONLY');
    const after = state(f, [key('a'), key('b')]);
    expect(after.digest).toBe(before.digest);
    expect(after.lsn).toBe(before.lsn);
    expect(f.balance(key('a'))).toBe(10n);
    expect(f.lag()).toEqual({ lsn: 1n, behindRecords: 0n, behindMs: 0 });
    await f.close();
    await leader.close();
  });

  it('sync() resolves only once JetStream holds the operations: not while the stream has no quorum, then it does', async () => {
    const root = tmpRoot('quorum');
    const stream = streamName('quorum');
    const leader = await Ledger.open(path.join(root, 'leader'), LEDGER);
    await replicate(leader, { servers: cluster.servers, stream, timeoutMs: 1000 });
    leader.mint(key('q1'), 5n);
    await leader.sync();
    // Two of three nodes down: no quorum, nothing can be acknowledged.
    await cluster.kill(1);
    await cluster.kill(2);
    try {
      leader.mint(key('q2'), 7n);
      const lsn = leader.stats().lsn;
      let resolved = false;
      const p = leader.sync().then(() => {
        resolved = true;
      });
      await new Promise((r) => setTimeout(r, 2500));
      expect(resolved).toBe(false); // the local log is durable long since; JetStream has not acknowledged
      await cluster.start(1);
      await cluster.start(2);
      await p;
      expect(resolved).toBe(true);
      const s = await streamState(cluster.servers, stream);
      expect(s.lastLsn).toBeGreaterThanOrEqual(lsn);
    } finally {
      await cluster.start(1);
      await cluster.start(2);
    }
    // The retries stored each message once: a follower from scratch applies a gapless, duplicate-free log.
    const f = await follow(path.join(root, 'follower'), { servers: cluster.servers, stream });
    await f.caughtUp();
    expect(f.balance(key('q2'))).toBe(7n);
    expect(f.stats().lsn).toBe(leader.stats().lsn);
    await f.close();
    await leader.close();
  }, 90_000);

  it('promote() fences the old leader: its next sync() and every write after are FENCED, and the stream never gets them', async () => {
    const root = tmpRoot('fence');
    const stream = streamName('fence');
    const oldDir = path.join(root, 'leader');
    const old = await Ledger.open(oldDir, LEDGER);
    await replicate(old, { servers: cluster.servers, stream });
    old.mint(key('k1'), 5n);
    await old.sync();
    const f = await follow(path.join(root, 'f'), { servers: cluster.servers, stream });
    await f.caughtUp();
    await f.promote();
    // The old leader does not know yet: its write is local, its sync() finds the stream fenced.
    old.mint(key('k2'), 7n);
    await expectCode(old.sync(), 'FENCED');
    await expectCode(() => old.mint(key('k3'), 1n), 'FENCED');
    expect(old.balance(key('k3'))).toBe(0n);
    // The new leader writes; a new follower sees its writes and not the old leader's unacknowledged one.
    f.mint(key('k4'), 9n);
    f.transfer(key('k1'), key('k4'), 2n);
    await f.sync();
    const g = await follow(path.join(root, 'g'), { servers: cluster.servers, stream });
    await g.caughtUp();
    expect([g.balance(key('k1')), g.balance(key('k2')), g.balance(key('k4'))]).toEqual([3n, 0n, 11n]);
    await g.close();
    await old.close();
    // Restarted, the old leader cannot take the stream back, and rejoins as a follower: its directory (holding
    // the mint the stream never got) is moved aside and it starts from the newest snapshot and the stream.
    const again = await Ledger.open(oldDir);
    await expectCode(replicate(again, { servers: cluster.servers, stream }), 'FENCED');
    await again.close();
    const rejoined = await follow(oldDir, { servers: cluster.servers, stream });
    expect(rejoined.movedAside).toBeDefined();
    expect(fs.existsSync(rejoined.movedAside!)).toBe(true);
    await rejoined.caughtUp();
    const keys = ['k1', 'k2', 'k3', 'k4'].map(key);
    expect(state(rejoined, keys).digest).toBe(state(f, keys).digest);
    expect(rejoined.stats().lsn).toBe(f.stats().lsn);
    await rejoined.close();
    await f.close();
  });

  it('a new follower starts from the newest snapshot after the stream was trimmed below it', async () => {
    const root = tmpRoot('snap');
    const stream = streamName('snap');
    const leader = await Ledger.open(path.join(root, 'leader'), LEDGER);
    const rep = await replicate(leader, { servers: cluster.servers, stream, keepSnapshots: 1, maxBatchBytes: 4 * 1024 });
    const plan = makePlan({ seed: 303, ops: 3000 });
    const third = Math.floor(plan.steps.length / 3);
    await runSteps(leader, plan, 0, third);
    await leader.sync();
    await rep.snapshot();
    await runSteps(leader, plan, third, 2 * third);
    await leader.sync();
    const snap = await rep.snapshot();
    await runSteps(leader, plan, 2 * third, plan.steps.length);
    await leader.sync();
    const s = await streamState(cluster.servers, stream);
    expect(snap.seq).toBeGreaterThan(10);
    expect(s.first).toBe(snap.seq); // everything before the one snapshot kept is gone
    const f = await follow(path.join(root, 'follower'), { servers: cluster.servers, stream });
    await f.caughtUp();
    expect(state(f, plan.keys).digest).toBe(state(leader, plan.keys).digest);
    expect(f.stats().lsn).toBe(leader.stats().lsn);
    expect(findPrefix(plan, balances(f, plan.keys), plan.ops.length, plan.ops.length).k).toBe(plan.ops.length);
    await f.close();
    await leader.close();
  });

  it('a replica that has diverged from the log stops with CORRUPTION instead of serving it', async () => {
    const root = tmpRoot('diverge');
    const stream = streamName('diverge');
    const leader = await Ledger.open(path.join(root, 'leader'), LEDGER);
    await replicate(leader, { servers: cluster.servers, stream });
    leader.mint(key('d1'), 10n);
    await leader.sync();
    const fdir = path.join(root, 'f');
    const f = await follow(fdir, { servers: cluster.servers, stream });
    await f.caughtUp();
    await f.close();
    // Someone writes to the replica's directory behind replication's back: an operation the log does not have.
    const tampered = await Ledger.open(fdir);
    tampered.mint(key('d2'), 1n);
    await tampered.close();
    leader.mint(key('d3'), 5n);
    await leader.sync();
    let stopped: Error | undefined;
    const g = await follow(fdir, { servers: cluster.servers, stream, onError: (e) => (stopped = e) });
    for (let t = 0; t < 100 && !stopped; t++) await new Promise((r) => setTimeout(r, 50));
    expect((stopped as LedgerError)?.code).toBe('CORRUPTION');
    expect(g.error).toBe(stopped);
    // It serves nothing more; underneath, the leader's next operation was not applied over the divergence.
    await expectCode(() => g.balance(key('d1')), 'CORRUPTION');
    expect(g.ledger.balance(key('d3'))).toBe(0n);
    await g.close();
    await leader.close();
  });

  it('bad options are INVALID_OPTIONS and open nothing', async () => {
    const root = tmpRoot('opts');
    const leader = await Ledger.open(path.join(root, 'leader'), LEDGER);
    await expectCode(replicate(leader, { servers: cluster.servers, stream: 'has.dot' }), 'INVALID_OPTIONS');
    await expectCode(replicate(leader, { servers: [], stream: 'x' }), 'INVALID_OPTIONS');
    await expectCode(replicate(leader, { servers: cluster.servers, stream: 'x', maxBatchBytes: 10 }), 'INVALID_OPTIONS');
    await expectCode(replicate(leader, { servers: cluster.servers, stream: 'x', compress: 'yes' as unknown as boolean }), 'INVALID_OPTIONS');
    await expectCode(follow(path.join(root, 'leader'), { servers: cluster.servers, stream: streamName('opts') }), 'INVALID_OPTIONS');
    leader.mint(key('x'), 1n); // still an ordinary ledger: no tap, no wrapper
    await leader.sync();
    await leader.close();
  });
});
