// What the ledger counts (Ledger.counters(), both engines) and its Prometheus exposition (registerMetrics).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { registerMetrics, METRIC_NAMES, METRIC_TYPES } from '../../dist/index.js';
import { Counter } from '../../dist/counters.js';
import { engines, expectLedgerError, flipBit, key, MANUAL_SYNC, mintOps, open, tmpDir, transferOps, waitFor } from './helpers';

const require = createRequire(import.meta.url);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const WAL_RECORD_SIZE = 224;

function addonCounters(): Record<string, number | number[]> {
  const override = process.env.GL_ADDON;
  const addon = override ? require(path.resolve(override)) : require('bindings')({ bindings: 'geometric_ledger', module_root: ROOT });
  return addon.counters;
}

/** promtool from Debian's `prometheus` package (.ci/run installs it), or why it cannot be used. */
const promtool = (() => {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? { ok: true, reason: '' } : { ok: false, reason: 'promtool is not installed (Debian package prometheus)' };
})();
if (!promtool.ok) console.warn(`metrics.test.ts: the promtool check is SKIPPED: ${promtool.reason}`);

/** The value of one series of an exposition: `name{labels}` as written, or undefined. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

describe('the counters', () => {
  it('src/counters.ts has the layout native/counters.hpp exports', () => {
    const native = addonCounters();
    expect(Object.keys(native).length).toBeGreaterThan(10);
    for (const [name, value] of Object.entries(native)) {
      expect((Counter as Record<string, unknown>)[name], name).toEqual(value);
    }
  });
});

describe.each(engines)('%s engine: counters', (engine) => {
  it('count every operation by result, refused ones included, the log bytes written, fsyncs and checkpoints by trigger', async () => {
    const dir = tmpDir('gl-counters');
    const l = await open(dir, engine, MANUAL_SYNC);
    try {
      const a = key(1), b = key(2), c = key(3);
      l.mint(a, 100n);
      l.mint(b, 5n);
      expectLedgerError(() => l.mint(a, 0n), 'INVALID_AMOUNT');
      expectLedgerError(() => l.mint('not a key', 1n), 'INVALID_PUBKEY');
      expectLedgerError(() => l.mint(a, (1n << 64n) - 1n), 'OVERFLOW');
      l.transfer(a, c, 10n);
      expectLedgerError(() => l.transfer(a, a, 1n), 'SAME_ACCOUNT');
      expectLedgerError(() => l.transfer(key(9), a, 1n), 'ACCOUNT_NOT_FOUND');
      expectLedgerError(() => l.transfer(b, a, 6n), 'INSUFFICIENT_FUNDS');
      expectLedgerError(() => l.transfer(b, a, -1), 'INVALID_AMOUNT');
      // Batches: every operation counted under its op, amount 0 refused by the engine itself.
      expect([...l.mintBatch(mintOps([[c, 1n], [c, 0n]]))]).toEqual([0, 2]);
      expect([...l.transferBatch(transferOps([[c, a, 1n], [c, c, 1n], [key(8), a, 1n]]))]).toEqual([0, 3, 4]);
      expectLedgerError(() => l.mintBatch(new Uint8Array(41)), 'INVALID_BATCH'); // no operation: not counted

      let n = l.counters();
      expect(n.operations).toEqual({
        mint: { ok: 3, invalid_amount: 2, invalid_pubkey: 1, overflow: 1 },
        transfer: { ok: 2, same_account: 2, account_not_found: 2, insufficient_funds: 1, invalid_amount: 1 },
      });
      // a mint logs one record, a transfer two
      expect(n.walWrittenBytes).toBe((3 + 2 * 2) * WAL_RECORD_SIZE);
      expect(n.checkpoints).toEqual({ explicit: 0, bytes: 0, interval: 0, close: 0, open: 1 }); // the new ledger's
      expect(n.checkpointDuration.count).toBe(1);
      const fsyncsBefore = n.walFsyncs;

      await l.sync();
      await l.checkpoint();
      n = l.counters();
      expect(n.walFsyncs).toBeGreaterThan(fsyncsBefore);
      expect(n.fsyncDuration.count).toBe(n.walFsyncs);
      expect(n.fsyncDuration.sumSeconds).toBeGreaterThan(0);
      expect(n.fsyncDuration.counts.length).toBe(n.fsyncDuration.bounds.length + 1);
      expect(n.checkpoints.explicit).toBe(1);
      expect(n.checkpointDuration.count).toBe(2);
      expect(n.corruptionDetected).toBe(0);
      expect(l.stats().supply).toBe(106n);
    } finally {
      await l.close();
    }
    // Counters are since open: a clean reopen starts from zero (and checkpoints nothing).
    const again = await open(dir, engine, MANUAL_SYNC);
    try {
      expect(again.recovery.mode).toBe('clean');
      const n = again.counters();
      expect(n.operations).toEqual({ mint: {}, transfer: {} });
      expect(Object.values(n.checkpoints).reduce((x, y) => x + y, 0)).toBe(0);
      expect(again.stats().supply).toBe(106n);
    } finally {
      await again.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('count checkpoints started by the log size (bytes) and by the interval', async () => {
    const dir = tmpDir('gl-counters');
    const l = await open(dir, engine, { checkpointEveryBytes: 4096, checkpointIntervalMs: 0 });
    try {
      for (let i = 0; i < 40; i++) l.mint(key(i), 1n); // 40 records: past 4096 bytes
      expect(await waitFor(() => !l.stats().checkpointInProgress && l.counters().checkpoints.bytes >= 1, 5000)).toBe(true);
    } finally {
      await l.close();
    }
    const m = await open(dir, engine, { checkpointIntervalMs: 50 });
    try {
      m.mint(key(1), 1n);
      expect(await waitFor(() => m.counters().checkpoints.interval >= 1, 5000)).toBe(true);
      expect(m.counters().checkpoints.bytes).toBe(0);
    } finally {
      await m.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('count damaged account records met by operations', async () => {
    const dir = tmpDir('gl-counters');
    let l = await open(dir, engine, { shards: 1 });
    l.mint(key(1), 7n);
    await l.close();
    flipBit(path.join(dir, 'shard_000.bin'), 33); // slot 0: one bit of the balance
    l = await open(dir, engine, { shards: 1 });
    try {
      expectLedgerError(() => l.get(key(1)), 'CORRUPTION');
      expectLedgerError(() => l.mint(key(1), 1n), 'CORRUPTION');
      const n = l.counters();
      expect(n.corruptionDetected).toBe(2);
      expect(n.operations.mint).toEqual({ corruption: 1 });
    } finally {
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.each(engines)('%s engine: registerMetrics', (engine) => {
  it('the exposition has every metric of the issue, prefixed geoledger_, and its values are the ledger\'s', async () => {
    const dir = tmpDir('gl-metrics');
    const l = await open(dir, engine, MANUAL_SYNC);
    const registry = new Registry();
    try {
      registerMetrics(l, { registry, labels: { ledger: 'main' } });
      l.mint(key(1), 10n);
      l.mint(key(2), (1n << 64n) - 1n);
      l.transfer(key(1), key(3), 4n);
      expectLedgerError(() => l.transfer(key(1), key(3), 7n), 'INSUFFICIENT_FUNDS');
      expectLedgerError(() => l.mint(key(1), 0), 'INVALID_AMOUNT');
      await l.sync();
      await l.checkpoint();
      const text = await registry.metrics();
      for (const name of METRIC_NAMES) {
        expect(name.startsWith('geoledger_')).toBe(true);
        expect(text, name).toContain(`# TYPE ${name} `);
      }
      expect(METRIC_NAMES).toEqual([
        'operations_total', 'accounts', 'capacity', 'wal_size_bytes', 'wal_written_bytes_total', 'wal_fsyncs_total',
        'wal_fsync_duration_seconds', 'lsn', 'durable_lsn', 'checkpoints_total', 'checkpoint_duration_seconds',
        'checkpoint_last_success_timestamp_seconds', 'recovery_duration_seconds', 'recovery_wal_records', 'read_only',
        'corruption_detected_total', 'backup_last_success_timestamp_seconds', 'supply',
      ].map((n) => `geoledger_${n}`));
      // The types the alert rules, dashboard and runbook are checked with (METRIC_TYPES) are the exposition's.
      expect(Object.keys(METRIC_TYPES)).toEqual([...METRIC_NAMES]);
      for (const [name, type] of Object.entries(METRIC_TYPES)) expect(text, name).toContain(`# TYPE ${name} ${type}\n`);
      const s = l.stats();
      const v = (series: string) => sample(text, series);
      expect(v('geoledger_operations_total{ledger="main",op="mint",result="ok"}')).toBe(2);
      expect(v('geoledger_operations_total{ledger="main",op="mint",result="invalid_amount"}')).toBe(1);
      expect(v('geoledger_operations_total{ledger="main",op="transfer",result="ok"}')).toBe(1);
      expect(v('geoledger_operations_total{ledger="main",op="transfer",result="insufficient_funds"}')).toBe(1);
      expect(v('geoledger_accounts{ledger="main"}')).toBe(3);
      expect(v('geoledger_capacity{ledger="main"}')).toBe(4 * 1000);
      expect(v('geoledger_lsn{ledger="main"}')).toBe(3);
      expect(v('geoledger_durable_lsn{ledger="main"}')).toBe(3);
      expect(v('geoledger_wal_written_bytes_total{ledger="main"}')).toBe(4 * WAL_RECORD_SIZE);
      expect(v('geoledger_wal_fsyncs_total{ledger="main"}')).toBe(s.fsyncs);
      expect(v('geoledger_wal_fsync_duration_seconds_count{ledger="main"}')).toBe(s.fsyncs);
      expect(v('geoledger_wal_fsync_duration_seconds_bucket{ledger="main",le="+Inf"}')).toBe(s.fsyncs);
      expect(v('geoledger_checkpoints_total{ledger="main",trigger="explicit"}')).toBe(1);
      expect(v('geoledger_checkpoints_total{ledger="main",trigger="open"}')).toBe(1);
      expect(v('geoledger_checkpoint_duration_seconds_count{ledger="main"}')).toBe(2);
      expect(v('geoledger_checkpoint_last_success_timestamp_seconds{ledger="main"}')).toBe(s.lastCheckpointAt / 1000);
      expect(v('geoledger_read_only{ledger="main"}')).toBe(0);
      expect(v('geoledger_corruption_detected_total{ledger="main"}')).toBe(0);
      expect(v('geoledger_backup_last_success_timestamp_seconds{ledger="main"}')).toBe(0);
      expect(v('geoledger_recovery_wal_records{ledger="main"}')).toBe(0);
      expect(v('geoledger_supply{ledger="main"}')).toBe(Number(10n + (1n << 64n) - 1n));
      // Buckets are cumulative and end at the count.
      const buckets = text.split('\n').filter((x) => x.startsWith('geoledger_checkpoint_duration_seconds_bucket'))
        .map((x) => Number(x.split(' ')[1]));
      expect(buckets.length).toBe(Counter.CHECKPOINT_BOUNDS_US.length + 1);
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]).toBeGreaterThanOrEqual(buckets[i - 1]);
      expect(buckets.at(-1)).toBe(2);
    } finally {
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!promtool.ok)('the exposition passes promtool check metrics', async () => {
    const dir = tmpDir('gl-metrics');
    const l = await open(dir, engine);
    const registry = new Registry();
    try {
      registerMetrics(l, { registry, labels: { ledger: 'main' } });
      l.mint(key(1), 10n);
      await l.sync();
      const r = spawnSync('promtool', ['check', 'metrics'], { input: await registry.metrics(), encoding: 'utf8' });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
    } finally {
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('several ledgers share a registry by their labels; a closed one leaves it; bad options are INVALID_OPTIONS', async () => {
    const a = await open(tmpDir('gl-metrics'), engine);
    const b = await open(tmpDir('gl-metrics'), engine);
    const registry = new Registry();
    try {
      registerMetrics(a, { registry, labels: { ledger: 'a' } });
      const unregisterB = registerMetrics(b, { registry, labels: { ledger: 'b' } });
      expectLedgerError(() => registerMetrics(b, { registry, labels: { ledger: 'a' } }), 'INVALID_OPTIONS');
      expectLedgerError(() => registerMetrics(a, { registry, labels: { op: 'x' } }), 'INVALID_OPTIONS');
      expectLedgerError(() => registerMetrics(a, { registry, labels: { 'bad-name': 'x' } }), 'INVALID_OPTIONS');
      expectLedgerError(() => registerMetrics(a, { registry, labels: { n: 1 as unknown as string } }), 'INVALID_OPTIONS');
      expectLedgerError(() => registerMetrics(a, { registry: {} as Registry }), 'INVALID_OPTIONS');
      expectLedgerError(() => registerMetrics({} as typeof a), 'INVALID_OPTIONS');
      a.mint(key(1), 1n);
      b.mint(key(1), 2n);
      b.mint(key(2), 2n);
      let text = await registry.metrics();
      expect(sample(text, 'geoledger_operations_total{ledger="a",op="mint",result="ok"}')).toBe(1);
      expect(sample(text, 'geoledger_operations_total{ledger="b",op="mint",result="ok"}')).toBe(2);
      unregisterB();
      text = await registry.metrics();
      expect(sample(text, 'geoledger_accounts{ledger="b"}')).toBeUndefined();
      await a.close();
      text = await registry.metrics();
      expect(sample(text, 'geoledger_accounts{ledger="a"}')).toBeUndefined();
      expect(text).toContain('# TYPE geoledger_accounts gauge');
    } finally {
      await a.close();
      await b.close();
      fs.rmSync(a.dir, { recursive: true, force: true });
      fs.rmSync(b.dir, { recursive: true, force: true });
    }
  });
});
