// Shared by the replication tests: a real JetStream cluster (test/support/nats-cluster.mjs), the seeded workloads
// of the durability suite (test/fixtures/plan.mjs) run against a ledger, and state comparisons.
import { createHash } from 'node:crypto';
import { Ledger, LedgerError } from '../../dist/index.js';
import * as replication from '../../dist/replication.js';
// @ts-ignore -- plain ESM module without type declarations, typed below
import * as clusterLib from '../support/nats-cluster.mjs';
// @ts-ignore -- plain ESM module without type declarations, typed below
import * as planLib from '../fixtures/plan.mjs';
// @ts-ignore -- plain ESM module without type declarations, typed below
import * as childLib from '../fixtures/child.mjs';
// @ts-ignore -- plain ESM module without type declarations
import { tmpDir } from '../support/tmp.mjs';

export { Ledger, LedgerError };
export const { replicate, follow } = replication;
export type Follower = replication.Follower;

export interface Cluster {
  root: string;
  servers: string[];
  pids(): (number | null)[];
  start(i: number): Promise<void>;
  kill(i: number, signal?: NodeJS.Signals): Promise<void>;
  ready(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}
export const startCluster: (o?: { nodes?: number; name?: string; label?: string }) => Promise<Cluster> = clusterLib.startCluster;
export const natsAvailable: () => { ok: boolean; reason: string } = clusterLib.natsAvailable;

export interface PlanOp { k: 'mint' | 'transfer'; from?: number; to: number; amount: bigint }
export interface PlanStep { t: string; first?: number; n?: number; wait?: boolean }
export interface Plan { keys: Buffer[]; steps: PlanStep[]; ops: PlanOp[]; genesisOps: number; complete: boolean }
export const makePlan: (cfg: { seed: number; mode?: string; wal?: boolean; ops?: number }, shardOf?: number[] | null) => Plan =
  planLib.makePlan;
export const modelAfter: (plan: Plan, k: number) => { bal: (bigint | null)[] } = planLib.modelAfter;
export const findPrefix: (plan: Plan, found: (bigint | null)[], lo: number, hi: number) => { k: number; best?: number; bestK?: number } =
  planLib.findPrefix;
const batchBuffer: (plan: Plan, step: PlanStep) => Buffer = childLib.batchBuffer;

/** Replication tests skip (saying why) only when nats-server is not installed; CI installs it. */
export const nats = natsAvailable();
if (!nats.ok) console.warn(`replication tests skipped: ${nats.reason}`);

export const LEDGER = { shards: 4, accountsPerShard: 1000 } as const;

/** A new directory for one test's ledgers, removed after the test file (test/support/tmp.mjs). */
export function tmpRoot(tag: string): string {
  return tmpDir(`gl-repl-${tag}`);
}

let streams = 0;
/** A stream name no other test of this process uses. */
export function streamName(tag: string): string {
  return `${tag}-${process.pid}-${++streams}`;
}

/**
 * Runs plan steps [from, to) against `l` (a Ledger, or a promoted Follower): single ops, batches, sync() (awaited
 * when the step says so), checkpoint(), yields. Returns the index of the next operation.
 */
export async function runSteps(l: Pick<Ledger, 'mint' | 'transfer' | 'mintBatch' | 'transferBatch' | 'sync'> & { checkpoint?: () => Promise<void> },
  plan: Plan, from: number, to: number): Promise<number> {
  let next = 0;
  for (let si = from; si < Math.min(to, plan.steps.length); si++) {
    const s = plan.steps[si];
    try {
      if (s.t === 'mint') {
        const op = plan.ops[s.first!];
        l.mint(plan.keys[op.to], op.amount);
      } else if (s.t === 'transfer') {
        const op = plan.ops[s.first!];
        l.transfer(plan.keys[op.from!], plan.keys[op.to], op.amount);
      }
    } catch (e) {
      if (!(e instanceof LedgerError)) throw e;
      if (['FENCED', 'READ_ONLY', 'CLOSED', 'IO_ERROR', 'CORRUPTION'].includes(e.code)) throw e;
    }
    if (s.t === 'mintBatch') l.mintBatch(batchBuffer(plan, s));
    else if (s.t === 'transferBatch') l.transferBatch(batchBuffer(plan, s));
    else if (s.t === 'sync') {
      const p = l.sync();
      if (s.wait) await p;
      else p.catch(() => {});
    } else if (s.t === 'checkpoint' && l.checkpoint) {
      const p = l.checkpoint();
      if (s.wait) await p;
      else p.catch(() => {});
    } else if (s.t === 'yield') await new Promise((r) => setImmediate(r));
    if (s.n !== undefined) next = s.first! + s.n;
  }
  return next;
}

/** Every account image of `keys` (128 bytes each, zero where absent), the LSN and the supply. */
export function state(l: { getBatch(k: Uint8Array): Uint8Array; stats(): { lsn: bigint; supply: bigint } }, keys: Buffer[]): {
  lsn: bigint; supply: bigint; images: Buffer; digest: string;
} {
  const images = Buffer.from(l.getBatch(Buffer.concat(keys)));
  const s = l.stats();
  return { lsn: s.lsn, supply: s.supply, images, digest: createHash('sha256').update(images).digest('hex') };
}

/** Balances of `keys` (null where absent), in the shape findPrefix takes. */
export function balances(l: { getBatch(k: Uint8Array): Uint8Array }, keys: Buffer[]): (bigint | null)[] {
  const images = Buffer.from(l.getBatch(Buffer.concat(keys)));
  return keys.map((_, i) => {
    const img = images.subarray(i * 128, i * 128 + 128);
    return img.some((b) => b !== 0) ? img.readBigUInt64LE(32) : null;
  });
}

/** Which node leads stream `name` (its index in the cluster), from JetStream's stream info. */
export async function streamLeader(servers: string[], name: string): Promise<number> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers });
  try {
    const jsm = await jetstreamManager(nc, { timeout: 10_000 });
    const si = await jsm.streams.info(name);
    const leader = si.cluster?.leader ?? '';
    const m = /^n(\d+)$/.exec(leader);
    if (!m) throw new Error(`stream ${name} has no leader (${leader})`);
    return Number(m[1]);
  } finally {
    await nc.close();
  }
}

/**
 * The stream's first and last sequence, and the last LSN its last message holds. Asked again for up to 30 s: right
 * after nodes come back the cluster may still be electing leaders (and a loaded machine answers slowly).
 */
export async function streamState(servers: string[], name: string): Promise<{ first: number; last: number; lastLsn: bigint }> {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers, maxReconnectAttempts: -1 });
  const until = Date.now() + 30_000;
  try {
    for (;;) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 5000 });
        const si = await jsm.streams.info(name);
        const m = si.state.last_seq > 0 ? await jsm.streams.getMessage(name, { seq: si.state.last_seq }) : undefined;
        return { first: si.state.first_seq, last: si.state.last_seq, lastLsn: BigInt(m?.header?.get('Gl-Last-Lsn') || '0') };
      } catch (e) {
        if (Date.now() > until) throw e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  } finally {
    await nc.close();
  }
}
