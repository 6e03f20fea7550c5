// A crash at every step of the checkpoint and close protocols, on purpose rather than by luck: the
// native engine SIGKILLs itself at the point named by GL_CRASH_AT. Before the checkpoint()/close()
// call, the child has made operations, a sync(), and more operations that were acknowledged but not
// synced. Without FUSE (kill -9) and on powercut with the power cut right after the kill (keep 0).
import { describe, it } from 'vitest';
import { crashPointScenario, expectRulesHeld, CRASH_POINTS, summary, skipPowercut, seeds } from './helpers';

const skip = skipPowercut('crashpoints.test.ts');
const [seed] = seeds(1, 21);

describe('crash inside checkpoint() and close()', () => {
  it.each(CRASH_POINTS)('kill -9 at %s loses no operation acknowledged before the call', async (point) => {
    const r = await crashPointScenario({ seed, point, wal: true });
    console.log(summary(r));
    expectRulesHeld(r);
  });

  it.skipIf(skip).each(CRASH_POINTS)('a power cut at %s loses no operation acknowledged before the call (keep 0)', async (point) => {
    const r = await crashPointScenario({ seed, point, wal: true, powercut: { keep: 0 } });
    console.log(summary(r));
    expectRulesHeld(r);
  });

  it.each(CRASH_POINTS)(
    'with wal:false, kill -9 at %s comes back to exactly the previous or the new checkpoint (the new one once MANIFEST is written)',
    async (point) => {
      const r = await crashPointScenario({ seed, point, wal: false });
      console.log(summary(r));
      expectRulesHeld(r);
    },
  );

  it.skipIf(skip).each(CRASH_POINTS)(
    'with wal:false, a power cut at %s comes back to exactly the previous or the new checkpoint (keep 0)',
    async (point) => {
      const r = await crashPointScenario({ seed, point, wal: false, powercut: { keep: 0 } });
      console.log(summary(r));
      expectRulesHeld(r);
    },
  );
});
