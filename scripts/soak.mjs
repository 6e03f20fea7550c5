#!/usr/bin/env node
// Crash and power-loss soak: runs the durability scenarios of test/durability with fresh random seeds
// until the time is up, printing every seed and scenario so that any failure can be replayed.
//
//   npm run soak -- --minutes 30                  (or: node scripts/soak.mjs --minutes 30)
//   node scripts/soak.mjs --minutes 5 --scenario powercut,crash-in-recovery --jobs 2
//   node scripts/soak.mjs --replay powercut:123456789        one scenario, one seed, then exit
//   node scripts/soak.mjs --minutes 10 --scenario bg-checkpoint,bg-checkpoint-powercut,powerloss-bound
//   options: --minutes N (default 10)  --jobs N (default 1)  --stop (at the first failure)
//            --scenario a,b,...  (default: all; see SCENARIOS below)  --seed N (first seed; default random)
//            --engine native|js  (default: each run draws one from its seed)
// Every parameter of a run (engine, mode, wal, syncEvery, op count, keep, crash points, ...) is derived from
// its seed, so `--replay <scenario>:<seed>` runs the same workload, kill target and power-cut randomness
// (pass the same --engine if the run had one).
// The kill instant itself depends on timing; a failure that does not replay at once usually does within
// a few runs of the same seed. Exit code 1 if any run failed. Needs `npm run build` (and the addon).
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const h = await import(path.join(here, '../test/fixtures/harness.mjs'));
const { makeRng } = await import(path.join(here, '../test/fixtures/plan.mjs'));

const args = {};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  if (!a.startsWith('--')) continue;
  const next = process.argv[i + 1];
  if (next === undefined || next.startsWith('--')) args[a.slice(2)] = true;
  else (args[a.slice(2)] = next), i++;
}

const CHECKPOINT_POINTS = h.CRASH_POINTS.filter((p) => p.startsWith('checkpoint:'));
const pick = (r, xs) => xs[r.int(xs.length)];
if (args.engine !== undefined && !h.ENGINES.includes(args.engine)) {
  console.error(`soak: --engine must be one of ${h.ENGINES.join(', ')}`);
  process.exit(2);
}
// The engine of a run: --engine, else drawn from the seed (a stream of its own: the other parameters of a
// seed are what they were before engines were drawn).
const engineOf = (seed) => args.engine ?? pick(makeRng(seed ^ 0x656e67), h.ENGINES);
const keepOf = (r) => pick(r, [0, 0, 0.5, Math.round((0.3 + 0.4 * r.float()) * 100) / 100, Math.round(r.float() * 100) / 100]);

// Log options of a background-checkpoint run: what the child writes between its sync() and checkpoint()
// (some 200 records) must still be unsynced at the call, so that the checkpoint's first step has a group
// fsync to wait for while operations go on (syncEvery and maxUnsyncedRecords above it, no early timer).
const bgLog = (r) => ({
  syncEvery: pick(r, [1000, 4000]), syncIntervalMs: pick(r, [undefined, 60_000]), maxUnsyncedRecords: pick(r, [undefined, 400, 2000]),
});

// name -> { powercut: needs FUSE, run(seed) }. Parameters come from the seed only.
const SCENARIOS = {
  kill: {
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.killScenario({
        seed, engine: engineOf(seed), mode: 'mixed', wal: true, ops: r.range(500, 6000),
        syncEvery: pick(r, [1, 4, 16, 64, 1000]), syncIntervalMs: pick(r, [undefined, 2, 20, 1000]), paceEvery: pick(r, [0, 0, 4, 16]),
      });
    },
  },
  'kill-cross': {
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.killScenario({ seed, engine: engineOf(seed), mode: 'cross', wal: true, ops: r.range(500, 6000), syncEvery: pick(r, [1, 16, 1000]), paceEvery: pick(r, [0, 8]) });
    },
  },
  'kill-nowal': {
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.killScenario({ seed, engine: engineOf(seed), mode: pick(r, ['mixed', 'cross']), wal: false, ops: r.range(300, 3000), paceEvery: pick(r, [0, 8, 16]) });
    },
  },
  powercut: {
    powercut: true,
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.powercutScenario({ seed, engine: engineOf(seed), mode: 'mixed', wal: true, keep: keepOf(r), ops: r.range(500, 4000), syncEvery: pick(r, [1, 16, 128, 1000]), syncIntervalMs: pick(r, [undefined, 5, 50]) });
    },
  },
  'powercut-cross': {
    powercut: true,
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.powercutScenario({ seed, engine: engineOf(seed), mode: 'cross', wal: true, keep: keepOf(r), ops: r.range(500, 4000), syncEvery: pick(r, [16, 1000]) });
    },
  },
  'powercut-nowal': {
    powercut: true,
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.powercutScenario({ seed, engine: engineOf(seed), mode: pick(r, ['mixed', 'cross']), wal: false, keep: keepOf(r), ops: r.range(300, 2000) });
    },
  },
  'crash-point': {
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.crashPointScenario({ seed, engine: engineOf(seed), point: pick(r, h.CRASH_POINTS), wal: r.chance(0.6), ops: r.range(100, 1500), syncEvery: pick(r, [16, 1000]) });
    },
  },
  'crash-point-powercut': {
    powercut: true,
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.crashPointScenario({ seed, engine: engineOf(seed), point: pick(r, h.CRASH_POINTS), wal: r.chance(0.6), ops: r.range(100, 1500), powercut: { keep: keepOf(r) } });
    },
  },
  'crash-in-recovery': {
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.recoveryCrashScenario({ seed, engine: engineOf(seed), point: pick(r, CHECKPOINT_POINTS), second: pick(r, h.CRASH_POINTS), wal: r.chance(0.5), ops: r.range(100, 1500) });
    },
  },
  // A crash inside a background checkpoint while operations go on (test/durability/bgcheckpoint.test.ts).
  'bg-checkpoint': {
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.bgCheckpointScenario({
        seed, engine: engineOf(seed), point: pick(r, h.BACKGROUND_POINTS), trigger: pick(r, ['call', 'call', 'auto']), ops: r.range(2000, 5000),
        ...bgLog(r),
      });
    },
  },
  'bg-checkpoint-powercut': {
    powercut: true,
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.bgCheckpointScenario({
        seed, engine: engineOf(seed), point: pick(r, h.BACKGROUND_POINTS), trigger: pick(r, ['call', 'call', 'auto']), ops: r.range(2000, 5000),
        ...bgLog(r), powercut: { keep: keepOf(r) },
      });
    },
  },
  // The power-loss bound: at most maxUnsyncedRecords records of acknowledged operations lost
  // (test/durability/powerloss-bound.test.ts), with background checkpoints running or not.
  'powerloss-bound': {
    powercut: true,
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.powercutScenario({
        seed, engine: engineOf(seed), scenario: 'powerloss-bound', mode: pick(r, ['mixed', 'mixed', 'cross']), wal: true, sparse: true,
        keep: keepOf(r), ops: r.range(1000, 5000), syncEvery: pick(r, [16, 50, 200]), syncIntervalMs: 60_000,
        maxUnsyncedRecords: pick(r, [2, 20, 100, 400, 1000]), checkpointEveryBytes: pick(r, [undefined, 16_384, 65_536]), killFrom: 0.1,
      });
    },
  },
  'crash-in-recovery-powercut': {
    powercut: true,
    run(seed) {
      const r = makeRng(seed ^ 0x50414b);
      return h.recoveryCrashScenario({
        seed, engine: engineOf(seed), point: pick(r, CHECKPOINT_POINTS), second: pick(r, CHECKPOINT_POINTS), wal: r.chance(0.5), ops: r.range(100, 1500),
        powercut: true, keep1: keepOf(r), keep2: keepOf(r),
      });
    },
  },
};

const ledger = h.ledgerAvailable();
if (!ledger.ok) {
  console.error(`soak: ${ledger.reason}`);
  process.exit(2);
}
const pc = h.powercutAvailable();
const started = Date.now();

if (args.replay) {
  const [name, seedText] = String(args.replay).split(':');
  if (!SCENARIOS[name] || !seedText) {
    console.error(`soak: --replay <scenario>:<seed>, scenarios: ${Object.keys(SCENARIOS).join(', ')}`);
    process.exit(2);
  }
  if (SCENARIOS[name].powercut && !pc.ok) {
    console.error(`soak: ${name} needs powercut: ${pc.reason}`);
    process.exit(2);
  }
  const ok = await runOne(name, Number(seedText) >>> 0);
  process.exit(ok ? 0 : 1);
}

let names = args.scenario ? String(args.scenario).split(',') : Object.keys(SCENARIOS);
for (const n of names) {
  if (!SCENARIOS[n]) {
    console.error(`soak: unknown scenario ${n}; scenarios: ${Object.keys(SCENARIOS).join(', ')}`);
    process.exit(2);
  }
}
if (!pc.ok) {
  const skipped = names.filter((n) => SCENARIOS[n].powercut);
  if (skipped.length) console.log(`soak: skipping ${skipped.join(', ')}: ${pc.reason}`);
  names = names.filter((n) => !SCENARIOS[n].powercut);
}
if (names.length === 0) {
  console.error('soak: nothing to run');
  process.exit(2);
}

const minutes = Number(args.minutes ?? 10);
const jobs = Math.max(1, Number(args.jobs ?? 1));
const deadline = Date.now() + minutes * 60_000;
const master = makeRng(args.seed !== undefined ? Number(args.seed) : (Math.random() * 2 ** 32) >>> 0);
let runs = 0;
const failures = [];
const perScenario = Object.fromEntries(names.map((n) => [n, { runs: 0, failed: 0 }]));
console.log(`soak: ${minutes} min, ${jobs} job(s), scenarios: ${names.join(', ')}`);

let stop = false;
process.on('SIGINT', () => {
  if (stop) process.exit(130);
  stop = true;
  console.log('\nsoak: stopping after the runs in progress (Ctrl-C again to quit now)');
});

async function worker() {
  while (!stop && Date.now() < deadline) {
    const name = names[master.int(names.length)];
    const seed = master.u32();
    const ok = await runOne(name, seed);
    runs++;
    perScenario[name].runs++;
    if (!ok) {
      perScenario[name].failed++;
      failures.push(`${name}:${seed}`);
      if (args.stop) stop = true;
    }
  }
}

async function runOne(name, seed) {
  const t0 = Date.now();
  const stamp = `[${((Date.now() - started) / 1000).toFixed(0).padStart(5)}s]`;
  let r;
  try {
    r = await SCENARIOS[name].run(seed);
  } catch (e) {
    r = { label: `${name} seed=${seed}`, problems: [`harness error: ${e.stack ?? e}`] };
  }
  const ms = Date.now() - t0;
  if (r.problems.length === 0) {
    const p = r.progress ? ` ack=${r.progress.ack} sync=${r.progress.sync}` : '';
    const lost = r.lostRecords !== undefined ? ` lostRecords=${r.lostRecords}` : '';
    console.log(`${stamp} ok   ${name}:${seed}  ${r.label}${p} k=${r.k}${lost} ${r.recovery?.mode ?? ''} (${ms} ms)`);
    return true;
  }
  console.log(`${stamp} FAIL ${name}:${seed}  ${r.label} (${ms} ms)`);
  for (const p of r.problems) console.log('     ' + p.replace(/\n/g, '\n     '));
  console.log(`     replay: node scripts/soak.mjs --replay ${name}:${seed}${args.engine ? ` --engine ${args.engine}` : ''}`);
  return false;
}

await Promise.all(Array.from({ length: jobs }, worker));
console.log(`\nsoak: ${runs} runs in ${((Date.now() - started) / 1000).toFixed(0)} s, ${failures.length} failed`);
for (const [n, s] of Object.entries(perScenario)) console.log(`  ${n.padEnd(28)} ${String(s.runs).padStart(5)} runs  ${s.failed} failed`);
if (failures.length) {
  console.log(`replay any of: ${failures.slice(0, 20).map((f) => `--replay ${f}`).join('  ')}`);
  process.exit(1);
}
