/**
 * The metric names of issue 9 (prefix geoledger_) and their types: the one list the alert rules
 * (ops/alerts.yml), the Grafana dashboard (ops/grafana-dashboard.json) and the runbook (docs/operations.md) are
 * held to. Taken from the text until registerMetrics (src/metrics.ts, the other half of the issue)
 * is merged; then this list comes from there, and a test holds the exposition to it.
 */
export const METRICS: Record<string, 'counter' | 'gauge' | 'histogram'> = {
  geoledger_operations_total: 'counter',
  geoledger_accounts: 'gauge',
  geoledger_capacity: 'gauge',
  geoledger_wal_size_bytes: 'gauge',
  geoledger_wal_written_bytes_total: 'counter',
  geoledger_wal_fsyncs_total: 'counter',
  geoledger_wal_fsync_duration_seconds: 'histogram',
  geoledger_lsn: 'gauge',
  geoledger_durable_lsn: 'gauge',
  geoledger_checkpoints_total: 'counter',
  geoledger_checkpoint_duration_seconds: 'histogram',
  geoledger_checkpoint_last_success_timestamp_seconds: 'gauge',
  geoledger_recovery_duration_seconds: 'gauge',
  geoledger_recovery_wal_records: 'gauge',
  geoledger_read_only: 'gauge',
  geoledger_corruption_detected_total: 'counter',
  geoledger_backup_last_success_timestamp_seconds: 'gauge',
  geoledger_supply: 'gauge',
};

/** Series suffixes a histogram exposes. */
const HISTOGRAM_SERIES = ['_bucket', '_sum', '_count'];

/**
 * Every geoledger_ series name a PromQL text uses, each with the metric it belongs to (undefined when it is
 * no metric of the list: a name not exported, or a histogram suffix on something that is no histogram).
 */
export function seriesIn(promql: string): { series: string; metric: string | undefined }[] {
  return [...new Set(promql.match(/\bgeoledger_[a-z0-9_]+/g) ?? [])].map((series) => {
    if (METRICS[series] !== undefined) return { series, metric: series };
    const suffix = HISTOGRAM_SERIES.find((s) => series.endsWith(s));
    const base = suffix ? series.slice(0, -suffix.length) : undefined;
    return { series, metric: base !== undefined && METRICS[base] === 'histogram' ? base : undefined };
  });
}
