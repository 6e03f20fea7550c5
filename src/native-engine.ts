import { errorFor } from './errors';
import type { Engine, EngineCore } from './engine';

interface Addon {
  LedgerCore: new (dir: string) => EngineCore;
  setErrorFactory(f: (status: number, message: string) => Error): void;
}

let addon: Addon | undefined;
let loadError: Error | undefined;

/** The native engine, or the reason it could not be loaded. */
export function nativeEngine(): Engine | Error {
  if (!addon && !loadError) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      addon = require('bindings')('geometric_ledger') as Addon;
      addon.setErrorFactory((status, message) => errorFor(status, message));
    } catch (e) {
      loadError = e as Error;
    }
  }
  if (!addon) return loadError!;
  const a = addon;
  return { name: 'native', newCore: (dir) => new a.LedgerCore(dir) };
}
