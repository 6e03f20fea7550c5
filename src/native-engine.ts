import * as path from 'node:path';
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
      // GL_ADDON names another build of the addon (the sanitizer build in
      // `npm run test:asan`); normally `bindings` finds build/Release.
      const override = process.env.GL_ADDON;
      addon = (override ? require(path.resolve(override)) : require('bindings')('geometric_ledger')) as Addon;
      addon.setErrorFactory((status, message) => errorFor(status, message));
    } catch (e) {
      loadError = e as Error;
    }
  }
  if (!addon) return loadError!;
  const a = addon;
  return { name: 'native', newCore: (dir) => new a.LedgerCore(dir) };
}
