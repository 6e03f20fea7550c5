import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Removes the temporary directories each test file made (test/support/tmp.mjs).
    setupFiles: ['test/support/cleanup.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Vitest's default is one file at a time on a 2-core machine (cores - 1); most of our files wait on child
    // processes, fsyncs and FUSE rather than on a core, so three at a time takes a quarter off the suite's wall
    // time. The sanitizer run (npm run test:asan) is CPU-bound: it gives each test more time instead.
    maxWorkers: 3,
    minWorkers: 1,
  },
});
