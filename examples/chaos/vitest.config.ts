// The chaos example's own vitest config: the root config runs test/** only, so this suite
// runs once, on its own: npx vitest run --root examples/chaos
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const here = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root: here,
  // Keep vite's cache with the repository's, not in a node_modules folder created here.
  cacheDir: fileURLToPath(new URL('../../node_modules/.vite/examples-chaos', import.meta.url)),
  test: {
    include: ['**/*.test.ts'],
    testTimeout: 10_000,
    pool: 'forks',
  },
});
