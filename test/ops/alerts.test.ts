// The operator's files of issue 9: the alert rules (ops/alerts.yml, checked and unit-tested with promtool),
// the Grafana dashboard and the runbook, all held to the one list of metric names (metric-names.ts).
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { METRICS, seriesIn } from './metric-names';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const read = (f: string): string => fs.readFileSync(`${ROOT}/${f}`, 'utf8');
const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
const noPromtool = promtool.error !== undefined || promtool.status !== 0;

/** The PromQL expressions of the rules file (one `expr:` each, plain or folded over several lines). */
function ruleExprs(yaml: string): string[] {
  const out: string[] = [];
  const lines = yaml.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)expr:\s*(.*)$/.exec(lines[i]);
    if (!m) continue;
    if (m[2] !== '>-' && m[2] !== '|') {
      out.push(m[2]);
      continue;
    }
    const body: string[] = [];
    while (i + 1 < lines.length && (lines[i + 1].trim() === '' || lines[i + 1].search(/\S/) > m[1].length)) body.push(lines[++i].trim());
    out.push(body.join(' '));
  }
  return out;
}

function dashboardExprs(): { panel: string; expr: string }[] {
  const d = JSON.parse(read('ops/grafana-dashboard.json'));
  return (d.panels as { title: string; type: string; targets?: { expr: string }[] }[])
    .filter((p) => p.type !== 'row')
    .flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));
}

describe('alert rules, dashboard and runbook', () => {
  it.skipIf(noPromtool)('promtool check rules accepts ops/alerts.yml', () => {
    const r = spawnSync('promtool', ['check', 'rules', `${ROOT}/ops/alerts.yml`], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS: 7 rules found/);
  });

  it.skipIf(noPromtool)('promtool test rules: each seed threshold fires past its value and not at it', () => {
    const r = spawnSync('promtool', ['test', 'rules', `${ROOT}/ops/alerts.test.yml`], { encoding: 'utf8' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
  });

  it('the seed\'s four thresholds are rules over the issue\'s metric names', () => {
    const yaml = read('ops/alerts.yml');
    const exprs = ruleExprs(yaml);
    expect(exprs).toHaveLength((yaml.match(/- alert:/g) ?? []).length);
    expect(exprs).toContain('geoledger_recovery_duration_seconds > 5'); // CRITICAL restart_time > 5s
    expect(exprs).toContain('geoledger_wal_size_bytes > 1e9'); // WARNING wal_file_size > 1GB
    expect(exprs.some((e) => e.includes('time() - geoledger_checkpoint_last_success_timestamp_seconds > 120'))).toBe(true);
    expect(exprs.some((e) => e.includes('geoledger_corruption_detected_total'))).toBe(true); // account_count_mismatch
    const unknown = exprs.flatMap(seriesIn).filter((s) => s.metric === undefined).map((s) => s.series);
    expect(unknown).toEqual([]);
  });

  it('every metric the dashboard uses is one of the issue\'s metric names, and every name has a panel', () => {
    const exprs = dashboardExprs();
    expect(exprs.length).toBeGreaterThan(10);
    const used = exprs.flatMap((e) => seriesIn(e.expr).map((s) => ({ ...s, panel: e.panel })));
    expect(used.filter((s) => s.metric === undefined).map((s) => `${s.panel}: ${s.series}`)).toEqual([]);
    const shown = new Set(used.map((s) => s.metric));
    expect(Object.keys(METRICS).filter((m) => !shown.has(m))).toEqual([]);
  });

  it('the runbook explains every metric', () => {
    const doc = read('docs/operations.md');
    expect(Object.keys(METRICS).filter((m) => !doc.includes(`\`${m}`))).toEqual([]);
  });

  it('the name check itself tells names of the list from others', () => {
    expect(seriesIn('rate(geoledger_wal_fsync_duration_seconds_bucket[5m])')).toEqual([
      { series: 'geoledger_wal_fsync_duration_seconds_bucket', metric: 'geoledger_wal_fsync_duration_seconds' },
    ]);
    expect(seriesIn('geoledger_accounts_bucket + geoledger_wal_bytes')).toEqual([
      { series: 'geoledger_accounts_bucket', metric: undefined },
      { series: 'geoledger_wal_bytes', metric: undefined },
    ]);
  });
});
