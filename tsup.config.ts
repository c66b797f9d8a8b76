import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    server: 'src/server/index.ts',
    prometheus: 'src/prometheus/index.ts',
    otel: 'src/otel/index.ts',
    dashboard: 'src/dashboard/index.ts',
    cache: 'src/cache/index.ts',
    testing: 'src/testing/index.ts',
    storm: 'src/storm/index.ts',
    // The lab's tier processes and its command line run as files of their own.
    'storm-tier': 'src/storm/tier.ts',
    'storm-cli': 'src/storm/cli.ts',
    // The storm simulator's worker threads (`workers` > 1).
    'storm-sim-worker': 'src/storm/sim/worker.ts',
    'dashboard-cli': 'src/dashboard/cli.ts',
  },
  // import.meta.url in the CommonJS build (the lab finds its tier module beside itself).
  shims: true,
  // Optional peers stay imports: they are the user's own copies.
  external: ['prom-client', '@opentelemetry/api', '@opentelemetry/sdk-metrics', 'redis'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  splitting: true,
  treeshake: true,
});
