// Memory given back (issue 7, point 5), native engine only: the JS engine keeps no mapping. What is measured is the
// kernel's own account of the shard file's private mapping in this process (/proc/self/smaps, "Anonymous:"): a page
// the ledger changed is a private copy until a checkpoint has written it back and the ledger gave it back with
// MADV_DONTNEED, after which it is an ordinary file page again.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { engines, key, mintOps, tmpDir, Ledger, MANUAL_SYNC } from './helpers';

const PAGE = 4096;
const ACCOUNTS_PER_PAGE = PAGE / 128;

/** Private (anonymous) bytes of every mapping of `file` in this process. */
function anonymousBytes(file: string): number {
  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
  let inside = false;
  let kb = 0;
  for (const line of lines) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inside = line.endsWith(` ${file}`);
    else if (inside && line.startsWith('Anonymous:')) kb += Number(line.split(/\s+/)[1]);
  }
  return kb * 1024;
}

/** The VmFlags line of every mapping of `file` in this process ("rr": advised random reads, no read-ahead). */
function vmFlags(file: string): string[][] {
  const lines = fs.readFileSync('/proc/self/smaps', 'utf8').split('\n');
  const out: string[][] = [];
  let inside = false;
  for (const line of lines) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inside = line.endsWith(` ${file}`);
    else if (inside && line.startsWith('VmFlags:')) out.push(line.split(/\s+/).slice(1).filter(Boolean));
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for the housekeeping timer (100 ms) to hand the given-back pages to the kernel. */
async function settle(file: string, until: (anon: number) => boolean): Promise<number> {
  let anon = anonymousBytes(file);
  for (let i = 0; i < 50 && !until(anon); i++) {
    await sleep(50);
    anon = anonymousBytes(file);
  }
  return anon;
}

describe.runIf(engines.includes('native') && process.platform === 'linux')('memory given back (native)', () => {
  const slots = 32 * ACCOUNTS_PER_PAGE * 8; // 256 pages of accounts

  async function openFilled(dir: string): Promise<{ l: Ledger; shardFile: string }> {
    // One shard, so that slot order is insertion order and "page p" is accounts p*32 .. p*32+31.
    const l = await Ledger.open(dir, { shards: 1, accountsPerShard: slots, engine: 'native', ...MANUAL_SYNC });
    const shardFile = fs.realpathSync(path.join(dir, 'shard_000.bin'));
    l.mintBatch(mintOps(Array.from({ length: slots }, (_, i) => [key(i), 1n] as [Buffer, bigint])));
    return { l, shardFile };
  }

  it('an idle ledger gives back every page a checkpoint wrote', async () => {
    const dir = tmpDir('mem');
    const { l, shardFile } = await openFilled(dir);
    try {
      const before = anonymousBytes(shardFile);
      expect(before).toBeGreaterThanOrEqual((slots / ACCOUNTS_PER_PAGE) * PAGE * 0.9);
      await l.checkpoint();
      const after = await settle(shardFile, (a) => a === 0);
      expect(after).toBe(0);
      // Given back is not lost: the file holds what memory held.
      expect(l.balance(key(0))).toBe(1n);
      expect(l.balance(key(slots - 1))).toBe(1n);
    } finally {
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('under writes, a page is given back only after a whole checkpoint period without a change; hot pages stay', async () => {
    const dir = tmpDir('mem');
    const { l, shardFile } = await openFilled(dir);
    const hotPages = 16;
    const touchHot = () => {
      for (let p = 0; p < hotPages; p++) l.mint(key(p * ACCOUNTS_PER_PAGE), 1n);
    };
    try {
      await l.checkpoint(); // writes all pages back; the ledger is not idle below, so they get their second look
      touchHot();
      await l.checkpoint(); // captures the hot pages: the rest went unchanged for a whole period
      // Keep one page outside the hot set changing, so the ledger is never idle while we look (the first change
      // comes before any timer can run: an idle ledger would give back everything).
      const busyOnce = () => l.mint(key(hotPages * ACCOUNTS_PER_PAGE), 1n);
      busyOnce();
      const busy = setInterval(busyOnce, 5);
      let anon: number;
      try {
        anon = await settle(shardFile, (a) => a <= (hotPages + 1) * PAGE);
        await sleep(300); // more housekeeping turns: the hot pages must stay, not just be late
        anon = anonymousBytes(shardFile);
      } finally {
        clearInterval(busy);
      }
      // The hot pages (written back by the last checkpoint, so releasable as far as the file goes) are kept: a
      // change is likely to come, and giving them back would cost a fault and a copy. The cold ones are gone.
      expect(anon).toBeGreaterThanOrEqual(hotPages * PAGE);
      expect(anon).toBeLessThanOrEqual((hotPages + 1) * PAGE);
      expect(l.balance(key(0))).toBe(2n);
      expect(l.balance(key(5 * ACCOUNTS_PER_PAGE))).toBe(2n);
      expect(l.balance(key(200 * ACCOUNTS_PER_PAGE + 3))).toBe(1n);
    } finally {
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('readAhead: false maps the account and index files for random reads (no read-ahead), after growth and after an index rebuild too; the default keeps read-ahead', async () => {
    const dir = tmpDir('mem');
    const perShard = 2 * ACCOUNTS_PER_PAGE;
    const noReadAhead = { engine: 'native' as const, readAhead: false, ...MANUAL_SYNC };
    let l = await Ledger.open(dir, { shards: 1, accountsPerShard: perShard, ...noReadAhead });
    const shardFile = fs.realpathSync(path.join(dir, 'shard_000.bin'));
    const indexFile = fs.realpathSync(path.join(dir, 'index_000.bin'));
    const advisedRandom = (file: string, random: boolean) => {
      const flags = vmFlags(file);
      expect(flags.length).toBeGreaterThan(0);
      for (const f of flags) expect(f.includes('rr')).toBe(random);
    };
    try {
      advisedRandom(shardFile, true);
      advisedRandom(indexFile, true);
      // Growth maps the file's new pages at fixed addresses after the old ones: they get the same advice.
      const n = 40 * perShard;
      l.mintBatch(mintOps(Array.from({ length: n }, (_, i) => [key(i), 1n] as [Buffer, bigint])));
      expect(l.stats().shards[0].capacity).toBeGreaterThan(perShard);
      advisedRandom(shardFile, true);
      await l.close();
      // An index rebuild scans the account file in order with read-ahead, then gives the advice back.
      fs.rmSync(indexFile);
      l = await Ledger.open(dir, noReadAhead);
      expect(l.stats().shards[0].indexRebuilds).toBe(1);
      advisedRandom(shardFile, true);
      expect(l.balance(key(n - 1))).toBe(1n);
      await l.close();
      l = await Ledger.open(dir, { engine: 'native', ...MANUAL_SYNC });
      advisedRandom(shardFile, false);
      advisedRandom(indexFile, false);
    } finally {
      await l.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
