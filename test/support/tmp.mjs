// The test suites' temporary directories, in one place. Each is made under the OS temp directory and removed after
// the test file that made it (test/support/cleanup.ts, a vitest setup file), so that `npm test` leaves nothing behind.
// A scenario that failed keeps its directory for a post-mortem (keepTmp; its problem names the path), and
// GL_KEEP_TMP=1 keeps them all. Plain ESM: the durability harness runs under bare node too (scripts/soak.mjs).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const made = new Set();

/** A new empty directory `<os tmpdir>/<tag>-XXXXXX`, removed after the current test file. */
export function tmpDir(tag) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${tag}-`));
  made.add(dir);
  return dir;
}

/** Removes `dir` now (unless GL_KEEP_TMP). */
export function removeTmp(dir) {
  made.delete(dir);
  if (!process.env.GL_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
}

/** Keeps `dir` after the test file: a failed scenario's directory, named in its problem. */
export function keepTmp(dir) {
  made.delete(dir);
}

/** Removes every directory made and not kept (the setup file's afterAll). */
export function removeAllTmp() {
  for (const dir of [...made]) removeTmp(dir);
}
