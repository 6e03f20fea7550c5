// The power-loss bound, maxUnsyncedRecords: at most that many log records are ever unsynced, so a power cut
// loses at most that many records of acknowledged operations (a transfer logs 2, a mint 1, a refused
// operation none). Small bounds (syncEvery 50, maxUnsyncedRecords 20, 100 and 400), no timer-driven fsyncs
// (syncIntervalMs one minute), a plan with few sync() calls (long unsynced runs), on powercut: the child is
// SIGKILLed at a random moment and the power cut. The acceptance floor (harness.mjs acceptFor) is the larger of
// the last resolved sync() and the first operation that may be lost under the bound.
import { describe, it } from 'vitest';
import { powercutScenario, expectRulesHeld, ENGINES, summary, skipPowercut, seeds, jobs, type ScenarioOptions } from './helpers';

const skip = skipPowercut('powerloss-bound.test.ts');

const variants: (ScenarioOptions & { keep: number; what: string })[] = [
  // below syncEvery: the bound alone starts the group fsyncs, and a cut loses up to the bound itself
  { seed: 0, keep: 0, maxUnsyncedRecords: 20, what: 'keep 0' },
  { seed: 0, keep: 0, maxUnsyncedRecords: 100, what: 'keep 0' },
  { seed: 0, keep: 0, maxUnsyncedRecords: 400, what: 'keep 0' },
  { seed: 0, keep: 0.5, maxUnsyncedRecords: 100, checkpointEveryBytes: 64 * 1024, what: 'keep 0.5, background checkpoints running' },
  { seed: 0, keep: 0.3, maxUnsyncedRecords: 400, checkpointEveryBytes: 64 * 1024, what: 'keep 0.3, background checkpoints running' },
];

describe.each(ENGINES)('%s engine: the power-loss bound', (engine) => {
  const s = seeds(variants.length, engine === 'native' ? 51 : 52);
  variants.forEach(({ what, ...v }, i) => {
    const seed = s[i];
    it.skipIf(skip).concurrent(
      `a power cut loses at most maxUnsyncedRecords (${v.maxUnsyncedRecords}) log records of acknowledged operations and nothing before the last resolved sync() (${engine}, ${what}, seed ${seed})`,
      async () => {
        const r = await jobs(() => powercutScenario({
          ...v, seed, engine, mode: 'mixed', wal: true, ops: 3000, sparse: true, syncEvery: 50, syncIntervalMs: 60_000, killFrom: 0.2,
          scenario: 'powerloss-bound',
        }));
        console.log(summary(r));
        expectRulesHeld(r);
      },
    );
  });
});
