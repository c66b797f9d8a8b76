import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    typecheck: { enabled: true, include: ['test/types/**/*.test-d.ts'] },
    testTimeout: 20_000,
    hookTimeout: 20_000,
    pool: 'forks',
    // Heap assertions (bounded memory, no leaks) compare heap sizes after a real collection.
    execArgv: ['--expose-gc'],
  },
});
