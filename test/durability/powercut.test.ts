// Durability rules under power loss. The workload runs on the powercut FUSE filesystem
// (test/support/powercut), which keeps in memory whatever the ledger has not made durable; the child
// is SIGKILLed at a random moment, the power is cut, and the ledger is reopened from the backing
// directory without FUSE. With the log on, every rule here also checks the power-loss bound: at most
// maxUnsyncedRecords (default 8 x syncEvery) log records of acknowledged operations are lost
// (powerloss-bound.test.ts tests small bounds). --keep 0: nothing unsynced survives. --keep 0.3..0.7: the "disk" wrote some
// dirty sectors early, in any order, torn between sectors: the adversary for any data or index page
// that reaches the disk before the WAL records that describe it.
// Kills land in the last 70% of the workload (killFrom 0.3) so that every run has synced operations
// at stake; scripts/soak.mjs draws them from the whole run.
import { describe, it } from 'vitest';
import { powercutScenario, expectRulesHeld, seeds, summary, skipPowercut, makeRng, type ScenarioOptions, jobs, ENGINES } from './helpers';

const skip = skipPowercut('powercut.test.ts');
const keepFor = (seed: number) => Math.round((0.3 + 0.4 * makeRng(seed ^ 0x6b656570).float()) * 100) / 100; // 0.3..0.7

function ruleFor(name: string, o: ScenarioOptions & { keep: number }) {
  it.skipIf(skip).concurrent(`${name} (keep ${o.keep}, seed ${o.seed})`, async () => {
    const r = await jobs(() => powercutScenario({ killFrom: 0.3, ...o }));
    console.log(summary(r));
    expectRulesHeld(r);
  });
}

// Both engines: the rules are the engine's, whichever writes the files.
describe.each(ENGINES)('power cut at a random moment (%s engine)', (engine) => {
  const rule = (name: string, o: ScenarioOptions & { keep: number }) => ruleFor(name, { ...o, engine });
  for (const seed of seeds(2, 11)) {
    rule('every operation before the last resolved sync() survives, and the state is the model after an exact prefix of the issued operations',
      { seed, keep: 0, mode: 'mixed', wal: true, ops: 3000, syncEvery: seed % 2 ? 1000 : 64 });
  }
  for (const seed of seeds(1, 12)) {
    rule('every synced operation survives when half of the unsynced sectors reached the disk early and torn',
      { seed, keep: 0.5, mode: 'mixed', wal: true, ops: 3000 });
  }
  for (const seed of seeds(2, 13)) {
    rule('every synced operation survives whatever part of the unsynced writes reached the disk',
      { seed, keep: keepFor(seed), mode: 'mixed', wal: true, ops: 3000, syncEvery: 128 });
  }
  seeds(2, 14).forEach((seed, i) => {
    rule('a transfer between two shards is never half applied, even with torn writes (cross-shard-only workload)',
      { seed, keep: i === 0 ? 0 : keepFor(seed), mode: 'cross', wal: true, ops: 3000 });
  });
  seeds(2, 15).forEach((seed, i) => {
    rule('with wal:false, the ledger comes back exactly to the last completed checkpoint',
      { seed, keep: i === 0 ? 0 : 0.5, mode: 'mixed', wal: false, ops: 1500 });
  });
});
