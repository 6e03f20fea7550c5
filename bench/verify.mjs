#!/usr/bin/env node
// How fast `geoledger verify` reads a stopped ledger (issue 9's verifyLedger): every account record, index page
// and log record, by bytes read per second.
//
//   node bench/verify.mjs [--n 1000000] [--aps <accounts per shard>] [--trials 3]
//
// Populates n accounts (16 shards of --aps, default n / 8: the ledger half full) with WAL off, closes it, then
// runs `node dist/cli.js verify <dir> --json` --trials times, each a fresh process as an operator would, and
// prints the wall time of each run (process start included), the bytes verify read and the median rate, with the
// machine's load average. Print only; no result file.
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs, intArg, makeKeys, tmpDir, removeDir, DIST } from './lib/common.mjs';
import { populate } from './lib/runner.mjs';

const args = parseArgs();
const n = intArg(args, 'n', 1_000_000);
const aps = intArg(args, 'aps', Math.ceil(n / 8));
const trials = intArg(args, 'trials', 3);
const CLI = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');

const { Ledger } = await import(DIST);
const dir = tmpDir('verify');
try {
  const ledger = await Ledger.open(dir, { shards: 16, accountsPerShard: aps, wal: false });
  populate(ledger, makeKeys(n, 7), n);
  await ledger.close();
  console.log(`verify: ${n.toLocaleString('en-US')} accounts, 16 shards x ${aps.toLocaleString('en-US')}; ` +
    `${os.cpus().length} CPUs (${os.cpus()[0]?.model}), Node ${process.version}, load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  const rates = [];
  for (let t = 0; t < trials; t++) {
    const started = performance.now();
    const r = spawnSync(process.execPath, [CLI, 'verify', dir, '--json'], { encoding: 'utf8', maxBuffer: 1 << 26 });
    const ms = performance.now() - started;
    if (r.status !== 0) throw new Error(`verify exited ${r.status}: ${r.stderr || r.stdout}`);
    const report = JSON.parse(r.stdout);
    const mb = report.checked.bytes / 2 ** 20;
    rates.push(mb / (ms / 1000));
    console.log(`  trial ${t + 1}: ${ms.toFixed(0)} ms wall (verify's own ${report.ms.toFixed(0)} ms), ` +
      `${mb.toFixed(0)} MiB read, ${report.checked.accountRecords.toLocaleString('en-US')} records, ` +
      `${report.checked.indexPages.toLocaleString('en-US')} index pages: ${(mb / (ms / 1000)).toFixed(0)} MiB/s`);
  }
  rates.sort((a, b) => a - b);
  console.log(`median ${rates[Math.floor(rates.length / 2)].toFixed(0)} MiB/s (load after: ${os.loadavg()[0].toFixed(1)})`);
} finally {
  removeDir(dir);
}
