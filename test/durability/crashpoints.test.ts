// A crash at every step of the checkpoint and close protocols, on purpose rather than by luck: the
// engine SIGKILLs itself at the point named by GL_CRASH_AT. Before the checkpoint()/close() call, the
// child has made operations, a sync(), and more operations that were acknowledged but not synced; then
// it awaits the call with no operation going on (with the log on, checkpoint() is a background checkpoint;
// close() and wal:false run foreground ones). Without FUSE (kill -9) and on powercut with the power cut
// right after the kill (keep 0). bgcheckpoint.test.ts crashes background checkpoints while operations go on.
// Both engines (GL_ENGINES narrows them).
import { describe, it } from 'vitest';
import { crashPointScenario, expectRulesHeld, CRASH_POINTS, summary, skipPowercut, seeds, jobs, ENGINES } from './helpers';

const skip = skipPowercut('crashpoints.test.ts');
const [seed] = seeds(1, 21);

// Both engines: the crash points are the engine's (the close points are the Ledger's).
describe.each(ENGINES)('crash inside checkpoint() and close() (%s engine)', (engine) => {
  it.concurrent.each(CRASH_POINTS)('kill -9 at %s loses no operation acknowledged before the call', async (point) => {
    const r = await jobs(() => crashPointScenario({ seed, engine, point, wal: true }));
    console.log(summary(r));
    expectRulesHeld(r);
  });

  it.skipIf(skip).concurrent.each(CRASH_POINTS)('a power cut at %s loses no operation acknowledged before the call (keep 0)', async (point) => {
    const r = await jobs(() => crashPointScenario({ seed, engine, point, wal: true, powercut: { keep: 0 } }));
    console.log(summary(r));
    expectRulesHeld(r);
  });

  it.concurrent.each(CRASH_POINTS)(
    'with wal:false, kill -9 at %s comes back to exactly the previous or the new checkpoint (the new one once MANIFEST is written)',
    async (point) => {
      const r = await jobs(() => crashPointScenario({ seed, engine, point, wal: false }));
      console.log(summary(r));
      expectRulesHeld(r);
    },
  );

  it.skipIf(skip).concurrent.each(CRASH_POINTS)(
    'with wal:false, a power cut at %s comes back to exactly the previous or the new checkpoint (keep 0)',
    async (point) => {
      const r = await jobs(() => crashPointScenario({ seed, engine, point, wal: false, powercut: { keep: 0 } }));
      console.log(summary(r));
      expectRulesHeld(r);
    },
  );
});
