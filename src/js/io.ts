/**
 * File primitives of the JS engine with the native engine's failure policy
 * (native/io.cpp): every error becomes a LedgerError carrying its status, and
 * the two test hooks (GL_CRASH_AT crash points, GL_FAIL_FSYNC_AT failing
 * fsyncs) behave as there: read once per open, the fsync count restarting at
 * every open and counting every fdatasync the engine makes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BatchStatus, LedgerError, errorFor } from '../errors';

export const O_RDWR = fs.constants.O_RDWR;
export const O_CREAT = fs.constants.O_CREAT;
export const O_TRUNC = fs.constants.O_TRUNC;

/** Throws the LedgerError of a status. */
export function fail(status: number, message: string): never {
  throw errorFor(status, message);
}

/** The status of a LedgerError thrown by this engine (or rethrows anything else). */
export function statusOf(e: unknown): number {
  if (e instanceof LedgerError) {
    const s = (BatchStatus as Record<string, number>)[e.code];
    if (s !== undefined) return s;
  }
  throw e;
}

/** "No such file or directory" for a Node system error, like strerror(3). */
export function errText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string') {
    const m = /^[A-Z0-9]+: ([^,]*)/.exec(err.message);
    const text = m ? m[1] : err.message;
    return text.charAt(0).toUpperCase() + text.slice(1);
  }
  return String((e as Error)?.message ?? e);
}

function failErrno(what: string, e: unknown): never {
  fail(BatchStatus.IO_ERROR, `${what}: ${errText(e)}`);
}

// ---------------------------------------------------------------- hooks
export const hooks = { crashAt: '', failFsyncAt: 0, fsyncs: 0 };

export function loadHooks(): void {
  hooks.crashAt = process.env.GL_CRASH_AT ?? '';
  const f = process.env.GL_FAIL_FSYNC_AT;
  const n = f ? Number.parseInt(f, 10) : 0;
  hooks.failFsyncAt = Number.isFinite(n) ? n : 0;
  hooks.fsyncs = 0;
}

/** SIGKILLs the process when `name` is GL_CRASH_AT (kill(2) to self is delivered before it returns). */
export function crashPoint(name: string): void {
  if (hooks.crashAt !== '' && hooks.crashAt === name) {
    try {
      fs.writeSync(2, `geometric-ledger: GL_CRASH_AT=${name}: SIGKILL\n`);
    } catch {
      // stderr closed: die anyway
    }
    process.kill(process.pid, 'SIGKILL');
  }
}

/** Counts the call for GL_FAIL_FSYNC_AT; true when this one must fail with EIO. */
export function injectFsyncFailure(): boolean {
  const n = ++hooks.fsyncs;
  return hooks.failFsyncAt > 0 && n >= hooks.failFsyncAt;
}

export const EIO_TEXT = 'Input/output error';

/** fdatasync; returns the error text, or undefined on success. */
export function dataSync(fd: number): string | undefined {
  if (injectFsyncFailure()) return EIO_TEXT;
  try {
    fs.fdatasyncSync(fd);
    return undefined;
  } catch (e) {
    return errText(e);
  }
}

export function dataSyncOrThrow(fd: number, what: string): void {
  const err = dataSync(fd);
  if (err !== undefined) fail(BatchStatus.IO_ERROR, `fsync ${what}: ${err}`);
}

// ---------------------------------------------------------------- files
export function openFile(file: string, flags: number): number {
  try {
    return fs.openSync(file, flags, 0o644);
  } catch (e) {
    return failErrno(`open ${file}`, e);
  }
}

export function closeFile(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // nothing useful to do
  }
}

export function writeAt(fd: number, buf: Uint8Array, off: number, len: number, pos: number, what: string): void {
  while (len > 0) {
    let w: number;
    try {
      w = fs.writeSync(fd, buf, off, len, pos);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EINTR') continue;
      return failErrno(`write ${what}`, e);
    }
    off += w;
    len -= w;
    pos += w;
  }
}

/** Reads up to `len` bytes; returns how many (fewer only at the end of the file). */
export function readUpTo(fd: number, buf: Uint8Array, off: number, len: number, pos: number, what: string): number {
  let got = 0;
  while (got < len) {
    let r: number;
    try {
      r = fs.readSync(fd, buf, off + got, len - got, pos + got);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EINTR') continue;
      return failErrno(`read ${what}`, e);
    }
    if (r === 0) break;
    got += r;
  }
  return got;
}

export function readAt(fd: number, buf: Uint8Array, off: number, len: number, pos: number, what: string): void {
  if (readUpTo(fd, buf, off, len, pos, what) < len) fail(BatchStatus.CORRUPTION, `${what}: file too short`);
}

export function fileSize(fd: number): number {
  try {
    return fs.fstatSync(fd).size;
  } catch (e) {
    return failErrno('fstat', e);
  }
}

export function resize(fd: number, size: number, what: string): void {
  try {
    fs.ftruncateSync(fd, size);
  } catch (e) {
    failErrno(`resize ${what}`, e);
  }
}

export function syncDir(dir: string): void {
  const fd = openDir(dir);
  const err = dataSync(fd);
  closeFile(fd);
  if (err !== undefined) fail(BatchStatus.IO_ERROR, `fsync directory: ${err}`);
}

/** Atomically replaces dir/name with `data`: tmp file, fsync, rename, fsync the directory. */
export function replaceFile(dir: string, name: string, data: Uint8Array): void {
  const fd = writeTemp(dir, name, data);
  try {
    dataSyncOrThrow(fd, name);
  } finally {
    closeFile(fd);
  }
  renameTemp(dir, name);
  syncDir(dir);
}

/**
 * replaceFile in steps, for a caller that fsyncs on the libuv pool: writes dir/<name>.tmp and returns its
 * descriptor (the caller fsyncs and closes it), then renameTemp, then an fsync of openDir(dir).
 */
export function writeTemp(dir: string, name: string, data: Uint8Array): number {
  const fd = openFile(path.join(dir, `${name}.tmp`), O_RDWR | O_CREAT | O_TRUNC);
  try {
    writeAt(fd, data, 0, data.length, 0, name);
  } catch (e) {
    closeFile(fd);
    throw e;
  }
  return fd;
}

export function renameTemp(dir: string, name: string): void {
  try {
    fs.renameSync(path.join(dir, `${name}.tmp`), path.join(dir, name));
  } catch (e) {
    failErrno(`rename ${name}`, e);
  }
}

export function openDir(dir: string): number {
  return openFile(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
}
