/**
 * What the engines count for monitoring, and the layout of the snapshot an engine hands out (EngineCore.counters():
 * a Float64Array of Counter.SLOTS). native/counters.hpp is the reference; test/core/counters.test.ts holds this file
 * to the constants the addon exports. Counts are exact up to 2^53.
 */
import { BatchStatus, type BatchStatusName } from './errors';

export const Counter = Object.freeze({
  /** Operations by result: OPS + op * STATUS_SLOTS + status byte. */
  OPS: 0,
  STATUS_SLOTS: 16,
  OP_MINT: 0,
  OP_TRANSFER: 1,
  WAL_WRITTEN_BYTES: 32,
  WAL_FSYNCS: 33,
  CORRUPTION: 34,
  /** Committed checkpoints by trigger: CHECKPOINTS + TRIGGER_*. */
  CHECKPOINTS: 35,
  /** Histograms: one count per bucket (not cumulative, +Inf last), then the sum in microseconds. */
  FSYNC_HISTOGRAM: 40,
  CHECKPOINT_HISTOGRAM: 58,
  SLOTS: 75,
  TRIGGER_EXPLICIT: 0,
  TRIGGER_BYTES: 1,
  TRIGGER_INTERVAL: 2,
  TRIGGER_CLOSE: 3,
  TRIGGER_OPEN: 4,
  /** Upper bounds of the histograms' buckets, microseconds (a +Inf bucket follows). */
  FSYNC_BOUNDS_US: Object.freeze([100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000]),
  CHECKPOINT_BOUNDS_US: Object.freeze([1000, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000, 30000000, 60000000, 120000000]),
});

/** What started a checkpoint, by its number in the counters. */
export const CHECKPOINT_TRIGGERS = Object.freeze(['explicit', 'bytes', 'interval', 'close', 'open'] as const);
export type CheckpointTrigger = (typeof CHECKPOINT_TRIGGERS)[number];
export const COUNTED_OPS = Object.freeze(['mint', 'transfer'] as const);
export type CountedOp = (typeof COUNTED_OPS)[number];

export interface HistogramCounts {
  /** Upper bounds, seconds; `counts` has one more entry (+Inf). */
  bounds: readonly number[];
  /** Observations per bucket (not cumulative). */
  counts: number[];
  sumSeconds: number;
  count: number;
}

export interface LedgerCounters {
  /** Operations by op and result: `ok` or the status name in lower case. Only results that happened appear. */
  operations: Record<CountedOp, Partial<Record<string, number>>>;
  walWrittenBytes: number;
  walFsyncs: number;
  corruptionDetected: number;
  checkpoints: Record<CheckpointTrigger, number>;
  fsyncDuration: HistogramCounts;
  checkpointDuration: HistogramCounts;
}

const statusNames: string[] = [];
for (const [name, value] of Object.entries(BatchStatus)) statusNames[value] = name.toLowerCase();

/** The result label of a status byte: `ok` or the status name in lower case. */
export function resultName(status: number): string {
  return statusNames[status] ?? `status_${status}`;
}

/** The status byte of a LedgerError code that is also an operation status (INVALID_BATCH is not). */
export function statusOfCode(code: string): number | undefined {
  return (BatchStatus as Record<string, number>)[code as BatchStatusName];
}

function histogram(c: Float64Array, at: number, boundsUs: readonly number[]): HistogramCounts {
  const counts = Array.from(c.subarray(at, at + boundsUs.length + 1));
  return {
    bounds: boundsUs.map((us) => us / 1e6),
    counts,
    sumSeconds: c[at + boundsUs.length + 1] / 1e6,
    count: counts.reduce((a, b) => a + b, 0),
  };
}

/** Decodes a snapshot. `refused` adds the operations the Ledger refused before the engine saw them (same layout). */
export function decodeCounters(c: Float64Array, refused?: Float64Array): LedgerCounters {
  const operations = { mint: {}, transfer: {} } as LedgerCounters['operations'];
  COUNTED_OPS.forEach((op, o) => {
    for (let st = 0; st < Counter.STATUS_SLOTS; st++) {
      const at = Counter.OPS + o * Counter.STATUS_SLOTS + st;
      const n = c[at] + (refused ? refused[at] : 0);
      if (n > 0) operations[op][resultName(st)] = n;
    }
  });
  const checkpoints = {} as Record<CheckpointTrigger, number>;
  CHECKPOINT_TRIGGERS.forEach((t, i) => { checkpoints[t] = c[Counter.CHECKPOINTS + i]; });
  return {
    operations,
    walWrittenBytes: c[Counter.WAL_WRITTEN_BYTES],
    walFsyncs: c[Counter.WAL_FSYNCS],
    corruptionDetected: c[Counter.CORRUPTION],
    checkpoints,
    fsyncDuration: histogram(c, Counter.FSYNC_HISTOGRAM, Counter.FSYNC_BOUNDS_US),
    checkpointDuration: histogram(c, Counter.CHECKPOINT_HISTOGRAM, Counter.CHECKPOINT_BOUNDS_US),
  };
}

/**
 * A histogram filled on the JS thread (the JS engine's fsyncs and checkpoints): the same buckets as native, written
 * straight into the engine's counters array at `at`.
 */
export function observe(c: Float64Array, at: number, boundsUs: readonly number[], us: number): void {
  let i = 0;
  while (i < boundsUs.length && us > boundsUs[i]) i++;
  c[at + i]++;
  c[at + boundsUs.length + 1] += us;
}
