// Crashes while shards grow (docs/durability.md, "Shards that grow"). A child (test/fixtures/grow.mjs) creates
// account after account in a ledger of 2 x 100, so its account files grow and its indexes double while
// background checkpoints run; it is killed at each growth step on purpose (GL_CRASH_AT), at the checkpoint step
// that writes a doubled index, or at an arbitrary moment. Recovery must give an exact prefix of the operations
// (operation i creates account i) with every acknowledged one (kill -9) or every one before the last resolved
// sync() (power cut), and the recovered ledger must go on growing and reopen clean.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
// @ts-ignore -- plain ESM module without type declarations
import * as harness from '../fixtures/harness.mjs';
// @ts-ignore -- plain ESM module without type declarations
import { growKey, growModel, growOps } from '../fixtures/growplan.mjs';
import { ACCOUNT_SIZE, Account } from '../../dist/format.js';
import { ENGINES, jobs, mountPowercut, skipPowercut, type EngineName, type Powercut } from './helpers';

const GROW = fileURLToPath(new URL('../fixtures/grow.mjs', import.meta.url));
const OPS = 6000;
const PLAN: { k: string; from?: number; to: number; amount: bigint }[] = growOps(OPS);
const KEYS: Buffer[] = Array.from({ length: OPS + 300 }, (_, i) => growKey(i));
// Every growth step, in the order a shard meets them, and the checkpoint step that writes a doubled index.
const POINTS = ['grow:after-data-extend', 'grow:after-rehash-start', 'grow:after-rehash-end', 'checkpoint:after-index-resize'];
const skip = skipPowercut('growth.test.ts');

interface Scenario {
  engine: EngineName;
  point?: string;
  killAt?: number;
  keep?: number;
}

/** Runs one crash and its recovery; returns what broke (nothing: []) and a line for the log. */
async function scenario(o: Scenario): Promise<{ problems: string[]; line: string }> {
  const label = `${o.engine} ${o.point ?? `kill at ack ${o.killAt}`}${o.keep !== undefined ? ` power cut keep ${o.keep}` : ''}`;
  const root: string = harness.tmpRoot('grow');
  const side = path.join(root, 'progress');
  const problems: string[] = [];
  let pc: Powercut | undefined;
  let dir = path.join(root, 'ledger');
  let childDir = dir;
  try {
    if (o.keep !== undefined) {
      pc = await mountPowercut({ backing: path.join(root, 'disk'), mnt: path.join(root, 'mnt'), keep: o.keep, seed: 7 });
      dir = path.join(root, 'disk', 'ledger');
      childDir = path.join(root, 'mnt', 'ledger');
    }
    // With a power cut, only the unsynced bound and sync() make the log durable: what is lost is bounded.
    const args = ['--dir', childDir, '--engine', o.engine, '--ops', String(OPS), '--side', side,
      '--checkpoint-every-bytes', String(256 * 1024), '--sync-every', '500', '--max-unsynced', '400',
      ...(o.killAt !== undefined ? ['--slow-after', String(o.killAt)] : [])];
    const child = await harness.runChild({
      script: GROW, args, env: o.point ? { GL_CRASH_AT: o.point } : {}, killAtAck: o.killAt ?? null,
    });
    const cut = pc ? await pc.cut() : '';
    const out = `(stdout: ${child.lines.join(' | ')}; stderr: ${child.stderr.slice(-800)})`;
    if (child.signal !== 'SIGKILL') problems.push(`${label}: the child was not killed ${out}`);
    if (o.point && !child.stderr.includes(`GL_CRASH_AT=${o.point}: SIGKILL`)) problems.push(`${label}: ${o.point} never fired ${out}`);
    if (child.lines.includes('done')) problems.push(`${label}: the crash came after the workload ${out}`);
    if (problems.length) return { problems, line: label };
    const prog = harness.readSide(side);
    const must = o.keep !== undefined ? prog.sync : prog.ack;

    const { Ledger } = harness.loadLedger();
    let l = await Ledger.open(dir, { engine: o.engine });
    const rec = l.recovery;
    const images: Buffer = Buffer.from(l.getBatch(Buffer.concat(KEYS.slice(0, OPS))));
    const has = (i: number) => images.readUInt32LE(i * ACCOUNT_SIZE + Account.VERSION) !== 0; // never 0 in a record
    let k = 0;
    while (k < OPS && has(k)) k++;
    const model = growModel(PLAN, k, OPS);
    for (let i = 0; i < OPS && problems.length < 5; i++) {
      const found = has(i) ? images.readBigUInt64LE(i * ACCOUNT_SIZE + Account.LAMPORTS) : null;
      if (found !== model[i]) problems.push(`${label}: not the state after the first ${k} operations: account ${i} is ${found}, expected ${model[i]}`);
    }
    if (k < must) problems.push(`${label}: ${k} operations recovered, but ${must} were ${o.keep !== undefined ? 'synced' : 'acknowledged'}`);
    if (rec.mode === 'clean') problems.push(`${label}: a crash recovered as a clean open`);
    // The recovered ledger goes on growing, and closes and reopens clean with everything.
    for (let i = OPS; i < OPS + 300; i++) l.mint(KEYS[i], 3n);
    await l.close();
    l = await Ledger.open(dir, { engine: o.engine });
    if (l.recovery.mode !== 'clean') problems.push(`${label}: the reopen after recovery was ${l.recovery.mode}`);
    const again: Buffer = Buffer.from(l.getBatch(Buffer.concat(KEYS.slice(0, OPS))));
    if (!again.equals(images)) problems.push(`${label}: the state changed across close and reopen`);
    if (l.balance(KEYS[OPS + 299]) !== 3n) problems.push(`${label}: an account created after recovery is missing`);
    const shards = l.stats().shards;
    await l.close();
    if (!problems.length) harness.removeTmp(root);
    else harness.keepTmp(root);
    return {
      problems: problems.map((p) => `${p} [kept ${root}]`),
      line: `${label}: ack=${prog.ack} sync=${prog.sync} -> k=${k} recovery=${rec.mode} replayed=${rec.walRecordsReplayed}` +
        ` rebuilt=${rec.shardsRebuilt} capacities=${shards.map((s: { capacity: number; indexCapacity: number }) => `${s.capacity}/${s.indexCapacity}`).join(',')}${cut ? ` | ${cut}` : ''}`,
    };
  } catch (e) {
    problems.push(`${label}: ${(e as Error).stack} [kept ${root}]`);
    return { problems, line: label };
  } finally {
    await pc?.dispose();
  }
}

async function check(o: Scenario): Promise<void> {
  const r = await jobs(() => scenario(o));
  console.log(r.line);
  expect(r.problems).toEqual([]);
}

describe.each(ENGINES)('%s engine: crashes while shards grow and background checkpoints run', (engine) => {
  it.concurrent.each(POINTS)(`kill -9 at %s (${engine}): an exact prefix with every acknowledged operation; the ledger then grows on and reopens clean`, async (point) => {
    await check({ engine, point });
  });

  it.concurrent.each([4300])(`kill -9 after %i acknowledged operations (${engine}): an exact prefix with every acknowledged operation`, async (killAt) => {
    await check({ engine, killAt });
  });

  it.skipIf(skip).concurrent.each(POINTS)(`a power cut at %s (${engine}, keep 0): an exact prefix with every operation before the last resolved sync()`, async (point) => {
    await check({ engine, point, keep: 0 });
  });

  it.skipIf(skip).concurrent.each([0.5])(`a power cut after 3,100 acknowledged operations (${engine}, keep %s: torn writes, pages written early): an exact prefix with every operation before the last resolved sync()`, async (keep) => {
    await check({ engine, killAt: 3100, keep });
  });
});
