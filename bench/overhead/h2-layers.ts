/**
 * What telescope's layers add over HTTP/2, apart from the transport: one client process against
 * the benchmark's h2c target, in one of these modes (`--mode`):
 * - `undici`: raw undici `Client.request`; `undici-headers`: the same with the three request
 *   headers telescope sends;
 * - `transport`: telescope's transport alone (undici's `dispatch` with telescope's attempt
 *   handler and those headers);
 * - `client`: the whole client; `client-min`: without breaker, bulkhead, retry and metrics;
 *   `client-no-<layer>`: without one of them (breaker, throttle, bulkhead, retry, metrics).
 * Prints requests per second and CPU per request. This machine's run-to-run spread is wide:
 * compare modes over several runs each, in turn, by their ratio to the run before. Or run a mode
 * under `--cpu-prof` and summarise it with `profile.ts`:
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/h2-client --import tsx bench/overhead/h2-layers.ts --mode client
 *   node --import tsx bench/overhead/profile.ts /tmp/h2-client/*.cpuprofile --requests 65000
 *
 * (`--requests` is the warm-up plus the measured requests: 5,000 + `--calls`.)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { CallContext, type OutgoingRequest } from '../../src/core/call.js';
import { systemClock } from '../../src/core/clock.js';
import { createClient } from '../../src/index.js';
import { transport } from '../../src/transport/index.js';
import { movies } from './movie-service.js';
import { checkMovie, type TargetReady } from './shared.js';

const { values } = parseArgs({
  options: {
    mode: { type: 'string', default: 'client' },
    calls: { type: 'string', default: '60000' },
  },
});
const mode = values.mode;
const calls = Number(values.calls);
const withoutLayer: Record<string, object> = {
  'client-min': { breaker: false, bulkhead: false, retry: false, metrics: false },
  'client-no-breaker': { breaker: false },
  'client-no-throttle': { throttle: false },
  'client-no-bulkhead': { bulkhead: false },
  'client-no-retry': { retry: false },
  'client-no-metrics': { metrics: false },
};
const modes = ['client', ...Object.keys(withoutLayer), 'transport', 'undici', 'undici-headers'];
if (!modes.includes(mode)) throw new Error(`--mode must be one of ${modes.join(', ')}`);
if (!(Number.isInteger(calls) && calls > 0)) throw new Error('--calls must be a positive integer');

const target: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'bench/overhead/target.ts'], {
  stdio: ['pipe', 'pipe', 'inherit'],
});
const ready = await new Promise<TargetReady>((resolve, reject) => {
  let buffered = '';
  target.once('error', reject);
  target.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    const end = buffered.indexOf('\n');
    if (end >= 0) resolve(JSON.parse(buffered.slice(0, end)) as TargetReady);
  });
});
const url = ready.h2cUrls[0] as string;

/** The headers telescope's client sends on every attempt. */
const contractHeaders = { 'accept-encoding': 'identity', 'x-request-attempt': '1', 'x-request-timeout-ms': '1000' };

let getMovie: (id: number) => Promise<unknown>;
let close: () => Promise<void>;
if (mode.startsWith('client')) {
  const client = createClient(movies, { instances: [url], timeoutMs: 1000, http2: true, ...withoutLayer[mode] });
  getMovie = (id) => client.getMovie({ id });
  close = () => client.close();
} else if (mode === 'undici' || mode === 'undici-headers') {
  const { Client } = await import('undici');
  const undici = new Client(url, { pipelining: 100, ...{ useH2c: true } }); // (not in undici's Options type)
  const headers = mode === 'undici' ? {} : contractHeaders;
  getMovie = async (id) => {
    const { body } = await undici.request({ method: 'GET', path: `/movies/${id}`, headers });
    return body.json();
  };
  close = () => undici.close();
} else {
  const wire = transport({ http2: true });
  const instance = { url, weight: 1 };
  getMovie = async (id) => {
    const context = new CallContext({
      service: 'movies',
      endpoint: 'getMovie',
      idempotent: true,
      clock: systemClock,
      timeoutMs: 1000,
    });
    context.instance = instance;
    const request: OutgoingRequest = {
      method: 'GET',
      path: `/movies/${id}`,
      headers: { ...contractHeaders },
      body: undefined,
    };
    return (await wire.call(request, context)).body;
  };
  close = () => wire.close();
}

/** `count` requests, 64 in flight, every answer checked. */
async function run(count: number): Promise<void> {
  let started = 0;
  let finished = 0;
  await new Promise<void>((resolve, reject) => {
    const next = (): void => {
      if (started >= count) {
        if (finished === count) resolve();
        return;
      }
      const id = started++ % 1000;
      getMovie(id).then((body) => {
        checkMovie(body, id, mode);
        finished++;
        next();
      }, reject);
    };
    for (let slot = 0; slot < 64; slot++) next();
  });
}

try {
  await run(5000);
  const cpuBefore = process.cpuUsage();
  const startedAt = performance.now();
  await run(calls);
  const cpu = process.cpuUsage(cpuBefore);
  const seconds = (performance.now() - startedAt) / 1000;
  console.log(
    `${mode}: ${Math.round(calls / seconds)} req/s, ${((cpu.user + cpu.system) / calls).toFixed(1)} µs CPU/req`,
  );
} finally {
  await close();
  target.stdin?.end();
  target.kill();
}
