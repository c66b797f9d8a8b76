/**
 * Hardening: writes are never duplicated.
 *
 * A non-idempotent POST reaches the servers at most once, whatever goes wrong after its bytes
 * may have left: a reset after the server read the request, a reset in the middle of the
 * answer, an answer that comes after the attempt timeout or the call's deadline, a 503, the
 * half-open probe of a breaker, a slow instance with hedging on, and a client with a generous
 * retry budget and `maxRetries: 3`. Only a write that certainly never left (a refused
 * connection, an open circuit) is repeated or reported with `requestSent: false`.
 *
 * With an `idempotency-key` header the same faults may be retried: the key is identical on
 * every attempt, and each retry goes to an instance the call has not tried yet.
 *
 * Everything is counted on the server side (real node:http servers on 127.0.0.1, requests
 * counted when their headers arrive), and every test checks that the closed client leaves no
 * socket open and no timeout scheduled.
 */
import { describe, expect, it } from 'vitest';
import {
  type Client,
  type ClientEvents,
  type ClientOptions,
  createClient,
  ErrorCode,
  type HttpStatusError,
  type TelescopeError,
} from '../../src/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { closedPort, delay } from '../helpers/server.js';
import { closeAndCheck, type Fleet, type Mode, startFleet } from './writes-helpers.js';

type MoviesClient = Client<typeof movies>;

/** More retries than the default and a budget that never runs dry: only the rules stop a retry. */
const generousRetry = { maxRetries: 3, budget: { ratio: 10, minPerSecond: 1000 } } as const;

function collect<E extends keyof ClientEvents>(client: MoviesClient, event: E): Array<ClientEvents[E]> {
  const seen: Array<ClientEvents[E]> = [];
  client.on(event, (payload) => seen.push(payload));
  return seen;
}

/** A POST of the movie service with a call id the servers record. */
const rate = (client: MoviesClient, callId: string, headers: Record<string, string> = {}) =>
  client.rate({ id: 7 }, { stars: 4 }, { headers: { 'x-call-id': callId, ...headers } });

interface Fault {
  /** What goes wrong once the request may have reached the server. */
  mode: Mode;
  /** Client options that make the fault the one the call meets. */
  options: Partial<ClientOptions>;
  /** The error the caller gets. */
  code: ErrorCode;
  /** Whether another attempt could fix it (for an idempotent call). */
  retryable: boolean;
  /** The server answers after this long ('late' only). */
  lateMs?: number;
}

const faults: Array<[name: string, fault: Fault]> = [
  [
    '(a) connection reset after the request was fully received',
    { mode: 'reset', options: {}, code: ErrorCode.CONNECTION_RESET, retryable: true },
  ],
  [
    '(a′) connection reset in the middle of the response',
    { mode: 'reset-mid-response', options: {}, code: ErrorCode.CONNECTION_RESET, retryable: true },
  ],
  [
    '(b) processed, answered after the attempt timeout',
    {
      mode: 'late',
      options: { attemptTimeoutMs: 250, timeoutMs: 3000 },
      code: ErrorCode.ATTEMPT_TIMEOUT,
      retryable: true,
      lateMs: 700,
    },
  ],
  [
    '(b′) processed, answered after the call deadline',
    { mode: 'late', options: { timeoutMs: 300 }, code: ErrorCode.DEADLINE_EXCEEDED, retryable: false, lateMs: 700 },
  ],
  ['(c) answered 503', { mode: '503', options: {}, code: ErrorCode.HTTP_STATUS, retryable: true }],
];

/** Checks an error of a write that reached a server: the fault's code, sent, first attempt. */
function expectSentFailure(error: TelescopeError, fault: Fault, fleet: Fleet, attempt = 1): void {
  expect(error.code).toBe(fault.code);
  expect(error.requestSent).toBe(true);
  expect(error.retryable).toBe(fault.retryable);
  expect(error.attempt).toBe(attempt);
  expect(error.service).toBe('movies');
  expect(error.endpoint).toBe('rate');
  expect(fleet.urls).toContain(error.instance);
  if (fault.code === ErrorCode.HTTP_STATUS) expect((error as HttpStatusError).status).toBe(503);
}

// --- without a key: at most once ------------------------------------------------------------

describe('writes: a POST without an idempotency key reaches the servers at most once', () => {
  it.each(faults)('%s: 8 concurrent POSTs, one request each, nothing retried', async (_name, fault) => {
    const fleet = await startFleet(3, fault.mode, fault.lateMs);
    const client = createClient(movies, {
      instances: fleet.urls,
      breaker: false,
      retry: generousRetry,
      ...fault.options,
    });
    const retries = collect(client, 'retry');
    const exhausted = collect(client, 'budget-exhausted');
    try {
      const tokensBefore = client.retryTokens();
      const ids = Array.from({ length: 8 }, (_, index) => `call-${index}`);
      const errors = await Promise.all(ids.map((id) => failure(rate(client, id))));
      for (const error of errors) {
        expectSentFailure(error, fault, fleet);
        // Not a retry refused by the budget: no retry was ever considered.
        expect(error.retryBudgetExhausted).toBeUndefined();
      }
      // A late answer must not turn into a second request either: wait past it.
      if (fault.mode === 'late') await delay(fault.lateMs ?? 0);
      for (const id of ids) expect(fleet.of(id), id).toHaveLength(1);
      expect(fleet.arrivals).toHaveLength(ids.length);
      expect(retries).toEqual([]);
      expect(exhausted).toEqual([]);
      // Nothing was withdrawn from the retry budget (each call only deposited).
      expect(client.retryTokens()).toBeGreaterThanOrEqual(tokensBefore);
      expect(client.stats().endpoints.rate).toMatchObject({ requests: 8, retries: 0, hedges: 0 });
      if (fault.mode === 'late') {
        // The servers did see the client give up on each of them.
        const abandoned = fleet.instances.flatMap((instance) => instance.abandoned).sort();
        expect(abandoned).toEqual([...ids].sort());
      }
      await closeAndCheck(client, fleet);
    } finally {
      await client.close();
    }
  });

  it('(d) breaker: an open circuit sends nothing, and the half-open probe POST goes once', async () => {
    const fleet = await startFleet(3, '503');
    const client = createClient(movies, {
      instances: fleet.urls,
      retry: generousRetry,
      outlier: false,
      breaker: { volumeThreshold: 4, errorThresholdPercentage: 50, resetTimeoutMs: 1000, rollingWindowMs: 10_000 },
    });
    const states: string[] = [];
    client.on('breaker', (event) => states.push(event.state));
    const fault: Fault = { mode: '503', options: {}, code: ErrorCode.HTTP_STATUS, retryable: true };
    try {
      // Four failed writes open the circuit: four requests, one each.
      for (let index = 0; index < 4; index++) {
        expectSentFailure(await failure(rate(client, `open-${index}`)), fault, fleet);
      }
      expect(states).toEqual(['open']);
      expect(fleet.arrivals).toHaveLength(4);

      // Open: fails fast, certainly unsent.
      for (let index = 0; index < 3; index++) {
        const error = await failure(rate(client, `rejected-${index}`));
        expect(error.code).toBe(ErrorCode.CIRCUIT_OPEN);
        expect(error.requestSent).toBe(false);
        expect(error.retryable).toBe(false);
      }
      expect(fleet.arrivals).toHaveLength(4);

      // Half-open: of three writes made together, one is the probe; it goes once and fails.
      await waitFor('the circuit to go half-open', () => states.includes('half-open'), 5000);
      const probes = await Promise.all(['probe-0', 'probe-1', 'probe-2'].map((id) => failure(rate(client, id))));
      const sent = probes.filter((error) => error.code === ErrorCode.HTTP_STATUS);
      expect(sent).toHaveLength(1);
      expectSentFailure(sent[0]!, fault, fleet);
      for (const error of probes.filter((other) => other !== sent[0])) {
        expect(error.code).toBe(ErrorCode.CIRCUIT_OPEN);
        expect(error.requestSent).toBe(false);
      }
      expect(fleet.arrivals).toHaveLength(5);
      expect(fleet.arrivals[4]?.callId).toMatch(/^probe-/);
      expect(states).toEqual(['open', 'half-open', 'open']);

      // The next half-open probes, with the servers back: each goes once; three close the circuit.
      fleet.setMode('ok');
      await waitFor('the circuit to go half-open again', () => states.length === 4, 5000);
      expect(await rate(client, 'probe-ok')).toEqual({ ok: true });
      expect(fleet.of('probe-ok')).toHaveLength(1);
      // halfOpenProbes (3 by default) must all pass: the first went alone, the other two go
      // together, each once, and the last one closes the circuit.
      expect(states).toEqual(['open', 'half-open', 'open', 'half-open']);
      const passing = ['probe-ok-1', 'probe-ok-2'];
      expect(await Promise.all(passing.map((id) => rate(client, id)))).toEqual([{ ok: true }, { ok: true }]);
      for (const id of passing) expect(fleet.of(id)).toHaveLength(1);
      expect(fleet.arrivals).toHaveLength(8);
      expect(states).toEqual(['open', 'half-open', 'open', 'half-open', 'closed']);
      await closeAndCheck(client, fleet);
    } finally {
      await client.close();
    }
  });

  it('(e) hedging on, slow instances: a POST is never hedged, one request, however slow', async () => {
    const fleet = await startFleet(3, 'late', 150);
    const client = createClient(movies, {
      instances: fleet.urls,
      breaker: false,
      retry: generousRetry,
      hedge: { delayMs: 20 },
      timeoutMs: 3000,
    });
    const hedges = collect(client, 'hedge');
    try {
      for (let index = 0; index < 4; index++) {
        const start = performance.now();
        expect(await rate(client, `slow-${index}`)).toEqual({ ok: true });
        // It waited for the slow answer instead of racing a second request.
        expect(performance.now() - start).toBeGreaterThanOrEqual(120);
        expect(fleet.of(`slow-${index}`)).toHaveLength(1);
      }
      expect(fleet.arrivals).toHaveLength(4);
      expect(hedges).toEqual([]);
      expect(fleet.instances.flatMap((instance) => instance.abandoned)).toEqual([]);
      expect(client.stats().endpoints.rate).toMatchObject({ successes: 4, hedges: 0, retries: 0 });
      await closeAndCheck(client, fleet);
    } finally {
      await client.close();
    }
  });

  it('the caller aborts, or the client closes, while the POST is at the server: sent once, not repeated', async () => {
    const fleet = await startFleet(3, 'late', 1000);
    const client = createClient(movies, { instances: fleet.urls, breaker: false, retry: generousRetry });
    try {
      const controller = new AbortController();
      const aborted = failure(
        client.rate({ id: 7 }, { stars: 4 }, { signal: controller.signal, headers: { 'x-call-id': 'aborted' } }),
      );
      await waitFor('the write to reach a server', () => fleet.of('aborted').length === 1);
      controller.abort(new Error('caller went away'));
      const abortError = await aborted;
      expect(abortError.code).toBe(ErrorCode.ABORTED);
      expect(abortError.requestSent).toBe(true);

      const closing = failure(rate(client, 'closing'));
      await waitFor('the write to reach a server', () => fleet.of('closing').length === 1);
      await client.close();
      const closeError = await closing;
      expect(closeError.code).toBe(ErrorCode.CLIENT_CLOSED);
      expect(closeError.requestSent).toBe(true);
      // After close, a write fails at once and certainly unsent.
      const after = await failure(rate(client, 'after-close'));
      expect(after.code).toBe(ErrorCode.CLIENT_CLOSED);
      expect(after.requestSent).toBe(false);

      await delay(300); // a retry would be under way by now
      expect(fleet.arrivals.map((arrival) => arrival.callId)).toEqual(['aborted', 'closing']);
      await closeAndCheck(client, fleet);
    } finally {
      await client.close();
    }
  });

  it('(f) budget plenty, maxRetries 3, every fault at once: each write reaches a live server exactly once', async () => {
    // Instances: refused, reset, 503, late (past the attempt timeout), healthy. Round-robin, so
    // each kind is met by every fifth first attempt.
    const refused = `http://127.0.0.1:${await closedPort()}`;
    const fleet = await startFleet(4, 'ok', 600);
    const modes: Mode[] = ['reset', '503', 'late', 'ok'];
    fleet.instances.forEach((instance, index) => {
      instance.mode = modes[index]!;
    });
    const client = createClient(movies, {
      instances: [refused, ...fleet.urls],
      balancer: 'round-robin',
      breaker: false,
      outlier: false,
      retry: generousRetry,
      attemptTimeoutMs: 250,
      timeoutMs: 3000,
    });
    const retries = collect(client, 'retry');
    try {
      const ids = Array.from({ length: 25 }, (_, index) => `mixed-${index}`);
      const results: Array<{ id: string; value?: unknown; error?: TelescopeError }> = [];
      // Five at a time, so that pooled sockets, resets and timeouts interleave.
      for (let start = 0; start < ids.length; start += 5) {
        const batch = ids.slice(start, start + 5);
        results.push(
          ...(await Promise.all(
            batch.map((id) =>
              rate(client, id).then(
                (value) => ({ id, value }),
                (error: TelescopeError) => ({ id, error }),
              ),
            ),
          )),
        );
      }
      await delay(600); // past every late answer
      for (const result of results) {
        const arrivals = fleet.of(result.id);
        expect(arrivals, result.id).toHaveLength(1);
        const mode = modes[arrivals[0]!.instance]!;
        if (mode === 'ok') {
          expect(result.value, result.id).toEqual({ ok: true });
          continue;
        }
        expect(result.error?.requestSent, result.id).toBe(true);
        expect(result.error?.code, result.id).toBe(
          { reset: ErrorCode.CONNECTION_RESET, '503': ErrorCode.HTTP_STATUS, late: ErrorCode.ATTEMPT_TIMEOUT }[
            mode as 'reset' | '503' | 'late'
          ],
        );
      }
      // Every instance was met, and the only retries were of writes refused before sending.
      expect(new Set(fleet.arrivals.map((arrival) => arrival.instance))).toEqual(new Set([0, 1, 2, 3]));
      expect(retries.length).toBeGreaterThanOrEqual(4);
      for (const retry of retries) expect(retry).toMatchObject({ code: ErrorCode.CONNECT_FAILED, instance: refused });
      expect(client.stats().endpoints.rate?.retries).toBe(retries.length);
      await closeAndCheck(client, fleet);
    } finally {
      await client.close();
    }
  });
});

// --- with a key: retried, same key, another instance ----------------------------------------

describe('writes: a POST with an idempotency-key may be retried, with the same key, elsewhere', () => {
  const retryable = faults.filter(([, fault]) => fault.retryable);

  it.each(retryable)('%s: three attempts, one per instance, one key', async (_name, fault) => {
    const fleet = await startFleet(3, fault.mode, fault.lateMs);
    const client = createClient(movies, {
      instances: fleet.urls,
      breaker: false,
      outlier: false,
      retry: { ...generousRetry, maxRetries: 2 },
      ...fault.options,
    });
    const retries = collect(client, 'retry');
    try {
      const error = await failure(rate(client, 'keyed', { 'Idempotency-Key': 'key-7f3a' }));
      expectSentFailure(error, fault, fleet, 3);
      if (fault.mode === 'late') await delay(fault.lateMs ?? 0);
      const arrivals = fleet.of('keyed');
      expect(arrivals).toHaveLength(3);
      expect(arrivals.map((arrival) => arrival.key)).toEqual(['key-7f3a', 'key-7f3a', 'key-7f3a']);
      expect(new Set(arrivals.map((arrival) => arrival.instance)).size).toBe(3);
      // The same body every time.
      const bodies = fleet.instances.flatMap((instance) => instance.server.requests.map((request) => request.body));
      expect(bodies).toEqual(['{"stars":4}', '{"stars":4}', '{"stars":4}']);
      expect(retries.map((retry) => [retry.attempt, retry.code])).toEqual([
        [2, fault.code],
        [3, fault.code],
      ]);
      // Each retry names the instance that failed: the first two arrivals' instances.
      expect(retries.map((retry) => retry.instance)).toEqual(arrivals.slice(0, 2).map((a) => fleet.urls[a.instance]));
      await closeAndCheck(client, fleet);
    } finally {
      await client.close();
    }
  });

  it.each(retryable)('%s on one instance of three: the retry answers, same key, other instance', async (_n, fault) => {
    const fleet = await startFleet(3, 'ok', fault.lateMs);
    fleet.instances[0]!.mode = fault.mode;
    // Round-robin from the first instance: every client's first attempt meets the fault.
    const make = () =>
      createClient(movies, {
        instances: fleet.urls,
        balancer: 'round-robin',
        breaker: false,
        outlier: false,
        retry: generousRetry,
        ...fault.options,
      });
    const keyed = make();
    const unkeyed = make();
    try {
      expect(await rate(keyed, 'keyed', { 'idempotency-key': 'key-9c1d' })).toEqual({ ok: true });
      expect(fleet.of('keyed').map((arrival) => [arrival.instance, arrival.key])).toEqual([
        [0, 'key-9c1d'],
        [1, 'key-9c1d'],
      ]);
      // Without the key, the same fault on the same instance is not retried.
      const error = await failure(rate(unkeyed, 'unkeyed'));
      expectSentFailure(error, fault, fleet);
      if (fault.mode === 'late') await delay(fault.lateMs ?? 0);
      expect(fleet.of('unkeyed')).toEqual([expect.objectContaining({ instance: 0, key: undefined })]);
      await keyed.close();
      await closeAndCheck(unkeyed, fleet);
    } finally {
      await keyed.close();
      await unkeyed.close();
    }
  });

  it('(d) breaker half-open: a keyed probe is one attempt, one key, one request; the call beside it sends nothing', async () => {
    const fleet = await startFleet(3, '503');
    const client = createClient(movies, {
      instances: fleet.urls,
      outlier: false,
      retry: { ...generousRetry, maxRetries: 2 },
      breaker: { volumeThreshold: 2, errorThresholdPercentage: 50, resetTimeoutMs: 300, rollingWindowMs: 10_000 },
    });
    const states: string[] = [];
    client.on('breaker', (event) => states.push(event.state));
    try {
      // Two unkeyed writes open the circuit (one request each).
      for (const id of ['open-0', 'open-1']) await failure(rate(client, id));
      expect(fleet.arrivals).toHaveLength(2);
      expect(states).toEqual(['open']);
      await waitFor('the circuit to go half-open', () => states.includes('half-open'), 5000);
      const [probe, rejected] = await Promise.all([
        failure(rate(client, 'probe', { 'idempotency-key': 'key-probe' })),
        failure(rate(client, 'beside-probe', { 'idempotency-key': 'key-other' })),
      ]);
      // A probe is one attempt (no retry, no hedge inside it): even with a key and retries
      // left, the 503 answers the probe and reopens the circuit.
      expect(probe.code).toBe(ErrorCode.HTTP_STATUS);
      expect(probe.attempt).toBe(1);
      expect(rejected.code).toBe(ErrorCode.CIRCUIT_OPEN);
      expect(rejected.requestSent).toBe(false);
      expect(fleet.of('probe').map((arrival) => arrival.key)).toEqual(['key-probe']);
      expect(fleet.of('beside-probe')).toEqual([]);
      expect(fleet.arrivals).toHaveLength(3);
      expect(states).toEqual(['open', 'half-open', 'open']);
      await closeAndCheck(client, fleet);
    } finally {
      await client.close();
    }
  });

  it('(e) hedging on, slow instances: a keyed POST is hedged once, same key, another instance', async () => {
    const fleet = await startFleet(3, 'late', 400);
    const client = createClient(movies, {
      instances: fleet.urls,
      breaker: false,
      outlier: false,
      retry: generousRetry,
      hedge: { delayMs: 20 },
      timeoutMs: 3000,
    });
    const hedges = collect(client, 'hedge');
    try {
      for (let index = 0; index < 3; index++) {
        expect(await rate(client, `hedged-${index}`, { 'idempotency-key': `key-${index}` })).toEqual({ ok: true });
        const arrivals = fleet.of(`hedged-${index}`);
        expect(arrivals).toHaveLength(2);
        expect(arrivals.map((arrival) => arrival.key)).toEqual([`key-${index}`, `key-${index}`]);
        expect(arrivals[0]!.instance).not.toBe(arrivals[1]!.instance);
      }
      expect(hedges).toHaveLength(3);
      // Nothing more arrives later: a hedge is one extra attempt, never a retry of the loser.
      await delay(500);
      expect(fleet.arrivals).toHaveLength(6);
      expect(client.stats().endpoints.rate).toMatchObject({ successes: 3, hedges: 3 });
      await closeAndCheck(client, fleet);
    } finally {
      await client.close();
    }
  });
});
