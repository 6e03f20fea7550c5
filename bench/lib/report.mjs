// Rendering of a run (bench/results/<mode>.json) into docs/benchmarks.md, docs/bench-chart.svg and the
// README summary table. No dependencies: the chart is a hand-written SVG.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PEERS = ['native', 'js', 'lmdb', 'better-sqlite3', 'classic-level'];
const LABEL = { native: 'native engine', js: 'JS engine', lmdb: 'lmdb', 'better-sqlite3': 'better-sqlite3', 'classic-level': 'classic-level' };
const COLOR = { native: '#d62728', js: '#ff7f0e', lmdb: '#1f77b4', 'better-sqlite3': '#2ca02c', 'classic-level': '#9467bd' };
const PEER_ROWS = [
  ['insert', 'durable', 'insert, durable'],
  ['insert', 'fast', 'insert, not durable'],
  ['get', 'read', 'point read'],
  ['transfer', 'durable', 'transfer, durable'],
  ['transfer', 'fast', 'transfer, not durable'],
];
const WAL_LABEL = { off: 'WAL off', on: 'WAL on (syncEvery 1000)', sync: '`await sync()` every 1,000 ops' };
const SHAPE_LABEL = { one: 'one-by-one', b1000: 'batch of 1,000', b10000: 'batch of 10,000' };

// ------------------------------------------------------------------ numbers
export function stats(row) {
  const v = row.trials.map((t) => t.value).filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { median, min: v[0], max: v[v.length - 1], n: v.length };
}

export function fmtRate(x) {
  if (x === undefined || !Number.isFinite(x)) return '–';
  if (x >= 1e6) return `${(x / 1e6).toFixed(x >= 1e7 ? 1 : 2)}M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(x >= 1e5 ? 0 : 1)}k`;
  return x.toFixed(0);
}
function fmtTick(d) {
  return d >= 1e6 ? `${d / 1e6}M` : d >= 1e3 ? `${d / 1e3}k` : String(d);
}
function fmtMs(x) {
  if (x === undefined || !Number.isFinite(x)) return '–';
  return x >= 100 ? `${x.toFixed(0)} ms` : x >= 10 ? `${x.toFixed(1)} ms` : `${x.toFixed(2)} ms`;
}
function fmtRatio(x) {
  if (x === undefined || !Number.isFinite(x)) return '–';
  if (x >= 10) return `${x.toFixed(0)}×`;
  if (x >= 0.1) return `${x.toFixed(2)}×`;
  return `1/${(1 / x).toFixed(0)}`;
}
function fmtN(n) {
  return n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}K` : String(n);
}
const spread = (s, f = fmtRate) => (s ? (s.n > 1 ? `${f(s.min)} – ${f(s.max)}` : 'one trial') : '');

// ------------------------------------------------------------------ lookups
function index(run) {
  const by = new Map(run.rows.map((r) => [r.id, r]));
  const peer = (bench, mode, c) => by.get(`peer/${bench}/${mode}/${c}`);
  const ops = (e, op, shape, wal) => by.get(`ops/${e}/${op}/${shape}/${wal}`);
  const opens = (e) => run.rows.filter((r) => r.bench === 'ledger-open' && r.engine === e);
  return { by, peer, ops, opens };
}
const med = (row) => (row ? stats(row)?.median : undefined);

function accountsOf(run) {
  const r = run.rows.find((x) => x.bench !== 'ledger-open');
  return r ? r.n : undefined;
}

// ------------------------------------------------------------------ targets
function targets(run) {
  const { peer, ops, opens } = index(run);
  const out = [];
  const t = (issue, what, measured, goal, ok, note = '') => out.push({ issue, what, measured, goal, ok, note });
  const nat = (op, shape, wal) => med(ops('native', op, shape, wal));
  const js = (op, shape, wal) => med(ops('js', op, shape, wal));
  const ge = (x, g) => (x === undefined ? undefined : x >= g);
  const withB10k = (a, b) => `${fmtRate(a)}/s${b === undefined ? '' : ` (${fmtRate(b)}/s)`}`;
  let x = nat('transfer', 'b1000', 'on');
  t(2, 'batch transfer, WAL on (batches of 1,000; 10,000 in brackets)', withB10k(x, nat('transfer', 'b10000', 'on')), '≥ 2M/s', ge(x, 2e6));
  x = nat('transfer', 'b1000', 'off');
  t(2, 'batch transfer, WAL off', withB10k(x, nat('transfer', 'b10000', 'off')), '≥ 5M/s', ge(x, 5e6));
  x = nat('mint', 'b1000', 'on');
  t(2, 'batch mint, WAL on', withB10k(x, nat('mint', 'b10000', 'on')), '≥ 3M/s', ge(x, 3e6));
  x = nat('transfer', 'one', 'on');
  t(2, 'one-by-one transfer, WAL on', `${fmtRate(x)}/s`, '≥ 1.5M/s', ge(x, 1.5e6));
  x = nat('get', 'one', 'on');
  t(2, 'one-by-one get', `${fmtRate(x)}/s`, '≥ 5M/s', ge(x, 5e6));
  x = nat('transfer', 'b1000', 'sync');
  const xm = nat('mint', 'b1000', 'sync');
  t(2, '`sync()` after every 1,000 ops (batch transfer; batch mint in brackets)', `${fmtRate(x)}/s (${fmtRate(xm)}/s)`, '≥ 500k ops/s', ge(x, 5e5));
  const clean = opens('native').filter((r) => r.name === 'open-clean');
  if (clean.length) {
    const worst = Math.max(...clean.map((r) => med(r)));
    t(2, 'open after a clean close', clean.map((r) => `${fmtN(r.n)}: ${fmtMs(med(r))}`).join(', '), '≤ 20 ms, flat in size', worst <= 20);
  }
  const kills = opens('native').filter((r) => r.name === 'open-after-kill');
  if (kills.length) {
    const rates = kills.map((r) => ({ r, rate: medianOf(r.trials.map((q) => q.recordsPerSec)) }));
    const worst = Math.min(...rates.map((q) => q.rate));
    t(2, 'open after kill -9: WAL replay rate', rates.map(({ r, rate }) => `${fmtN(r.n)} accts, ${fmtN(r.walOps)} records: ${fmtRate(rate)}/s`).join('; '), '≥ 2M records/s', worst >= 2e6);
  }
  const bestDurablePeer = Math.max(...['lmdb', 'better-sqlite3', 'classic-level'].map((c) => med(peer('transfer', 'durable', c)) ?? 0));
  x = js('transfer', 'b1000', 'off');
  t(4, 'JS engine: batch transfer, WAL off', `${fmtRate(x)}/s`, '≥ 1M/s', ge(x, 1e6));
  x = med(peer('transfer', 'durable', 'js'));
  t(4, 'JS engine: durable transfers vs best durable peer', x === undefined ? '–' : `${fmtRate(x)}/s = ${fmtRatio(x / bestDurablePeer)} of ${fmtRate(bestDurablePeer)}/s`, '≥ 5×', x === undefined ? undefined : x / bestDurablePeer >= 5);
  // native >= 3x JS on every batch operation
  const ratios = [];
  for (const row of run.rows.filter((r) => r.bench === 'ledger-ops' && r.engine === 'native' && r.shape !== 'one')) {
    const j = med(ops('js', row.op, row.shape, row.wal));
    if (j) ratios.push({ what: `${row.op} ${row.shape} wal ${row.wal}`, r: med(row) / j });
  }
  if (ratios.length) {
    const worst = ratios.reduce((a, b) => (b.r < a.r ? b : a));
    t(4, 'native ÷ JS on every batch operation (worst case shown)', `${fmtRatio(worst.r)} (${worst.what})`, '≥ 3×', worst.r >= 3);
  } else t(4, 'native ÷ JS on every batch operation', '–', '≥ 3×', undefined, 'JS engine not measured');
  x = med(peer('transfer', 'durable', 'native'));
  const xo = nat('transfer', 'b1000', 'on');
  t(4, 'native durable batch transfers vs best durable peer (WAL on, not awaited, in brackets)',
    x === undefined ? '–' : `${fmtRatio(x / bestDurablePeer)} (${fmtRatio((xo ?? NaN) / bestDurablePeer)})`, '≥ 100×', x === undefined ? undefined : x / bestDurablePeer >= 100);
  return out;
}
function medianOf(xs) {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return undefined;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}
const okMark = (ok) => (ok === undefined ? 'not measured' : ok ? 'met' : '**not met**');

// ------------------------------------------------------------------ summary (README)
export function renderSummary(run, { inDocs = false } = {}) {
  const { peer, ops, opens } = index(run);
  const m = run.machine;
  const n = accountsOf(run);
  const present = PEERS.filter((c) => run.rows.some((r) => r.contender === c));
  const lines = [];
  lines.push(`Measured with \`${run.command}\` on ${run.date.slice(0, 10)}: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, Node ${m.node}, ` +
    `${fmtN(n ?? 0)} accounts with random 32-byte keys, batches/transactions of 1,000, ${maxTrials(run) > 1 ? `median of ${maxTrials(run)} fresh-process trials` : 'one fresh-process trial per row'} ` +
    (inDocs ? '(spread, configuration and method below).' : '(details, spread and configuration: [docs/benchmarks.md](docs/benchmarks.md)).'));
  lines.push('');
  lines.push(`| ops/s | ${present.map((c) => LABEL[c]).join(' | ')} |`);
  lines.push(`|---|${present.map(() => '---:').join('|')}|`);
  for (const [bench, mode, label] of PEER_ROWS) {
    const nat = med(peer(bench, mode, 'native'));
    lines.push(`| ${label} | ${present.map((c) => {
      const v = med(peer(bench, mode, c));
      if (v === undefined) return run.skipped?.[c] ? 'n/a' : '–';
      return c === 'native' || !nat ? `**${fmtRate(v)}**` : `${fmtRate(v)} (${fmtRatio(v / nat)})`;
    }).join(' | ')} |`);
  }
  const skippedNames = Object.keys(run.skipped ?? {});
  if (skippedNames.length) lines.push('', `n/a: ${skippedNames.map((c) => `${LABEL[c] ?? c} (${run.skipped[c]})`).join('; ')}.`);
  lines.push('', 'Durable: every batch is on stable storage when the call returns (ledger: `await sync()` after each batch). ' +
    'Not durable: each store\'s fast setting (ledger: WAL on, group commit in the background). Brackets: ratio to the native engine.');
  // Ledger-only summary (native engine)
  const engines = ['native', 'js'].filter((e) => run.rows.some((r) => r.engine === e));
  if (engines.length) {
    lines.push('');
    lines.push(`| ledger, ops/s | ${engines.map((e) => `${LABEL[e]} WAL off | ${LABEL[e]} WAL on | ${LABEL[e]} sync/1,000`).join(' | ')} |`);
    lines.push(`|---|${engines.map(() => '---:|---:|---:').join('|')}|`);
    for (const [op, shape] of [['mint', 'one'], ['transfer', 'one'], ['get', 'one'], ['mint', 'b1000'], ['transfer', 'b1000'], ['get', 'b1000'], ['mint', 'b10000'], ['transfer', 'b10000'], ['get', 'b10000']]) {
      if (!engines.some((e) => ['off', 'on', 'sync'].some((w) => ops(e, op, shape, w)))) continue;
      lines.push(`| ${op} ${SHAPE_LABEL[shape]} | ${engines.map((e) => ['off', 'on', 'sync'].map((w) => fmtRate(med(ops(e, op, shape, w)))).join(' | ')).join(' | ')} |`);
    }
    lines.push('', 'sync/1,000: `await ledger.sync()` after every 1,000 operations (after every batch for batches of 10,000).');
    const o = opens('native');
    if (o.length) {
      const sizes = [...new Set(o.map((r) => r.n))].sort((a, b) => a - b);
      const cell = (sz, name, f) => { const r = o.find((x) => x.n === sz && x.name === name); return r ? f(r) : '–'; };
      lines.push('');
      lines.push(`| native engine, opening | ${sizes.map((s) => `${fmtN(s)} accounts`).join(' | ')} |`);
      lines.push(`|---|${sizes.map(() => '---:').join('|')}|`);
      lines.push(`| open after a clean close | ${sizes.map((s) => cell(s, 'open-clean', (r) => fmtMs(med(r)))).join(' | ')} |`);
      lines.push(`| open after kill -9 (WAL records replayed) | ${sizes.map((s) => cell(s, 'open-after-kill', (r) => `${fmtMs(med(r))} (${fmtN(r.walOps)})`)).join(' | ')} |`);
      lines.push(`| WAL replay rate | ${sizes.map((s) => cell(s, 'open-after-kill', (r) => `${fmtRate(medianOf(r.trials.map((q) => q.recordsPerSec)))} records/s`)).join(' | ')} |`);
      lines.push(`| index rebuild | ${sizes.map((s) => cell(s, 'index-rebuild', (r) => `${fmtRate(med(r))} accounts/s`)).join(' | ')} |`);
    }
  }
  return lines.join('\n');
}
function maxTrials(run) {
  return Math.max(...run.rows.filter((r) => r.bench !== 'ledger-open').map((r) => r.trials.length), 0);
}

// ------------------------------------------------------------------ full report
export function renderReport({ full, quick }) {
  const L = [];
  L.push('# Benchmarks');
  L.push('');
  L.push('<!-- Generated by bench/run.mjs from bench/results/*.json; edit bench/lib/report.mjs or bench/notes.md instead. -->');
  L.push('');
  L.push('Produced by `npm run bench` (`node bench/run.mjs`); `npm run bench -- --quick` is the one-minute version. ' +
    'Every number below was measured by that command on the machine it names; nothing is copied from elsewhere.');
  L.push('');
  const main = full ?? quick;
  if (!main) {
    L.push('No run recorded yet.');
    return L.join('\n') + '\n';
  }
  if (!full) L.push('> Only a quick-mode run is recorded (100k accounts, short timings): run `npm run bench` for the full table.\n');
  L.push(...renderRun(main));
  const notes = path.join(HERE, '..', 'notes.md');
  if (fs.existsSync(notes)) { L.push(''); L.push(fs.readFileSync(notes, 'utf8').trim()); }
  L.push('');
  L.push(...methodText());
  if (full && quick) {
    L.push('');
    L.push('## Quick mode');
    L.push('');
    L.push(`The last \`--quick\` run (${fmtN(accountsOf(quick) ?? 0)} accounts, short timings, ${maxTrials(quick)} trials; ` +
      `${(quick.elapsedMs / 1000).toFixed(0)} s in all), for comparison with the full run above:`);
    L.push('');
    L.push(renderSummary(quick, { inDocs: true }));
  }
  return L.join('\n') + '\n';
}

function renderRun(run) {
  const L = [];
  const m = run.machine;
  const { peer, ops, opens } = index(run);
  L.push('## Machine and run');
  L.push('');
  L.push('| | |');
  L.push('|---|---|');
  L.push(`| CPU | ${m.cpu} (\`os.cpus()[0].model\`), ${m.cores} cores |`);
  L.push(`| RAM | ${m.ramGiB} GiB |`);
  L.push(`| OS | ${m.platform} |`);
  L.push(`| Node.js | ${m.node} |`);
  L.push(`| data directories | \`${m.tmpdir}\`, ${m.fs} |`);
  L.push(`| date | ${run.date} |`);
  if (run.commit) L.push(`| code | commit ${run.commit}${run.built ? `; dist/ built ${run.built.dist}, addon built ${run.built.addon ?? '–'} (copied at the start, so every trial ran the same build)` : ''} |`);
  L.push(`| command | \`${run.command}\` |`);
  for (const r of run.reruns ?? []) {
    const same = r.built && run.built && r.built.dist === run.built.dist && r.built.addon === run.built.addon;
    L.push(`| re-run | \`${r.command}\` on ${r.date} (${(r.elapsedMs / 1000).toFixed(0)} s, load ${r.load.start.toFixed(2)}–${r.load.max.toFixed(2)}): ` +
      `${r.rows.length} rows replaced, ${same ? 'same build' : `build: commit ${r.commit}, dist/ ${r.built?.dist}, addon ${r.built?.addon}`} |`);
  }
  L.push(`| duration | ${(run.elapsedMs / 1000).toFixed(0)} s |`);
  if (run.load) L.push(`| load average (1 min) | ${run.load.start.toFixed(2)} at the start, ${run.load.end.toFixed(2)} at the end${run.load.max !== undefined ? `, at most ${run.load.max.toFixed(2)} between trials` : ''} |`);
  L.push(`| workload | ${fmtN(accountsOf(run) ?? 0)} accounts, random 32-byte keys, batches/transactions of 1,000, ${maxTrials(run)} trial${maxTrials(run) > 1 ? 's' : ''} per row, each in a fresh process |`);
  L.push('');
  L.push('## Summary');
  L.push('');
  L.push(renderSummary(run, { inDocs: true }));
  L.push('');
  L.push('![ops/s per contender, log scale](bench-chart.svg)');
  L.push('');
  // Peer tables
  L.push('## Peer comparison');
  L.push('');
  L.push('ops/s: median of the trials; spread: slowest – fastest trial; × native: this ÷ the native engine in the same row ' +
    '(1/100 means the native engine is 100 times faster).');
  for (const bench of ['insert', 'get', 'transfer']) {
    L.push('');
    L.push(`### ${bench === 'get' ? 'Point reads' : bench === 'insert' ? 'Inserts (new accounts)' : 'Transfers (read two balances, write both)'}`);
    L.push('');
    const modes = bench === 'get' ? ['read'] : ['durable', 'fast'];
    const head = modes.map((md) => (md === 'read' ? 'ops/s | spread | × native' : `${md === 'durable' ? 'durable' : 'not durable'} ops/s | spread | × native`));
    L.push(`| contender | ${head.join(' | ')} |`);
    L.push(`|---|${modes.map(() => '---:|---|---:').join('|')}|`);
    for (const c of PEERS) {
      const cells = modes.map((md) => {
        const row = peer(bench, md, c);
        const s = row && stats(row);
        const nat = med(peer(bench, md, 'native'));
        if (!s) return `${run.skipped?.[c] ? 'n/a' : '–'} | | `;
        return `${fmtRate(s.median)} | ${spread(s)} | ${nat ? fmtRatio(s.median / nat) : '–'}`;
      });
      L.push(`| ${LABEL[c]} | ${cells.join(' | ')} |`);
    }
    if (bench === 'insert') {
      const capped = run.rows.filter((r) => r.bench === 'insert' && r.trials.some((t) => t.ops < r.n));
      if (capped.length) {
        L.push('');
        L.push(`Rows timed over fewer than all ${fmtN(accountsOf(run))} inserts (quick-mode time cap; median accounts inserted): ` +
          capped.map((r) => `${LABEL[r.contender]} ${r.mode} ${fmtN(medianOf(r.trials.map((t) => t.ops)))}`).join(', ') + '.');
      }
    }
  }
  // Ledger ops
  const engines = ['native', 'js'].filter((e) => run.rows.some((r) => r.bench === 'ledger-ops' && r.engine === e));
  if (engines.length) {
    L.push('');
    L.push('## Ledger operations');
    L.push('');
    L.push(`${fmtN(accountsOf(run) ?? 0)} existing accounts; mints credit random existing accounts, transfers move 1 between random accounts, reads hit random accounts. ` +
      'One-by-one: `mint(key, 1)`, `transfer(a, b, 1)`, `get(key)` (returns an Account object), `balance(key)` called from JS on Buffer views, 1,000 calls per timed iteration. ' +
      'Batches: `mintBatch`/`transferBatch`/`getBatch` on Buffers built before timing. ' +
      '"sync" = `await ledger.sync()` after every 1,000 operations (after every batch for batches of 10,000). ' +
      'fsyncs/1k: fsync calls per 1,000 operations during the run (from `stats().fsyncs`).');
    for (const e of engines) {
      L.push('');
      L.push(`### ${LABEL[e]}`);
      L.push('');
      L.push(`| operation | ${['off', 'on', 'sync'].map((w) => `${WAL_LABEL[w]} | spread | fsyncs/1k`).join(' | ')} |${e === 'js' ? ' native ÷ JS (WAL on) |' : ''}`);
      L.push(`|---|${['off', 'on', 'sync'].map(() => '---:|---|---:').join('|')}|${e === 'js' ? '---:|' : ''}`);
      for (const op of ['mint', 'transfer', 'get', 'balance']) {
        for (const shape of ['one', 'b1000', 'b10000']) {
          const rowsHere = ['off', 'on', 'sync'].map((w) => ops(e, op, shape, w));
          if (!rowsHere.some(Boolean)) continue;
          const cells = rowsHere.map((row) => {
            const s = row && stats(row);
            if (!s) return ' – | | ';
            const f = medianOf(row.trials.map((t) => t.fsyncsPer1kOps));
            return `${fmtRate(s.median)} | ${spread(s)} | ${f === undefined ? '–' : f.toFixed(f < 10 ? 2 : 0)}`;
          });
          let extra = '';
          if (e === 'js') {
            const nv = med(ops('native', op, shape, 'on'));
            const jv = med(ops('js', op, shape, 'on'));
            extra = ` ${nv && jv ? fmtRatio(nv / jv) : '–'} |`;
          }
          L.push(`| \`${op}\` ${SHAPE_LABEL[shape]} | ${cells.join(' | ')} |${extra}`);
        }
      }
    }
  }
  // Opening
  const openEngines = ['native', 'js'].filter((e) => opens(e).length);
  if (openEngines.length) {
    L.push('');
    L.push('## Opening and recovery');
    L.push('');
    L.push('Capacity: 16 shards × 1M accounts for every size in the full run (16 × 100K in quick mode), so only the data grows. Each size: create, populate, close; then `Ledger.open` in fresh processes (module already imported; the time of `await Ledger.open` only). ' +
      'Open after a clean close: median of 3 processes. Index rebuild: every `index_*.bin` deleted after the clean close, one open (mode `rebuild`). ' +
      'Open after kill -9: a writer process opens the ledger, applies N mints to existing accounts in batches of 10,000 (WAL on, syncEvery 1000), then ' +
      '`process.kill(process.pid, "SIGKILL")`; one open replays the WAL (mode `replay`). Values: median over trials (spread in brackets when there are several).');
    for (const e of openEngines) {
      const rows = opens(e);
      const sizes = [...new Set(rows.map((r) => r.n))].sort((a, b) => a - b);
      L.push('');
      L.push(`### ${LABEL[e]}`);
      L.push('');
      L.push('| accounts | populate (setup) | on disk | open after clean close | index rebuild | WAL records at kill -9 | open after kill -9 | replay rate |');
      L.push('|---:|---:|---:|---:|---:|---:|---:|---:|');
      for (const sz of sizes) {
        const get = (name) => rows.find((r) => r.n === sz && r.name === name);
        const c = get('open-clean');
        const rb = get('index-rebuild');
        const k = get('open-after-kill');
        const cs = c && stats(c);
        const ks = k && stats(k);
        const rbs = rb && stats(rb);
        const pop = c ? medianOf(c.trials.map((t) => t.populateMs)) : undefined;
        const disk = c ? medianOf(c.trials.map((t) => t.diskMB)) : undefined;
        const rr = k ? k.trials.map((t) => t.recordsPerSec) : [];
        L.push(`| ${fmtN(sz)} | ${pop ? `${(pop / 1000).toFixed(1)} s` : '–'} | ${disk ? `${disk.toFixed(0)} MiB` : '–'} | ` +
          `${cs ? fmtMs(cs.median) + (cs.n > 1 ? ` (${spread(cs, fmtMs)})` : '') : '–'} | ` +
          `${rbs ? `${fmtRate(rbs.median)} accounts/s (${fmtMs(medianOf(rb.trials.map((t) => t.openMs)))})` : '–'} | ` +
          `${k ? fmtN(medianOf(k.trials.map((t) => t.walRecordsReplayed))) : '–'} | ` +
          `${ks ? fmtMs(ks.median) + (ks.n > 1 ? ` (${spread(ks, fmtMs)})` : '') : '–'} | ` +
          `${rr.length ? `${fmtRate(medianOf(rr))} records/s` : '–'} |`);
      }
    }
  }
  // Targets
  L.push('');
  L.push('## Targets (issues 2 and 4)');
  L.push('');
  L.push('| issue | target | measured | goal | |');
  L.push('|---|---|---|---|---|');
  for (const t of targets(run)) L.push(`| ${t.issue} | ${t.what} | ${t.measured} | ${t.goal} | ${okMark(t.ok)}${t.note ? ` (${t.note})` : ''} |`);
  // Configurations
  L.push('');
  L.push('## How each contender is configured');
  L.push('');
  L.push(...configText(run));
  const sk = Object.entries(run.skipped ?? {});
  if (sk.length || run.failures?.length) {
    L.push('');
    L.push('## Skipped and failed');
    L.push('');
    for (const [c, why] of sk) L.push(`- ${LABEL[c] ?? c}: skipped: ${why}`);
    for (const f of run.failures ?? []) L.push(`- ${f.tag} (trial ${f.round + 1}): ${f.error.replace(/\|/g, '\\|').slice(0, 400)}`);
  }
  return L;
}

function configText(run) {
  const cfg = (bench, mode, c) => run.rows.find((r) => r.bench === bench && r.mode === mode && r.contender === c)?.config;
  const L = [];
  L.push('Durable means: when the batch call returns (or its promise resolves) the batch is on stable storage and survives a power loss. ' +
    'Not durable means each store\'s recommended fast setting: the batch survives a crash of the process (kill -9) but the last ' +
    'moments can be lost on power loss. Both settings are the ones each project documents for exactly these two needs; nothing else is tuned ' +
    'except the SQLite page cache (below).');
  L.push('');
  L.push('| contender | durable | not durable |');
  L.push('|---|---|---|');
  for (const c of PEERS) {
    const d = cfg('transfer', 'durable', c) ?? cfg('insert', 'durable', c);
    const f = cfg('transfer', 'fast', c) ?? cfg('insert', 'fast', c);
    if (!d && !f) continue;
    L.push(`| ${LABEL[c]} | ${d ?? '–'} | ${f ?? '–'} |`);
  }
  L.push('');
  L.push('Why this is fair:');
  L.push('');
  L.push('- **Same work.** Every contender gets the same seeded keys, the same random read indices and transfer pairs, the same batches of 1,000, ' +
    'one transaction (or atomic batch) per batch, and checks a transfer\'s funds before writing. Key Buffers (and for the ledger the packed batch ' +
    'Buffers) are built before timing for everyone; value encoding and statement execution are timed for everyone.');
  L.push('- **Same durability.** The ledger\'s durable row awaits `sync()` after every batch, exactly as the peers fsync at every commit; its fast row ' +
    'is the WAL with background group commit, which like the peers\' fast settings survives kill -9 but not necessarily a power loss. ' +
    '`wal: false` (which can lose everything since the last checkpoint on a crash) appears only in the ledger-only tables, never against the peers.');
  L.push('- **lmdb**: binary keys and values (no msgpack), `getBinaryFast` for reads (its documented zero-copy read), `putSync` inside `transactionSync`. ' +
    'Durable uses `overlappingSync: false`, LMDB\'s classic commit that fsyncs before returning; on this machine it was faster than the default ' +
    '(`overlappingSync: true` plus `await db.flushed` after each batch), so the peer gets the better of its two durable options. Fast is `noSync: true`, its documented setting for that.');
  L.push('- **better-sqlite3**: `journal_mode=WAL` with `synchronous=FULL` (durable: the WAL is fsynced at every commit) or `synchronous=OFF` (fast), the ' +
    'settings SQLite documents for each; `WITHOUT ROWID` so the 32-byte key is the clustered primary key (no second index); prepared statements; ' +
    '`cache_size` raised to 128 MiB so that the whole table is cached in memory like the other stores (the default 2 MiB would make it re-read pages).');
  L.push('- **classic-level**: default LevelDB options (its write buffer and block cache are already sized for this), `sync: true` on every batch write ' +
    'for durable, `sync: false` (the default) for fast. Reads use `getMany` per batch; a transfer batch is one `getMany` of its 2,000 keys, the ' +
    'transfers applied in order in JS (an account can appear twice in a batch), then one atomic `batch()` of the changed accounts.');
  L.push('- **Ledger**: capacity 16 shards × max(n, 65,536) accounts, i.e. the defaults (16 × 1M) for the 1M-account run and the same ' +
    'load factor (1/16) when `--quick` shrinks the workload; `syncEvery: 1000`. Both engines run the same code (bench/lib/contenders.mjs).');
  return L;
}

function methodText() {
  return [
    '## Method',
    '',
    '- **Fresh process per trial.** bench/run.mjs spawns `node --expose-gc bench/<insert|get|transfer|ledger-ops>.mjs ...` for every trial and reads one ' +
    'JSON line back; trials of all rows are interleaved (round 1 of every row, then round 2, ...) so a slow phase of the machine does not land on one row.',
    '- **Warm-up before timing.** Key and batch Buffers are filled (so their pages are touched) before timing. Reads and transfers: the store is populated ' +
    'untimed, every account is read once, then tinybench runs its own warm-up iterations before the timed ones. Inserts: 2% of the accounts ' +
    '(at least 20 batches) are inserted untimed first; the timed inserts then go into fresh keys, so the store\'s own first-touch cost for new ' +
    'accounts is part of an insert, as it is in production.',
    '- **ops/s** = operations in the timed iterations ÷ their total time (tinybench `totalTime`), per trial; the tables give the median trial and the ' +
    'slowest – fastest trial. Reads and transfers cycle through n prebuilt random batches for the tinybench time budget (2 s; 0.25 s quick). ' +
    'Inserts insert all n accounts once (quick mode: at most about 2 s of batches per row, estimated from the warm-up).',
    '- **Checks.** Every row verifies its work after timing: batch status bytes all OK, no missing reads, inserted balances present, and for ' +
    'transfers the balances of 200 sampled accounts equal a replay of the applied transfers in JS.',
    '- **Temporary directories** under `os.tmpdir()`, removed after each trial.',
  ];
}

// ------------------------------------------------------------------ chart
function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function renderChart(run) {
  const { peer, ops } = index(run);
  const panels = [];
  const series = PEERS.filter((c) => run.rows.some((r) => r.contender === c));
  panels.push({
    title: `Peer comparison: ops/s, ${fmtN(accountsOf(run) ?? 0)} accounts, batches of 1,000 (log scale; whiskers: slowest – fastest trial)`,
    series,
    groups: PEER_ROWS.map(([b, md, label]) => ({ label, bars: series.map((c) => ({ s: c, st: peer(b, md, c) && stats(peer(b, md, c)) })) })),
  });
  const engines = ['native', 'js'].filter((e) => run.rows.some((r) => r.bench === 'ledger-ops' && r.engine === e));
  if (engines.length) {
    const groups = [];
    for (const [op, shape] of [['mint', 'one'], ['transfer', 'one'], ['get', 'one'], ['mint', 'b1000'], ['transfer', 'b1000'], ['get', 'b1000'], ['mint', 'b10000'], ['transfer', 'b10000'], ['get', 'b10000']]) {
      for (const w of op === 'get' ? ['on'] : ['off', 'on', 'sync']) {
        if (!engines.some((e) => ops(e, op, shape, w))) continue;
        groups.push({ label: `${op} ${shape === 'one' ? '1-by-1' : shape.replace('b', '×')}${op === 'get' ? '' : `, ${w === 'sync' ? (shape === 'b10000' ? 'sync/10k' : 'sync/1k') : `WAL ${w}`}`}`,
          bars: engines.map((e) => ({ s: e, st: ops(e, op, shape, w) && stats(ops(e, op, shape, w)) })) });
      }
    }
    panels.push({ title: 'Ledger operations: ops/s (log scale)', series: engines, groups });
  }
  // Layout
  const W = 960, left = 190, right = 40, barH = 11, gap = 2, groupGap = 10, titleH = 44, axisH = 28;
  const all = panels.flatMap((p) => p.groups.flatMap((g) => g.bars.map((b) => b.st).filter(Boolean)));
  const lo = Math.pow(10, Math.floor(Math.log10(Math.max(1, Math.min(...all.map((s) => s.min), 1e3)))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...all.map((s) => s.max), 1e4))));
  const x = (v) => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (W - left - right);
  const out = [];
  let y = 0;
  const m = run.machine;
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">geometric-ledger benchmarks</text>`);
  out.push(`<text x="${W / 2}" y="40" text-anchor="middle" font-size="11" fill="#555">${esc(`${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB, Node ${m.node}, ${run.date.slice(0, 10)}, \`${run.command}\``)}</text>`);
  y = 56;
  for (const p of panels) {
    out.push(`<text x="10" y="${y + 16}" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
    // legend
    let lx = 10;
    const ly = y + 30;
    for (const s of p.series) {
      out.push(`<rect x="${lx}" y="${ly - 9}" width="10" height="10" fill="${COLOR[s]}"/><text x="${lx + 14}" y="${ly}" font-size="11">${esc(LABEL[s])}</text>`);
      lx += 24 + LABEL[s].length * 6.5;
    }
    const missing = Object.keys(run.skipped ?? {}).filter((c) => LABEL[c]);
    if (missing.length) out.push(`<text x="${lx + 10}" y="${ly}" font-size="10.5" fill="#888">${esc(`not available: ${missing.map((c) => LABEL[c]).join(', ')} (see docs/benchmarks.md)`)}</text>`);
    y += titleH;
    const top = y;
    const rowsH = p.groups.reduce((h, g) => h + g.bars.length * (barH + gap) + groupGap, 0);
    // grid
    for (let d = lo; d <= hi; d *= 10) {
      const gx = x(d);
      out.push(`<line x1="${gx.toFixed(1)}" y1="${top}" x2="${gx.toFixed(1)}" y2="${top + rowsH}" stroke="#ddd"/>`);
      out.push(`<text x="${gx.toFixed(1)}" y="${top + rowsH + 14}" text-anchor="middle" font-size="10" fill="#555">${fmtTick(d)}</text>`);
    }
    for (const g of p.groups) {
      const gh = g.bars.length * (barH + gap);
      out.push(`<text x="${left - 8}" y="${(y + gh / 2 + 4).toFixed(1)}" text-anchor="end" font-size="11">${esc(g.label)}</text>`);
      for (const b of g.bars) {
        if (b.st) {
          const w = x(b.st.median) - left;
          out.push(`<rect x="${left}" y="${y}" width="${Math.max(1, w).toFixed(1)}" height="${barH}" fill="${COLOR[b.s]}"><title>${esc(`${LABEL[b.s]}: ${fmtRate(b.st.median)} ops/s (${fmtRate(b.st.min)} – ${fmtRate(b.st.max)})`)}</title></rect>`);
          if (b.st.n > 1) {
            const cy = y + barH / 2;
            out.push(`<line x1="${x(b.st.min).toFixed(1)}" y1="${cy}" x2="${x(b.st.max).toFixed(1)}" y2="${cy}" stroke="#000" stroke-width="1"/>`);
            out.push(`<line x1="${x(b.st.min).toFixed(1)}" y1="${cy - 3}" x2="${x(b.st.min).toFixed(1)}" y2="${cy + 3}" stroke="#000"/>`);
            out.push(`<line x1="${x(b.st.max).toFixed(1)}" y1="${cy - 3}" x2="${x(b.st.max).toFixed(1)}" y2="${cy + 3}" stroke="#000"/>`);
          }
          out.push(`<text x="${(Math.max(x(b.st.median), b.st.n > 1 ? x(b.st.max) : 0) + 4).toFixed(1)}" y="${y + barH - 2}" font-size="9.5">${fmtRate(b.st.median)}</text>`);
        } else {
          out.push(`<text x="${left + 4}" y="${y + barH - 2}" font-size="9.5" fill="#888">${esc(LABEL[b.s])}: ${run.skipped?.[b.s] ? 'not available' : 'not measured'}</text>`);
        }
        y += barH + gap;
      }
      y += groupGap;
    }
    y = top + rowsH + axisH;
  }
  const H = Math.ceil(y + 4);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">\n` +
    `<rect width="${W}" height="${H}" fill="#fff"/>\n${out.join('\n')}\n</svg>\n`;
}
