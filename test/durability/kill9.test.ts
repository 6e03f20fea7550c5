// Durability rules under kill -9 (SIGKILL of the writing process at a random moment; no power loss, so
// the page cache survives). A child runs a seeded workload of mints, single and cross-shard transfers,
// batches, sync() and checkpoint(); it reports every acknowledged operation through a side channel; the
// test kills it, reopens the directory in this process and compares every balance with a pure-JS model.
import { describe, it } from 'vitest';
import { killScenario, expectRulesHeld, seeds, summary, jobs, ENGINES } from './helpers';

// Both engines: the rules are the engine's, whichever writes the files.
describe.each(ENGINES)('kill -9 at a random moment (%s engine)', (engine) => {
  const variants = [
    { syncEvery: 1000 },
    { syncEvery: 64 },
    { syncEvery: 1, syncIntervalMs: 5 },
    { syncEvery: 1000, paceEvery: 8 }, // slower child: the kill lands anywhere, including mid-checkpoint
    { syncEvery: 16, paceEvery: 4 },
  ];
  it.concurrent.each(seeds(variants.length, 1).map((seed, i) => ({ seed, ...variants[i] })))(
    'every acknowledged operation survives, and the state is the model after an exact prefix of the issued operations (seed $seed, syncEvery $syncEvery)',
    async (v) => {
      const r = await jobs(() => killScenario({ ...v, engine, mode: 'mixed', wal: true, ops: 3000 }));
      console.log(summary(r));
      expectRulesHeld(r);
    },
  );

  it.concurrent.each(seeds(3, 2))('a transfer between two shards is never half applied (cross-shard-only workload, seed %i)', async (seed) => {
    const r = await jobs(() => killScenario({ seed, engine, mode: 'cross', wal: true, ops: 3000, syncEvery: seed % 2 ? 1000 : 32 }));
    console.log(summary(r));
    expectRulesHeld(r);
  });

  it.concurrent.each(seeds(3, 3))('with wal:false, the ledger comes back exactly to the last completed checkpoint (seed %i)', async (seed) => {
    const r = await jobs(() => killScenario({ seed, engine, mode: seed % 2 ? 'mixed' : 'cross', wal: false, ops: 2000, paceEvery: 16 }));
    console.log(summary(r));
    expectRulesHeld(r);
  });
});

describe('kill -9 of the process holding the directory', () => {
  // The LOCK file also records the holder's pid (for the pure-TypeScript engine, which cannot flock).
  // After a SIGKILL that pid stays in the file; pids are reused (quickly so in a fresh container's pid
  // namespace). The flock died with the holder, so the directory is free and must open.
  it('after the holder is killed, open works even when its pid now belongs to another live process', async () => {
    const { Ledger } = await import('../../dist/index.js');
    const fs = await import('node:fs');
    const path = await import('node:path');
    const { spawn } = await import('node:child_process');
    const { tmpRoot, removeTmp, LEDGER_MODULE } = await import('../fixtures/harness.mjs' as string);
    const root: string = tmpRoot('lock-pid-reuse');
    const dir = path.join(root, 'ledger');
    const holder = spawn(
      process.execPath,
      ['-e', `require(${JSON.stringify(LEDGER_MODULE)}).Ledger.open(${JSON.stringify(dir)}, { shards: 2, accountsPerShard: 100 }).then(() => { console.log('held'); setInterval(() => {}, 1e9); })`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise((r) => holder.stdout!.once('data', r));
    holder.kill('SIGKILL');
    await new Promise((r) => holder.on('exit', r));
    const recorded = fs.readFileSync(path.join(dir, 'LOCK'), 'utf8').trim();
    // the dead holder's pid, reused: stand-in with a live unrelated process's pid in its place
    const other = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      if (recorded === String(holder.pid)) fs.writeFileSync(path.join(dir, 'LOCK'), `${other.pid}\n`);
      const ledger = await Ledger.open(dir, { shards: 2, accountsPerShard: 100 });
      await ledger.close();
      removeTmp(root);
    } finally {
      other.kill('SIGKILL');
    }
  });
});
