// The power-cut simulator itself (test/support/powercut/powercut.py): the rules of its disk model that
// the durability suite relies on. Each scenario mounts it over a fresh directory, writes through the
// mount with plain fs calls, cuts the power, and reads the backing directory without FUSE.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountPowercut, skipPowercut } from './helpers';

const skip = skipPowercut('powercut-sim.test.ts');

const SYNCED = Buffer.alloc(1000, 'S');   // written, then fdatasync
const APPENDED = Buffer.alloc(700, 'U');  // appended after the fdatasync
const OVERWRITE = Buffer.alloc(100, 'O'); // written over the start of the synced bytes after the fdatasync
const REPORT = /^cut: \d+ volatile sectors kept, \d+ lost; \d+ entry changes undone$/;

function fsyncPath(p: string, data = false): void {
  const fd = fs.openSync(p, 'r');
  try {
    if (data) fs.fdatasyncSync(fd);
    else fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

interface Cut {
  backing: string;
  report: string;
}

const roots: string[] = [];
afterAll(() => {
  if (!process.env.GL_KEEP_TMP) for (const root of roots) fs.rmSync(root, { recursive: true, force: true });
});

/** Mounts powercut over a fresh directory, runs `body` on the mount point, cuts the power. */
async function afterCut(keep: number, seed: number, body: (mnt: string) => void): Promise<Cut> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gl-powercut-sim-'));
  roots.push(root);
  const pc = await mountPowercut({ backing: path.join(root, 'disk'), mnt: path.join(root, 'mnt'), keep, seed });
  try {
    body(pc.mnt);
    return { backing: pc.backing, report: await pc.cut() };
  } finally {
    await pc.dispose();
  }
}

/**
 * d/log: SYNCED, fdatasync; then OVERWRITE at 0 and APPENDED at 1000, not synced.
 * d/new: created and fdatasynced, but d is never fsynced after it was created.
 * d itself and d/log's entry are durable (fsync of the directories).
 */
function scenario(mnt: string): void {
  const d = path.join(mnt, 'd');
  fs.mkdirSync(d);
  fsyncPath(mnt);
  const log = fs.openSync(path.join(d, 'log'), 'w+');
  fs.writeSync(log, SYNCED, 0, SYNCED.length, 0);
  fs.fdatasyncSync(log);
  fsyncPath(d);
  fs.writeSync(log, OVERWRITE, 0, OVERWRITE.length, 0);
  fs.writeSync(log, APPENDED, 0, APPENDED.length, SYNCED.length);
  fs.closeSync(log);
  fs.writeFileSync(path.join(d, 'new'), 'not in a synced directory');
  fsyncPath(path.join(d, 'new'), true);
}

describe.skipIf(skip)('powercut simulator, keep 0 (nothing unsynced reaches the disk)', () => {
  let cut: Cut;
  beforeAll(async () => {
    cut = await afterCut(0, 1, scenario);
  });

  it('bytes written before the fdatasync of a file are on the disk after the cut', () => {
    const log = fs.readFileSync(path.join(cut.backing, 'd/log'));
    expect(log.subarray(OVERWRITE.length, SYNCED.length).equals(SYNCED.subarray(OVERWRITE.length))).toBe(true);
  });

  it('bytes written after the last fdatasync are gone, appended or overwritten, and the file has its synced size', () => {
    expect(fs.readFileSync(path.join(cut.backing, 'd/log')).equals(SYNCED)).toBe(true);
  });

  it('a file created without an fsync of its directory is gone, even though its own data was synced', () => {
    expect(fs.existsSync(path.join(cut.backing, 'd/new'))).toBe(false);
    expect(fs.readdirSync(path.join(cut.backing, 'd'))).toEqual(['log']);
  });

  it('the cut prints one report line: sectors kept and lost, entry changes undone', () => {
    expect(cut.report).toMatch(REPORT);
    expect(cut.report).toMatch(/ 0 volatile sectors kept, [1-9]\d* lost; 1 entry changes undone$/);
  });
});

describe.skipIf(skip)('powercut simulator, keep 1.0 (the disk wrote everything back before the cut)', () => {
  it('every unsynced write and every unsynced entry change survives', async () => {
    const cut = await afterCut(1, 1, scenario);
    const expected = Buffer.concat([OVERWRITE, SYNCED.subarray(OVERWRITE.length), APPENDED]);
    expect(fs.readFileSync(path.join(cut.backing, 'd/log')).equals(expected)).toBe(true);
    expect(fs.readFileSync(path.join(cut.backing, 'd/new'), 'utf8')).toBe('not in a synced directory');
    expect(cut.report).toMatch(/ 0 lost; 0 entry changes undone$/);
  });
});

describe.skipIf(skip)('powercut simulator, other rules', () => {
  it('a truncation is volatile until fsync of the file: with keep 0 the file comes back to its synced size and bytes', async () => {
    const cut = await afterCut(0, 2, (mnt) => {
      const f = fs.openSync(path.join(mnt, 'f'), 'w+');
      fs.writeSync(f, SYNCED, 0, SYNCED.length, 0);
      fs.fsyncSync(f);
      fsyncPath(mnt);
      fs.ftruncateSync(f, 10);
      fs.ftruncateSync(f, 5000);
      fs.closeSync(f);
    });
    expect(fs.readFileSync(path.join(cut.backing, 'f')).equals(SYNCED)).toBe(true);
  });

  it('a directory fsync makes every earlier entry change durable; a rename after it is undone with keep 0', async () => {
    const cut = await afterCut(0, 3, (mnt) => {
      fs.mkdirSync(path.join(mnt, 'a'));
      fs.writeFileSync(path.join(mnt, 'a/one'), '1');
      fsyncPath(path.join(mnt, 'a/one'));
      fs.renameSync(path.join(mnt, 'a/one'), path.join(mnt, 'a/two'));
      fsyncPath(mnt); // another directory: still makes the changes in a/ durable
      fs.renameSync(path.join(mnt, 'a/two'), path.join(mnt, 'three'));
    });
    expect(fs.readdirSync(cut.backing)).toEqual(['a']);
    expect(fs.readFileSync(path.join(cut.backing, 'a/two'), 'utf8')).toBe('1');
  });

  it('the same --seed gives the same disk after a cut with keep 0.5 (torn writes are reproducible)', async () => {
    const body = (mnt: string) => {
      const f = fs.openSync(path.join(mnt, 'f'), 'w+');
      fs.writeSync(f, Buffer.alloc(64 * 1024, 'a'), 0, 64 * 1024, 0);
      fs.fsyncSync(f);
      fsyncPath(mnt);
      for (let i = 0; i < 200; i++) fs.writeSync(f, Buffer.alloc(224, 65 + (i % 26)), 0, 224, i * 224);
      fs.closeSync(f);
    };
    const runs = [await afterCut(0.5, 7, body), await afterCut(0.5, 7, body)];
    const [a, b] = runs.map((r) => fs.readFileSync(path.join(r.backing, 'f')));
    expect(a.equals(b)).toBe(true);
    expect(runs[0].report).toBe(runs[1].report);
    expect(runs[0].report).not.toMatch(/ 0 volatile sectors kept| 0 lost/); // some sectors kept, some lost
  });
});
