/**
 * The directory lock, JS side. The native engine flock()s LOCK and also writes
 * "pid starttime" into it (and truncates it on close). Node cannot flock, so
 * this engine holds a directory by:
 *   - refusing when LOCK ("pid starttime") names a live process other than this
 *     one (a native or JS ledger in another process; a pid left by a killed
 *     holder is dead, or given to a process with another start time, and
 *     ignored),
 *   - refusing when /proc/locks shows a flock on LOCK (a native ledger, in any
 *     process including this one),
 *   - refusing when this thread already has it open (a registry keyed by real
 *     path; a ledger dropped without close() is let go when it is garbage
 *     collected), or when another descriptor of this process has LOCK open
 *     (a ledger of another worker thread, or of the native engine; a worker
 *     terminated with a ledger open leaks its descriptors, and the directory
 *     stays locked until the process exits),
 * and then writing its own "pid starttime" into LOCK, which the native engine checks.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BatchStatus, LedgerError } from '../errors';
import { O_CREAT, O_RDWR, closeFile, errText, fail, openFile } from './io';

interface Hold {
  key: string;
  fd: number;
  released: boolean;
  /** Other descriptors to close if the holder is collected without close(). */
  fds: Set<number>;
}

const held = new Map<string, { hold: Hold; owner: WeakRef<object> }>();

const finalizer = new FinalizationRegistry<Hold>((hold) => {
  // The owner was garbage collected without close(): let the directory go.
  for (const fd of hold.fds) closeFile(fd);
  hold.fds.clear();
  releaseHold(hold);
});

function releaseHold(hold: Hold): void {
  if (hold.released) return;
  hold.released = true;
  const cur = held.get(hold.key);
  if (cur && cur.hold === hold) {
    held.delete(hold.key);
    try {
      fs.ftruncateSync(hold.fd, 0);
    } catch {
      // only a hint for the other engine
    }
  }
  closeFile(hold.fd);
}

/**
 * Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), '0' when it does
 * not exist: with the pid it tells a live holder from an unrelated process given a dead holder's pid.
 */
export function processStart(pid: number): string {
  let line: string;
  try {
    line = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return '0';
  }
  // Field 2 is "(comm)" and may hold spaces: count fields after the last ')'.
  const p = line.lastIndexOf(')');
  if (p < 0) return '0';
  const f = line.slice(p + 2).split(' '); // f[0] is field 3
  return f.length > 19 && /^\d+$/.test(f[19]) ? f[19] : '0';
}

/** Pid of a process holding a flock on the file behind `fd`, per /proc/locks (0 when none or unknown). */
function flockHolder(fd: number): number {
  let text: string;
  try {
    text = fs.readFileSync('/proc/locks', 'latin1');
  } catch {
    return 0;
  }
  const st = fs.fstatSync(fd, { bigint: true });
  const major = Number(((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn));
  const minor = Number((st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn));
  const ino = String(st.ino);
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[1] !== 'FLOCK') continue; // also skips "->" lines (waiters)
    const id = f[5]?.split(':');
    if (!id || id.length !== 3 || id[2] !== ino) continue;
    if (Number.parseInt(id[0], 16) !== major || Number.parseInt(id[1], 16) !== minor) continue;
    return Number(f[4]) || -1;
  }
  return 0;
}

/**
 * True when another descriptor of this process has the same LOCK file open: a ledger held by another
 * thread (workers load their own copy of this module, so the registry above cannot see it) or by the
 * native engine. Every holder keeps its LOCK descriptor open until it lets go.
 */
function openElsewhereHere(fd: number): boolean {
  let names: string[];
  try {
    names = fs.readdirSync('/proc/self/fd');
  } catch {
    return false;
  }
  const st = fs.fstatSync(fd, { bigint: true });
  for (const n of names) {
    const other = Number(n);
    if (!Number.isInteger(other) || other === fd) continue;
    try {
      const o = fs.fstatSync(other, { bigint: true });
      if (o.ino === st.ino && o.dev === st.dev) return true;
    } catch {
      // closed meanwhile
    }
  }
  return false;
}

/**
 * The pid of the live process that holds `dir` (0: nobody), without taking the lock or writing a byte: a
 * flock on LOCK (/proc/locks; -1 when its holder's pid is not shown), else a live "pid starttime" in it. Our
 * own pid counts: a ledger of this process holds it. For tools that only read a directory (verifyLedger, the
 * CLI's info).
 */
export function lockHolder(dir: string): number {
  let fd: number;
  try {
    fd = fs.openSync(path.join(dir, 'LOCK'), 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw e;
  }
  try {
    const flock = flockHolder(fd);
    if (flock !== 0) return flock;
    const buf = Buffer.alloc(63);
    const n = fs.readSync(fd, buf, 0, 63, 0);
    const m = /^\s*(\d+)\s+(\d+)/.exec(buf.toString('latin1', 0, n));
    if (m && m[2] !== '0' && processStart(Number(m[1])) === m[2]) return Number(m[1]);
    return 0;
  } finally {
    fs.closeSync(fd);
  }
}

export class DirLock {
  readonly hold: Hold;

  /** Takes the lock of `dir` for `owner` or throws LOCKED. */
  constructor(dir: string, owner: object) {
    let key: string;
    try {
      key = fs.realpathSync(dir);
    } catch {
      key = path.resolve(dir);
    }
    const cur = held.get(key);
    if (cur && !cur.hold.released && cur.owner.deref() !== undefined) {
      fail(BatchStatus.LOCKED, `ledger directory is locked by another open ledger: ${dir}`);
    }
    if (cur) {
      // its owner was collected and the finalizer has not run yet
      for (const fd of cur.hold.fds) closeFile(fd);
      cur.hold.fds.clear();
      releaseHold(cur.hold);
    }
    const fd = openFile(path.join(dir, 'LOCK'), O_RDWR | O_CREAT);
    try {
      if (openElsewhereHere(fd)) fail(BatchStatus.LOCKED, `ledger directory is locked by another open ledger in this process: ${dir}`);
      const flock = flockHolder(fd);
      if (flock !== 0) fail(BatchStatus.LOCKED, `ledger directory is locked by ${flock > 0 ? `process ${flock}` : 'another ledger'}: ${dir}`);
      // "pid starttime\n", written by either engine while it holds the directory.
      const buf = Buffer.alloc(63);
      const n = fs.readSync(fd, buf, 0, 63, 0);
      const m = /^\s*(\d+)\s+(\d+)/.exec(buf.toString('latin1', 0, n));
      const pid = m ? Number(m[1]) : 0;
      const start = m ? m[2] : '0';
      if (pid > 0 && pid !== process.pid && start !== '0' && processStart(pid) === start) {
        fail(BatchStatus.LOCKED, `ledger directory is locked by process ${pid}: ${dir}`);
      }
      fs.ftruncateSync(fd, 0);
      const me = Buffer.from(`${process.pid} ${processStart(process.pid)}\n`);
      fs.writeSync(fd, me, 0, me.length, 0);
    } catch (e) {
      closeFile(fd);
      if (e instanceof LedgerError) throw e;
      fail(BatchStatus.IO_ERROR, `lock ${dir}: ${errText(e)}`);
    }
    this.hold = { key, fd, released: false, fds: new Set() };
    held.set(key, { hold: this.hold, owner: new WeakRef(owner) });
    finalizer.register(owner, this.hold, this.hold);
  }

  release(): void {
    finalizer.unregister(this.hold);
    releaseHold(this.hold);
  }
}
