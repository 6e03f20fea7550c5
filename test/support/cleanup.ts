// Vitest setup file (vitest.config.mts): after each test file, remove the temporary directories it made.
import { afterAll } from 'vitest';
// @ts-ignore -- plain ESM module without type declarations
import { removeAllTmp } from './tmp.mjs';

afterAll(removeAllTmp);
