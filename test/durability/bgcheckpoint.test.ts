// A crash inside a BACKGROUND checkpoint while operations go on. checkpoint() hands over on the JS thread and
// returns a promise; the write-back runs off it (native: a thread of its own; JS engine: slices on the event
// loop) while the child keeps issuing single mints and transfers, batches, sync() and checkpoint() calls that
// join the running one. GL_CRASH_AT makes the engine SIGKILL itself at each point of that checkpoint, from the
// checkpoint thread, mid-workload (test/fixtures/bgcheckpoint.mjs). A point that is never reached, a crash
// elsewhere, or a crash with no operation in flight fails the test.
import { describe, it } from 'vitest';
import { bgCheckpointScenario, expectRulesHeld, BACKGROUND_POINTS, ENGINES, summary, skipPowercut, seeds, jobs, type BgCheckpointOptions } from './helpers';

const skip = skipPowercut('bgcheckpoint.test.ts');
const [seed, autoSeed] = seeds(2, 41);
// Power cuts: no fsync by count or timer, only the unsynced bound (400 records, below syncEvery) and the
// checkpoint's own: the bound is what limits the loss, and writers wait at it while the checkpoint runs.
// What phase B writes between its sync() and checkpoint() (about 200 records) is still unsynced at the call,
// so the checkpoint's first step has a group fsync to wait for.
const POWER = { syncEvery: 1000, maxUnsyncedRecords: 400, syncIntervalMs: 60_000 };
// The automatic trigger at the points where it differs most: in the write (mid-batch), mid write-back, committed.
const AUTO_POINTS = ['checkpoint:after-handover', 'checkpoint:after-data-write', 'checkpoint:after-manifest'];

async function check(o: BgCheckpointOptions): Promise<void> {
  const r = await jobs(() => bgCheckpointScenario(o));
  console.log(summary(r));
  expectRulesHeld(r);
}

describe.each(ENGINES)('%s engine: crash inside a background checkpoint while operations go on', (engine) => {
  it.concurrent.each(BACKGROUND_POINTS)(
    `kill -9 at %s (${engine}): every acknowledged operation survives, the state is the model after an exact prefix, and operations were acknowledged after checkpoint() and before the crash`,
    async (point) => {
      await check({ seed, point, engine });
    },
  );

  it.skipIf(skip).concurrent.each(BACKGROUND_POINTS)(
    `a power cut at %s (${engine}, keep 0): every operation before the last resolved sync() survives, at most maxUnsyncedRecords records of acknowledged operations are lost, the state is an exact prefix`,
    async (point) => {
      await check({ seed, point, engine, powercut: { keep: 0 }, ...POWER });
    },
  );

  it.skipIf(skip).concurrent.each(BACKGROUND_POINTS)(
    `a power cut at %s (${engine}, keep 0.5: torn writes, pages written early): the same rules hold`,
    async (point) => {
      await check({ seed, point, engine, powercut: { keep: 0.5 }, ...POWER });
    },
  );

  it.concurrent.each(AUTO_POINTS)(
    `kill -9 at %s of a checkpoint that a write past checkpointEveryBytes started, mid-batch (${engine}): every acknowledged operation survives, exact prefix`,
    async (point) => {
      await check({ seed: autoSeed, point, engine, trigger: 'auto' });
    },
  );

  it.skipIf(skip).concurrent.each(AUTO_POINTS)(
    `a power cut at %s of a checkpoint that a write past checkpointEveryBytes started (${engine}, keep 0.5): power-loss rules hold, exact prefix`,
    async (point) => {
      await check({ seed: autoSeed, point, engine, trigger: 'auto', powercut: { keep: 0.5 }, ...POWER });
    },
  );
});
