// Helpers for the durability suite (crash and power-loss tests).
//
// The machinery lives in plain ESM under test/fixtures so that scripts/soak.mjs can run the very same
// scenarios under bare node:
//   plan.mjs       seeded PRNG, deterministic workloads, the pure-JS model, prefix search, state hashing
//   harness.mjs    powercut mount/cut, child processes, progress side-channel, recovery verification,
//                  and the scenarios (kill -9, power cut, GL_CRASH_AT crash points)
//   workload.mjs   child: runs a plan until killed, reports acknowledged / synced / checkpointed ops
//   crashpoint.mjs child: drives checkpoint()/close() into a GL_CRASH_AT point
//   bgcheckpoint.mjs child: crashes a background checkpoint at a GL_CRASH_AT point while operations go on
//   child.mjs      what the children share: command line, ledger options, progress side file
// This file gives them types and adds what the vitest files share (seeds, skip reasons, assertions).
// @ts-ignore -- plain ESM module without type declarations, typed below
import * as harness from '../fixtures/harness.mjs';
// @ts-ignore -- plain ESM module without type declarations, typed below
import * as planLib from '../fixtures/plan.mjs';

export type Balances = (bigint | null)[];
export interface Op {
  k: 'mint' | 'transfer';
  from?: number;
  to: number;
  amount: bigint;
}
export interface Plan {
  keys: Buffer[];
  steps: { t: string; first?: number; n?: number; wait?: boolean }[];
  ops: Op[];
  genesisOps: number;
  complete: boolean;
}
export interface PlanConfig {
  seed: number;
  mode: 'mixed' | 'cross';
  wal: boolean;
  ops: number;
}
export interface Progress {
  ack: number;
  sync: number;
  ckptStart: number;
  ckptDone: number;
}
export type EngineName = 'native' | 'js';
/** Ledger options every scenario takes (besides seed): the engine (default GL_ENGINE, else native) and the log's. */
export interface LedgerKnobs {
  engine?: EngineName;
  syncEvery?: number;
  syncIntervalMs?: number;
  /** default: the ledger's (8 x syncEvery) */
  maxUnsyncedRecords?: number;
  checkpointEveryBytes?: number;
  shards?: number;
  aps?: number;
}
export interface ScenarioOptions extends LedgerKnobs {
  seed: number;
  mode?: 'mixed' | 'cross';
  wal?: boolean;
  ops?: number;
  shards?: number;
  aps?: number;
  keep?: number;
  paceEvery?: number;
  paceMs?: number;
  /** a tenth of the plan's sync() and checkpoint() steps: long runs of unsynced operations (plan.mjs) */
  sparse?: boolean;
  /** kill after an acknowledged-operation count drawn from [killFrom * ops, ops] (default 0) */
  killFrom?: number;
  scenario?: string;
}
export interface CrashPointOptions extends LedgerKnobs {
  seed: number;
  point: string;
  wal?: boolean;
  powercut?: { keep: number } | null;
  ops?: number;
}
export interface BgCheckpointOptions extends LedgerKnobs {
  seed: number;
  point: string;
  /** 'call': checkpoint() not awaited (default); 'auto': a write past checkpointEveryBytes starts it */
  trigger?: 'call' | 'auto';
  powercut?: { keep: number } | null;
  ops?: number;
}
export interface ScenarioResult {
  label: string;
  root: string;
  problems: string[];
  k: number | null;
  progress?: Progress;
  accept?: { lo: number; hi: number; [k: string]: unknown } | { exactly: number[] };
  /** power cut: log records of acknowledged operations the recovered state lacks (transfers 2, mints 1) */
  lostRecords?: number;
  /** bgCheckpointScenario: runs it took to get one with operations in flight */
  attempts?: number;
  recovery?: { mode: string; walRecordsReplayed?: number; walBytesDropped?: number; [k: string]: unknown } | null;
  cut?: string;
  target?: number;
}
export interface Powercut {
  backing: string;
  mnt: string;
  cut(): Promise<string>;
  dispose(): Promise<void>;
}
export interface Availability {
  ok: boolean;
  reason: string;
}

// ---- model and state
export const U64_MAX: bigint = planLib.U64_MAX;
export const GENESIS: number = planLib.GENESIS;
export const makeRng: (seed: number) => {
  u32(): number;
  float(): number;
  int(n: number): number;
  range(lo: number, hi: number): number;
  chance(p: number): boolean;
} = planLib.makeRng;
export const makePlan: (cfg: PlanConfig, shardOf?: number[] | null) => Plan = planLib.makePlan;
export const Model: new (n?: number) => {
  bal: Balances;
  minted: bigint;
  applied: number;
  apply(op: Op): string;
  clone(): any;
  total(): bigint;
  accounts(): number;
} = planLib.Model;
export const modelAfter: (plan: Plan, k: number) => InstanceType<typeof Model> = planLib.modelAfter;
export const stateHash: (bal: Balances) => string = planLib.stateHash;
export const findPrefix: (plan: Plan, found: Balances, lo: number, hi: number) => { k: number; best?: number; bestK?: number } =
  planLib.findPrefix;
export const readState: (ledger: unknown, keys: Buffer[], problems: string[]) => Balances = harness.readState;

// ---- powercut and processes
export const POWERCUT: string = harness.POWERCUT;
export const mountPowercut: (o: { backing: string; mnt: string; keep?: number; seed?: number }) => Promise<Powercut> =
  harness.mountPowercut;
export const powercutAvailable: () => Availability = harness.powercutAvailable;
export const ledgerAvailable: () => Availability = harness.ledgerAvailable;

// ---- scenarios
export const CRASH_POINTS: string[] = harness.CRASH_POINTS;
export const BACKGROUND_POINTS: string[] = harness.BACKGROUND_POINTS;
/** The engines the durability files run scenarios for: GL_ENGINES (see test/core/helpers.ts), else both. */
export const ENGINES: EngineName[] = (() => {
  const env = process.env.GL_ENGINES;
  if (env) return env.split(',').filter((e): e is EngineName => (harness.ENGINES as string[]).includes(e));
  return harness.ENGINES;
})();
export const maxUnsyncedOf: (o: LedgerKnobs) => number = harness.maxUnsyncedOf;
export const COMMITTED_POINTS: Set<string> = harness.COMMITTED_POINTS;
export const killScenario: (o: ScenarioOptions) => Promise<ScenarioResult> = harness.killScenario;
export const powercutScenario: (o: ScenarioOptions) => Promise<ScenarioResult> = harness.powercutScenario;
export const crashPointScenario: (o: CrashPointOptions) => Promise<ScenarioResult> = harness.crashPointScenario;
export const bgCheckpointScenario: (o: BgCheckpointOptions) => Promise<ScenarioResult> = harness.bgCheckpointScenario;
export interface RecoveryCrashOptions extends LedgerKnobs {
  seed: number;
  /** where the first crash happens (GL_CRASH_AT, inside checkpoint()/close() of the crashpoint child) */
  point: string;
  /** GL_CRASH_AT while the ledger recovers from the first crash */
  second: string;
  wal?: boolean;
  powercut?: boolean;
  keep1?: number;
  keep2?: number;
  ops?: number;
}
export const recoveryCrashScenario: (o: RecoveryCrashOptions) => Promise<ScenarioResult & { secondFired?: boolean }> =
  harness.recoveryCrashScenario;

/**
 * Seeds for a test: fixed by default so that CI is reproducible; GL_SEED=<n> shifts them all,
 * GL_SEED=random picks a fresh base (printed). The child's kill moment depends on timing, so a
 * replay with the same seed reproduces the workload and the kill target, not the exact instant.
 */
const base = (() => {
  const env = process.env.GL_SEED;
  if (!env) return 1000;
  if (env === 'random') {
    const b = (Math.random() * 2 ** 31) >>> 0;
    console.log(`durability: GL_SEED=random -> base seed ${b} (replay with GL_SEED=${b})`);
    return b;
  }
  return Number(env) >>> 0;
})();
export function seeds(count: number, salt: number): number[] {
  return Array.from({ length: count }, (_, i) => (base + salt * 100 + i) >>> 0);
}

/** Fails the test with every broken rule, each a sentence naming scenario, seed, expected and found. */
export function expectRulesHeld(r: ScenarioResult): void {
  if (r.problems.length > 0) {
    throw new Error(`${r.problems.length} durability rule(s) broken:\n\n${r.problems.join('\n\n')}`);
  }
}

/** One line for the test log: where the crash landed and what recovery did. */
export function summary(r: ScenarioResult): string {
  const p = r.progress ? ` ack=${r.progress.ack} sync=${r.progress.sync} ckpt=${r.progress.ckptDone}` +
    (r.progress.ckptStart >= 0 ? ` ckptStart=${r.progress.ckptStart}` : '') : '';
  const lost = (r.lostRecords !== undefined ? ` lostRecords=${r.lostRecords}` : '') + ((r.attempts ?? 1) > 1 ? ` attempts=${r.attempts}` : '');
  const rec = r.recovery ? ` recovery=${r.recovery.mode} replayed=${r.recovery.walRecordsReplayed} dropped=${r.recovery.walBytesDropped}` : '';
  return `${r.label}:${p} -> k=${r.k}${lost}${rec}${r.cut ? ` | ${r.cut}` : ''}`;
}

/** Whether to skip the power-cut tests of a file (prints why, once per file). */
export function skipPowercut(file: string): boolean {
  const pc = powercutAvailable();
  if (!pc.ok) console.warn(`durability (${file}): power-cut tests are SKIPPED: ${pc.reason}`);
  return !pc.ok;
}

/**
 * Scenarios of a file that may run at once (GL_DURABILITY_JOBS, default 2): they spend most of their time
 * waiting for fsyncs, the powercut daemon and child processes, so two at a time nearly halve a file's time on
 * two cores. Use with it.concurrent: `it.concurrent(name, () => jobs(() => scenario(...)))`.
 */
export function limiter(max: number): <T>(work: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (work) => {
    if (running >= max) await new Promise<void>((r) => waiting.push(r));
    running++;
    try {
      return await work();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}
export const jobs = limiter(Math.max(1, Number(process.env.GL_DURABILITY_JOBS ?? 2)));
