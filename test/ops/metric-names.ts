import { METRIC_TYPES } from '../../dist/index.js';

/**
 * The metric names (prefix geoledger_) and their types that the alert rules (ops/alerts.yml), the Grafana dashboard
 * (ops/grafana-dashboard.json) and the runbook (docs/operations.md) are held to: registerMetrics' own list
 * (src/metrics.ts); test/core/metrics.test.ts holds that list to the issue's names and to the exposition.
 */
export const METRICS: Readonly<Record<string, 'counter' | 'gauge' | 'histogram'>> = METRIC_TYPES;

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
