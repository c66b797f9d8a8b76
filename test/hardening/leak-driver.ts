/**
 * Client side of the leak test (test/hardening/leaks.test.ts), in a process of its own so that
 * its heap, sockets, handles and timers are only the client's, and so that it can run with
 * `--expose-gc`:
 *
 *   node --expose-gc --import tsx test/hardening/leak-driver.ts --instances URL,URL,URL,REFUSED
 *     [--calls 50000] [--warmup 2000] [--concurrency 64] [--attempt-timeout 60] [--seed 1]
 *
 * It records a snapshot (heap after GC, active resources by type, socket descriptors, undici
 * sockets, timer-wheel entries, listeners on a long-lived AbortSignal) before the client
 * exists, after a warm-up (the baseline), after the calls once idle, and after `close()`.
 *
 * Protocol with the test, one JSON object per stdout line:
 * - `{ phase: 'idle', ... }` once the calls are over and the client is idle; the driver then
 *   waits for a `continue` line on stdin (the test counts server-side sockets and requests);
 * - `{ phase: 'result', ... }` after `close()`; the driver then waits for an `exit` line (the
 *   test checks that the server saw every socket close while this process still lives).
 * It exits by itself when stdin closes (the test went away) or after `--max-seconds`.
 */
import { getEventListeners, setMaxListeners } from 'node:events';
import { createInterface } from 'node:readline';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import {
  createClient,
  defineService,
  endpoint,
  isTelescopeError,
  systemClock,
  wheelOf,
  withDeadline,
} from '../../src/index.js';
import { seededRandom } from '../../src/testing/random.js';
import { activeResources, socketFds, trackUndiciSockets } from '../helpers/process-resources.js';

// --- options ------------------------------------------------------------------------------

const { values } = parseArgs({
  options: {
    instances: { type: 'string' },
    calls: { type: 'string', default: '50000' },
    warmup: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '64' },
    'attempt-timeout': { type: 'string', default: '60' },
    seed: { type: 'string', default: '1' },
    'max-seconds': { type: 'string', default: '120' },
  },
});
const instances = (values.instances ?? '').split(',').filter(Boolean);
if (instances.length === 0) throw new Error('--instances is required (comma-separated URLs)');
const totalCalls = Number(values.calls);
const warmupCalls = Number(values.warmup);
const concurrency = Number(values.concurrency);
const attemptTimeoutMs = Number(values['attempt-timeout']);
const seed = Number(values.seed);
const maxSeconds = Number(values['max-seconds']);

// Whatever happens, this process must not outlive its test.
setTimeout(() => {
  console.error(`leak-driver: --max-seconds ${maxSeconds} reached, exiting`);
  process.exit(3);
}, maxSeconds * 1000).unref();

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

// --- stdin: acknowledgements from the test -------------------------------------------------

const lines: string[] = [];
let lineWaiter: (() => void) | undefined;
const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  lines.push(line.trim());
  lineWaiter?.();
});
input.on('close', () => process.exit(lines.includes('exit') ? 0 : 4));

async function waitForLine(expected: string): Promise<void> {
  for (;;) {
    const index = lines.indexOf(expected);
    if (index !== -1) {
      lines.splice(index, 1);
      return;
    }
    await new Promise<void>((resolve) => {
      lineWaiter = resolve;
    });
    lineWaiter = undefined;
  }
}

// --- the service --------------------------------------------------------------------------

const Movie = z.object({ id: z.number().int(), title: z.string() });
const fallbackTitle = 'fallback';

const service = defineService({
  name: 'movies',
  endpoints: {
    // Idempotent: retried and hedged.
    getMovie: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number().int() }),
      response: Movie,
    }),
    // The same resource with an async fallback (raced against the call's deadline on the wheel).
    getMovieOrDefault: endpoint({
      method: 'GET',
      path: '/movies/:id',
      params: z.object({ id: z.number().int() }),
      response: Movie,
      fallback: async (_error, params) => ({ id: params.id, title: fallbackTitle }),
    }),
    // A write: never retried once sent, never hedged.
    rate: endpoint({
      method: 'POST',
      path: '/movies/:id/ratings',
      params: z.object({ id: z.number().int() }),
      body: z.object({ stars: z.number() }),
      response: z.object({ ok: z.boolean() }),
    }),
  },
});

// --- measurements -------------------------------------------------------------------------

const undici = trackUndiciSockets();

const wheel = wheelOf(systemClock);
// One AbortSignal that lives for the whole run and is passed to a third of the calls.
const lifetime = new AbortController();
// Above what a healthy client needs (one listener per attempt in flight that carries it), below
// what a leak reaches within a few hundred calls: a leak then also warns (counted below).
setMaxListeners(4 * concurrency, lifetime.signal);
const abortListeners = () => getEventListeners(lifetime.signal, 'abort').length;

const warnings: string[] = [];
process.on('warning', (warning) => {
  if (warnings.length < 10) warnings.push(`${warning.name}: ${warning.message}`);
});

/** What the driver measures at each point (read by leaks.test.ts as JSON). */
export interface Snapshot {
  heapUsed: number;
  resources: Record<string, number>;
  socketFds: number | null;
  undiciSockets: number;
  wheel: number;
  abortListeners: number;
}

async function snapshot(): Promise<Snapshot> {
  // Two full collections with a turn of the loop between them (finalizers, weak refs).
  gc?.();
  await yieldToLoop();
  gc?.();
  return {
    heapUsed: process.memoryUsage().heapUsed,
    resources: activeResources(),
    socketFds: socketFds() ?? null,
    undiciSockets: undici.open,
    wheel: wheel.size,
    abortListeners: abortListeners(),
  };
}

const delayMs = (ms: number) =>
  new Promise<void>((resolve) => {
    setTimeout(resolve, ms);
  });

async function until(what: string, predicate: () => boolean, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > end) throw new Error(`leak-driver: timed out after ${timeoutMs} ms waiting for ${what}`);
    await delayMs(10);
  }
}

// --- the run ------------------------------------------------------------------------------

const random = seededRandom(seed);
const before = await snapshot();

const client = createClient(service, {
  instances,
  timeoutMs: 250,
  attemptTimeoutMs,
  // A hedge on another instance when the first attempt is slow (the slow-answer faults).
  hedge: { delayMs: Math.round(attemptTimeoutMs * 0.6) },
  // Short ejections, so the refused instance comes back (and is refused again) many times.
  outlier: { consecutiveFailures: 3, baseEjectionMs: 200, maxEjectionMs: 800 },
  connectTimeoutMs: 250,
  // Short open periods and window: the circuits may open (a burst of timeouts on a busy CI
  // machine), and must then close again within the run rather than fail it fast for seconds.
  // The window alone opens them: with 64 calls in flight, one stall of this loaded process
  // times out 20 of them at once, and the consecutive-failures rule (20 by default) would
  // open the circuit on each stall; with 30% faults and a refused instance, the three
  // single-attempt probes (all must pass) then rarely close it, and most calls fail fast.
  breaker: { resetTimeoutMs: 200, rollingWindowMs: 2000, consecutiveFailures: 0 },
  // The adaptive limit with a queue: under 30% faults it falls and rises, calls wait in its
  // queue (each with a deadline entry on the wheel) and leave it admitted, timed out or aborted.
  bulkhead: { adaptive: 'gradient2', minConcurrent: 8, maxConcurrent: 64, maxQueue: 256 },
  random: seededRandom(seed + 1),
});
const limits = { min: Number.POSITIVE_INFINITY, max: 0 };

const events = {
  retriesByCode: {} as Record<string, number>,
  hedges: 0,
  budgetExhausted: 0,
  ejections: {} as Record<string, number>,
  returns: 0,
  breakerTransitions: {} as Record<string, number>,
  fallbacks: 0,
  shed: 0,
};
client.on('retry', (event) => {
  events.retriesByCode[event.code] = (events.retriesByCode[event.code] ?? 0) + 1;
});
client.on('hedge', () => events.hedges++);
client.on('budget-exhausted', () => events.budgetExhausted++);
client.on('eject', (event) => {
  events.ejections[event.instance] = (events.ejections[event.instance] ?? 0) + 1;
});
client.on('return', () => events.returns++);
client.on('breaker', (event) => {
  events.breakerTransitions[event.state] = (events.breakerTransitions[event.state] ?? 0) + 1;
});
client.on('fallback', () => events.fallbacks++);
client.on('shed', () => events.shed++);

type Kind = 'plain' | 'shared-signal' | 'fallback' | 'write' | 'abort' | 'deadline' | 'pre-aborted';

/** What the callers saw: outcome (`ok`, `fallback` or an error code) per kind of call. */
const outcomes: Record<Kind, Record<string, number>> = {
  plain: {},
  'shared-signal': {},
  fallback: {},
  write: {},
  abort: {},
  deadline: {},
  'pre-aborted': {},
};
let settled = 0;
let unexpected = 0;
const unexpectedMessages: string[] = [];

function pickKind(): Kind {
  const draw = random();
  if (draw < 0.45) return 'plain';
  if (draw < 0.65) return 'shared-signal';
  if (draw < 0.75) return 'fallback';
  if (draw < 0.83) return 'write';
  if (draw < 0.91) return 'abort';
  if (draw < 0.995) return 'deadline';
  return 'pre-aborted';
}

async function oneCall(index: number): Promise<void> {
  const kind = pickKind();
  const id = (index % 1000) + 1;
  let abortTimer: ReturnType<typeof setTimeout> | undefined;
  let outcome = 'ok';
  try {
    switch (kind) {
      case 'plain':
        await client.getMovie({ id });
        break;
      case 'shared-signal':
        await client.getMovie({ id }, { signal: lifetime.signal });
        break;
      case 'fallback': {
        const movie = await client.getMovieOrDefault({ id }, { signal: lifetime.signal });
        if (movie.title === fallbackTitle) outcome = 'fallback';
        break;
      }
      case 'write':
        await client.rate({ id }, { stars: 4 }, random() < 0.5 ? { signal: lifetime.signal } : undefined);
        break;
      case 'abort': {
        // The caller gives up after 0–60 ms: before, during or after the attempt.
        const controller = new AbortController();
        abortTimer = setTimeout(() => controller.abort(new Error('caller gave up')), Math.floor(random() * 60));
        await client.getMovie({ id }, { signal: controller.signal });
        break;
      }
      case 'deadline': {
        // An ambient budget of 10–90 ms: some calls cannot start, some run out mid-attempt.
        const budgetMs = 10 + Math.floor(random() * 80);
        const signal = random() < 0.5 ? lifetime.signal : undefined;
        await withDeadline(budgetMs, () => client.getMovie({ id }, signal === undefined ? undefined : { signal }));
        break;
      }
      case 'pre-aborted':
        await client.getMovie({ id }, { signal: AbortSignal.abort() });
        break;
    }
  } catch (error) {
    if (isTelescopeError(error)) outcome = error.code;
    else {
      outcome = 'UNEXPECTED';
      unexpected++;
      if (unexpectedMessages.length < 5) unexpectedMessages.push(String((error as Error)?.stack ?? error));
    }
  } finally {
    if (abortTimer !== undefined) clearTimeout(abortTimer);
  }
  const byOutcome = outcomes[kind];
  byOutcome[outcome] = (byOutcome[outcome] ?? 0) + 1;
  settled++;
}

/** Maxima seen while calls run, sampled every 50 ms. */
const peaks = { wheel: 0, abortListeners: 0, tcpSockets: 0, undiciSockets: 0, inFlight: 0, heapUsed: 0 };
const sampler = setInterval(() => {
  const inFlight = client.stats().instances.reduce((sum, instance) => sum + instance.outstanding, 0);
  peaks.wheel = Math.max(peaks.wheel, wheel.size);
  const limit = client.stats().bulkhead?.limit ?? 0;
  limits.min = Math.min(limits.min, limit);
  limits.max = Math.max(limits.max, limit);
  peaks.abortListeners = Math.max(peaks.abortListeners, abortListeners());
  peaks.tcpSockets = Math.max(
    peaks.tcpSockets,
    process.getActiveResourcesInfo().filter((kind) => kind === 'TCPSocketWrap').length,
  );
  peaks.undiciSockets = Math.max(peaks.undiciSockets, undici.open);
  peaks.inFlight = Math.max(peaks.inFlight, inFlight);
  peaks.heapUsed = Math.max(peaks.heapUsed, process.memoryUsage().heapUsed);
}, 50);
sampler.unref();

async function run(calls: number, workers: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < calls) {
      await oneCall(next++);
      // Calls answered without I/O (pre-aborted, budget too small) must not starve the loop.
      await yieldToLoop();
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
}

const inFlight = () => {
  const stats = client.stats();
  return (
    stats.instances.reduce((sum, instance) => sum + instance.outstanding, 0) +
    Object.values(stats.endpoints).reduce((sum, endpoint) => sum + endpoint.outstanding, 0)
  );
};

/** After the calls: nothing in flight, and every wheel entry (timeouts, deadlines) gone. */
async function settle(): Promise<{ wheelAtSettle: number; listenersAtSettle: number }> {
  const state = { wheelAtSettle: wheel.size, listenersAtSettle: abortListeners() };
  await until('no call in flight', () => inFlight() === 0, 2000);
  // An entry left behind would fire at its deadline at the latest: wait out the call budget.
  await until('the timer wheel to empty', () => wheel.size === 0, 1000);
  return state;
}

// Warm-up, gently first: 64 connections opened at once by a cold process (JIT, tsx) can take
// longer than the 60 ms attempt timeout, and a burst of timeouts would open the circuits.
await run(Math.min(200, warmupCalls), 4);
await run(warmupCalls, concurrency);
await settle();
// What is reported is the measured calls' own: forget the warm-up's outcomes and events.
for (const byOutcome of Object.values(outcomes)) for (const key of Object.keys(byOutcome)) delete byOutcome[key];
events.retriesByCode = {};
events.ejections = {};
events.breakerTransitions = {};
events.hedges = events.budgetExhausted = events.returns = events.fallbacks = events.shed = 0;
undici.resetOpened();
const baseline = await snapshot();
const warmupSettled = settled;

const startedAt = performance.now();
await run(totalCalls, concurrency);
const durationMs = performance.now() - startedAt;
const atSettle = await settle();
const afterCalls = await snapshot();
const stats = client.stats();

const write = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`);
write({ phase: 'idle' });
await waitForLine('continue');

clearInterval(sampler);
await client.close();
// Sockets destroyed by close() are released on the next turns of the loop.
await until('undici sockets to close', () => undici.open === 0, 2000).catch(() => undefined);
await delayMs(50);
const afterClose = await snapshot();

write({
  phase: 'result',
  config: { calls: totalCalls, warmup: warmupCalls, concurrency, attemptTimeoutMs, seed, instances },
  durationMs: Math.round(durationMs),
  callsSettled: settled - warmupSettled,
  outcomes,
  unexpected,
  unexpectedMessages,
  events,
  undiciOpened: undici.opened,
  peaks,
  atSettle,
  bulkhead: { ...stats.bulkhead, limits },
  endpoints: Object.fromEntries(
    Object.entries(stats.endpoints).map(([name, endpoint]) => [
      name,
      { requests: endpoint.requests, failures: endpoint.failures, retries: endpoint.retries, hedges: endpoint.hedges },
    ]),
  ),
  warnings,
  before,
  baseline,
  afterCalls,
  afterClose,
});
await waitForLine('exit');
process.exit(0);
