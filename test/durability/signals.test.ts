// Graceful shutdown: a busy child opened with handleSignals gets SIGTERM (or SIGINT), stops writing, lets its
// sync()s settle, closes (checkpoint and marker) and exits with 128 + the signal's number. The next open is
// clean and holds every acknowledged operation, and nothing after them.
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Ledger } from '../../dist/index.js';
import { ENGINES } from './helpers';
// @ts-ignore -- plain ESM module without type declarations
import { signalKey, signalModel, SIGNAL_ACCOUNTS } from '../fixtures/signal-plan.mjs';
// @ts-ignore -- plain ESM module without type declarations
import { tmpRoot, removeTmp } from '../fixtures/harness.mjs';

const CHILD = fileURLToPath(new URL('../fixtures/signals.mjs', import.meta.url));
const EXIT_CODE = { SIGTERM: 128 + 15, SIGINT: 128 + 2 } as const;

/** Runs the child until it has acknowledged `ack` operations, sends `signal`, and waits for it to exit. */
function runAndSignal(dir: string, engine: string, signal: 'SIGTERM' | 'SIGINT', ack: number) {
  return new Promise<{ code: number | null; signal: string | null; lastAck: number; lines: string[]; stderr: string }>((resolve) => {
    const p = spawn(process.execPath, [CHILD, '--dir', dir, '--engine', engine], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    let stderr = '';
    let lastAck = 0;
    let sent = false;
    const lines: string[] = [];
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.stdout.on('data', (d) => {
      buf += d;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith('ack ')) lastAck = Number(line.slice(4));
        else lines.push(line);
        if (!sent && lastAck >= ack) {
          sent = true;
          p.kill(signal);
        }
      }
    });
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code, sig) => {
      clearTimeout(timer);
      resolve({ code, signal: sig, lastAck, lines, stderr });
    });
  });
}

describe('handleSignals', () => {
  const cases = ENGINES.flatMap((engine) => (['SIGTERM', 'SIGINT'] as const).map((signal) => ({ engine, signal })));
  it.each(cases)('$engine engine: a busy child that gets $signal exits 128+signo and reopens clean with every acknowledged operation', async ({ engine, signal }) => {
    const root: string = tmpRoot('signals');
    const dir = path.join(root, 'ledger');
    const r = await runAndSignal(dir, engine, signal, 20_000);
    expect(r.stderr).toBe('');
    expect(r.lines).toEqual([]); // no failed operation, no sync() rejected
    expect(r.signal).toBeNull();
    expect(r.code).toBe(EXIT_CODE[signal]);
    const l = await Ledger.open(dir, { engine });
    try {
      expect(l.recovery.mode).toBe('clean');
      // Writes stop between two bursts: the ledger holds exactly the acknowledged operations.
      const s = l.stats();
      expect(s.lsn).toBe(BigInt(r.lastAck));
      const want = signalModel(r.lastAck);
      expect(s.supply).toBe(want.minted);
      for (let i = 0; i < SIGNAL_ACCOUNTS; i++) expect(l.balance(signalKey(i))).toBe(want.bal[i]);
    } finally {
      await l.close();
      removeTmp(root);
    }
  });

  it('without handleSignals a ledger leaves the signals alone', async () => {
    const root: string = tmpRoot('signals-off');
    const dir = path.join(root, 'ledger');
    const before = process.listenerCount('SIGTERM');
    const l = await Ledger.open(dir, { engine: ENGINES[0] });
    expect(process.listenerCount('SIGTERM')).toBe(before);
    await l.close();
    const h = await Ledger.open(dir, { engine: ENGINES[0], handleSignals: true });
    expect(process.listenerCount('SIGTERM')).toBe(before + 1);
    expect(process.listenerCount('SIGINT')).toBeGreaterThan(0);
    await h.close();
    expect(process.listenerCount('SIGTERM')).toBe(before); // removed with the last such ledger
    await expect(Ledger.open(dir, { handleSignals: 'yes' as unknown as boolean })).rejects.toMatchObject({ code: 'INVALID_OPTIONS' });
    removeTmp(root);
  });
});
