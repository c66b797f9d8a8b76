/**
 * A 1 GiB streamed response passes through a `responseType: 'stream'` endpoint with a flat
 * heap (< 64 MiB growth after GC, heap and array buffers), and an endless body cancelled
 * mid-way frees its socket within 100 ms (the server-side socket's close). Runs in a child
 * process (stream-driver.ts, `--expose-gc`) so the heap measured is the client's alone.
 * `TELESCOPE_STREAM_BYTES` overrides the size.
 */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));

it('streams 1 GiB with a flat heap and frees the socket within 100 ms of cancel()', async () => {
  const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', join(here, 'stream-driver.ts')], {
    cwd: join(here, '..', '..'),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text;
  });
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-4000);
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 110_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(timer);
  expect(code, stderr).toBe(0);
  const result = JSON.parse(stdout.trim().split('\n').at(-1) as string) as {
    received: number;
    maxGrowthMiB: number;
    streamMs: number;
    cancelMs: number;
    serverSocketClosedMs: number;
  };
  if (process.env.TELESCOPE_HARDENING_VERBOSE) console.log(result);
  expect(result.received).toBe(Number(process.env.TELESCOPE_STREAM_BYTES ?? 1024 * 1024 * 1024));
  expect(result.maxGrowthMiB).toBeLessThan(64);
  expect(result.cancelMs).toBeLessThan(100);
  expect(result.serverSocketClosedMs).toBeLessThan(1000);
}, 120_000);
