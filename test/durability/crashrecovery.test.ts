// A crash while recovering from a crash. Recovery ends with a checkpoint that folds the replayed log
// into the shard files; that checkpoint can be interrupted too. The first crash is at
// checkpoint:after-data-write (the log is durable, the shard files are half written back: that is
// what the log, or with wal:false the image journal, exists to repair); the recovering process is then
// killed at each point of its own checkpoint (GL_CRASH_AT). Whatever happens, the third open must come
// back to what the first recovery had to come back to.
import { describe, it } from 'vitest';
import { recoveryCrashScenario, expectRulesHeld, CRASH_POINTS, summary, skipPowercut, seeds, jobs, ENGINES } from './helpers';

const skip = skipPowercut('crashrecovery.test.ts');
const [seed] = seeds(1, 31);
const FIRST = 'checkpoint:after-data-write';
const CHECKPOINT_POINTS = CRASH_POINTS.filter((p) => p.startsWith('checkpoint:'));

// Both engines: the crash points are the engine's (the close points are the Ledger's).
describe.each(ENGINES)('crash while recovering from a crash (%s engine)', (engine) => {
  it.concurrent.each(CRASH_POINTS)('kill -9 at %s while recovering loses nothing the first recovery had to restore', async (second) => {
    const r = await jobs(() => recoveryCrashScenario({ seed, engine, point: FIRST, second, wal: true }));
    console.log(summary(r));
    expectRulesHeld(r);
  });

  it.skipIf(skip).concurrent.each(CHECKPOINT_POINTS)(
    'a power cut at %s while recovering, with torn writes, loses nothing the first recovery had to restore (keep 0.5)',
    async (second) => {
      const r = await jobs(() => recoveryCrashScenario({ seed, engine, point: FIRST, second, wal: true, powercut: true, keep1: 0, keep2: 0.5 }));
      console.log(summary(r));
      expectRulesHeld(r);
    },
  );

  it.concurrent.each(CRASH_POINTS)(
    'with wal:false, kill -9 at %s while recovering still comes back to exactly the previous or the new checkpoint',
    async (second) => {
      const r = await jobs(() => recoveryCrashScenario({ seed, engine, point: FIRST, second, wal: false }));
      console.log(summary(r));
      expectRulesHeld(r);
    },
  );

  it.skipIf(skip).concurrent.each(CHECKPOINT_POINTS)(
    'with wal:false, a power cut at %s while recovering, with torn writes, still comes back to exactly a checkpoint (keep 0.5)',
    async (second) => {
      const r = await jobs(() => recoveryCrashScenario({ seed, engine, point: FIRST, second, wal: false, powercut: true, keep1: 0, keep2: 0.5 }));
      console.log(summary(r));
      expectRulesHeld(r);
    },
  );
});
