/**
 * Plugs the pure-TypeScript engine in: `Ledger.open(dir, { engine: 'js' })`.
 * It needs nothing but node:fs, on a little-endian machine (it reads the
 * little-endian files through Uint32Arrays).
 */
import * as os from 'node:os';
import type { Engine } from '../engine';
import { registerEngine } from '../ledger';
import { JsCore } from './core';

export const jsEngine: Engine = { name: 'js', newCore: (dir) => new JsCore(dir) };

registerEngine('js', () =>
  os.endianness() === 'LE' ? jsEngine : new Error('the JS engine reads the ledger files as little-endian words'));
