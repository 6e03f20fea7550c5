/**
 * Prometheus metrics of a ledger through prom-client. Nothing is counted here: on each scrape every metric reads
 * the ledger's own counts (Ledger.counters(), one call into the engine, and Ledger.stats()), so operations pay for
 * nothing but the engine's one array increment. Histograms come from the engine's buckets: a prom-client
 * Histogram can only observe, never be set, so every metric here is a small object the registry accepts through
 * registerMetric, whose get() returns what prom-client's own metrics return (name, help, type, values).
 */
import { register as globalRegistry, type Registry } from 'prom-client';
import { LedgerError } from './errors';
import type { Ledger } from './ledger';
import { COUNTED_OPS, CHECKPOINT_TRIGGERS, type HistogramCounts, type LedgerCounters } from './counters';

export const METRIC_PREFIX = 'geoledger_';

type MetricType = 'counter' | 'gauge' | 'histogram';

/** Every metric registerMetrics exposes: name (without the prefix), type, help. */
const METRICS = [
  ['operations_total', 'counter', 'Operations by op (mint, transfer; batch operations one by one) and result (ok or the status name in lower case)'],
  ['accounts', 'gauge', 'Accounts in the ledger'],
  ['capacity', 'gauge', 'Accounts the ledger can hold (all shards)'],
  ['wal_size_bytes', 'gauge', 'Log bytes since the last committed checkpoint (both generations)'],
  ['wal_written_bytes_total', 'counter', 'Log record bytes written since open'],
  ['wal_fsyncs_total', 'counter', 'Group fsyncs of the log since open'],
  ['wal_fsync_duration_seconds', 'histogram', 'Duration of the group fsyncs of the log'],
  ['lsn', 'gauge', 'LSN of the last operation'],
  ['durable_lsn', 'gauge', 'Every operation up to this LSN is on stable storage'],
  ['checkpoints_total', 'counter', 'Committed checkpoints since open by trigger (explicit, bytes, interval, close, open)'],
  ['checkpoint_duration_seconds', 'histogram', 'Duration of committed checkpoints, hand-over to commit'],
  ['checkpoint_last_success_timestamp_seconds', 'gauge', 'When the last checkpoint committed, seconds since the Unix epoch (0: none since open)'],
  ['recovery_duration_seconds', 'gauge', 'Duration of the last open (recovery included)'],
  ['recovery_wal_records', 'gauge', 'Log records replayed by the last open'],
  ['read_only', 'gauge', '1 once an I/O failure has turned the ledger read-only'],
  ['corruption_detected_total', 'counter', 'Damaged account records met by operations since open'],
  ['backup_last_success_timestamp_seconds', 'gauge', 'When the last backup() succeeded, seconds since the Unix epoch (0: none since open)'],
  ['supply', 'gauge', 'Total minted (the sum of all balances)'],
] as const satisfies readonly (readonly [string, MetricType, string])[];

/** The full names of every metric, prefix included (histograms add _bucket, _sum and _count to theirs). */
export const METRIC_NAMES: readonly string[] = Object.freeze(METRICS.map(([name]) => METRIC_PREFIX + name));

/** Each metric's type by full name: the one list the alert rules, the dashboard and the runbook are held to. */
export const METRIC_TYPES: Readonly<Record<string, MetricType>> = Object.freeze(
  Object.fromEntries(METRICS.map(([name, type]) => [METRIC_PREFIX + name, type])),
);

export interface MetricsOptions {
  /** The prom-client Registry to register with (default: prom-client's global `register`). */
  registry?: Registry;
  /** Labels added to every series of this ledger, e.g. { ledger: 'main' }: several ledgers can share a registry. */
  labels?: Record<string, string>;
}

type Labels = Record<string, string | number>;
interface Value {
  value: number;
  labels: Labels;
  metricName?: string;
}

interface Source {
  ledger: Ledger;
  labels: Record<string, string>;
  key: string;
}

interface Snapshot {
  source: Source;
  counters: LedgerCounters;
  stats: ReturnType<Ledger['stats']>;
}

/** The ledgers registered with one registry, and their snapshot for the scrape in progress. */
class Group {
  readonly sources = new Set<Source>();
  #cache: Snapshot[] | undefined;

  /**
   * One read of each ledger per scrape: the registry calls every metric's get() in one synchronous loop, so the
   * snapshot is kept until the microtasks after it.
   */
  snapshots(): Snapshot[] {
    if (this.#cache) return this.#cache;
    const out: Snapshot[] = [];
    for (const source of this.sources) {
      try {
        out.push({ source, counters: source.ledger.counters(), stats: source.ledger.stats() });
      } catch (e) {
        // A closed ledger has nothing to report: it leaves the registry.
        if (e instanceof LedgerError && e.code === 'CLOSED') this.sources.delete(source);
        else throw e;
      }
    }
    this.#cache = out;
    queueMicrotask(() => { this.#cache = undefined; });
    return out;
  }
}

const groups = new WeakMap<Registry, Group>();
const RESERVED_LABELS = new Set(['op', 'result', 'trigger', 'le']);
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function seconds(ms: number): number {
  return ms / 1000;
}

function histogramValues(name: string, h: HistogramCounts, labels: Labels): Value[] {
  const out: Value[] = [];
  let cumulative = 0;
  h.bounds.forEach((le, i) => {
    cumulative += h.counts[i];
    out.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative });
  });
  out.push({ metricName: `${name}_bucket`, labels: { ...labels, le: '+Inf' }, value: h.count });
  out.push({ metricName: `${name}_sum`, labels: { ...labels }, value: h.sumSeconds });
  out.push({ metricName: `${name}_count`, labels: { ...labels }, value: h.count });
  return out;
}

/** The values of one metric for one ledger. */
function valuesOf(name: (typeof METRICS)[number][0], fullName: string, s: Snapshot): Value[] {
  const labels = s.source.labels;
  const one = (value: number): Value[] => [{ value, labels: { ...labels } }];
  const { counters: c, stats: st, source } = s;
  switch (name) {
    case 'operations_total': {
      const out: Value[] = [];
      for (const op of COUNTED_OPS) {
        // `ok` always, so that a rate over it exists from the first scrape; other results once they happened.
        const results = { ok: 0, ...c.operations[op] };
        for (const [result, n] of Object.entries(results)) out.push({ value: n ?? 0, labels: { ...labels, op, result } });
      }
      return out;
    }
    case 'accounts': return one(st.accounts);
    case 'capacity': return one(st.shards.reduce((n, x) => n + x.capacity, 0));
    case 'wal_size_bytes': return one(st.walBytes);
    case 'wal_written_bytes_total': return one(c.walWrittenBytes);
    case 'wal_fsyncs_total': return one(c.walFsyncs);
    case 'wal_fsync_duration_seconds': return histogramValues(fullName, c.fsyncDuration, labels);
    case 'lsn': return one(Number(st.lsn));
    case 'durable_lsn': return one(Number(st.durableLsn));
    case 'checkpoints_total':
      return CHECKPOINT_TRIGGERS.map((trigger) => ({ value: c.checkpoints[trigger], labels: { ...labels, trigger } }));
    case 'checkpoint_duration_seconds': return histogramValues(fullName, c.checkpointDuration, labels);
    case 'checkpoint_last_success_timestamp_seconds': return one(seconds(st.lastCheckpointAt));
    case 'recovery_duration_seconds': return one(seconds(source.ledger.recovery.ms));
    case 'recovery_wal_records': return one(source.ledger.recovery.walRecordsReplayed);
    case 'read_only': return one(st.readOnly ? 1 : 0);
    case 'corruption_detected_total': return one(c.corruptionDetected);
    case 'backup_last_success_timestamp_seconds': return one(seconds(source.ledger.lastBackupAt));
    case 'supply': return one(Number(st.supply));
  }
}

function install(registry: Registry, group: Group): void {
  for (const [name, type, help] of METRICS) {
    const fullName = METRIC_PREFIX + name;
    const metric = {
      name: fullName,
      help,
      type,
      aggregator: 'sum' as const,
      get: async () => ({
        name: fullName,
        help,
        type,
        aggregator: 'sum' as const,
        values: group.snapshots().flatMap((s) => valuesOf(name, fullName, s)),
      }),
      reset: () => {},
    };
    // registerMetric wants a prom-client Metric; this object has everything the registry reads from one.
    registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
  }
}

/**
 * Exposes `ledger` through prom-client: the metrics of METRIC_NAMES, read on each scrape. Several ledgers may share
 * a registry when their labels differ. Returns a function that removes this ledger from the registry (a closed
 * ledger leaves it by itself at the next scrape).
 */
export function registerMetrics(ledger: Ledger, options: MetricsOptions = {}): () => void {
  if (ledger === null || typeof ledger !== 'object' || typeof (ledger as Ledger).counters !== 'function') {
    throw new LedgerError('INVALID_OPTIONS', 'registerMetrics: the first argument must be a Ledger');
  }
  if (options === null || typeof options !== 'object') throw new LedgerError('INVALID_OPTIONS', 'registerMetrics: options must be an object');
  const registry = options.registry ?? globalRegistry;
  if (registry === null || typeof registry !== 'object' || typeof registry.registerMetric !== 'function') {
    throw new LedgerError('INVALID_OPTIONS', 'registerMetrics: registry must be a prom-client Registry');
  }
  const labels = options.labels ?? {};
  if (labels === null || typeof labels !== 'object') throw new LedgerError('INVALID_OPTIONS', 'registerMetrics: labels must be an object');
  for (const [name, value] of Object.entries(labels)) {
    if (!LABEL_NAME.test(name) || name.startsWith('__') || RESERVED_LABELS.has(name)) {
      throw new LedgerError('INVALID_OPTIONS', `registerMetrics: ${name} cannot be a label name here`);
    }
    if (typeof value !== 'string') throw new LedgerError('INVALID_OPTIONS', `registerMetrics: label ${name} must be a string`);
  }
  ledger.stats(); // a closed ledger is CLOSED here, not a silent gap later
  const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));
  let group = groups.get(registry);
  // registry.clear() drops the metrics: they are installed again, for the ledgers still registered.
  if (group && registry.getSingleMetric(METRIC_NAMES[0]) === undefined) install(registry, group);
  if (group) {
    for (const s of group.sources) {
      if (s.key === key) {
        throw new LedgerError('INVALID_OPTIONS', `registerMetrics: a ledger with labels ${key} is registered with this registry already`);
      }
    }
  } else {
    group = new Group();
    install(registry, group);
    groups.set(registry, group);
  }
  const source: Source = { ledger, labels: { ...labels }, key };
  group.sources.add(source);
  const g = group;
  return () => { g.sources.delete(source); };
}
