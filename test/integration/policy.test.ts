/**
 * Per-endpoint policy and response classification on real node:http servers on 127.0.0.1.
 * Every assertion reads what the servers saw: which attempts arrived, on which instance, with
 * which `x-request-attempt`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it, onTestFinished } from 'vitest';
import { z } from 'zod';
import {
  type ClassifyInput,
  type ClientOptions,
  createClient,
  defineService,
  ErrorCode,
  endpoint,
  type ServiceDefinition,
} from '../../src/index.js';
import { failure } from '../helpers/assert.js';
import { seededRandom } from '../helpers/random.js';
import { sendJson, startServer } from '../helpers/server.js';

/** What one instance saw of one request. */
interface Seen {
  instance: number;
  path: string;
  attempt: string | undefined;
  idempotencyKey: string | undefined;
}

type Answer = (seen: Seen, index: number) => { status: number; body: unknown };

/** `count` instances that share one log and answer by `answer(seen, index in the log)`. */
async function instances(count: number, answer: Answer): Promise<{ urls: string[]; seen: Seen[] }> {
  const seen: Seen[] = [];
  const urls: string[] = [];
  for (let instance = 0; instance < count; instance++) {
    const server = await startServer((request: IncomingMessage, response: ServerResponse) => {
      const entry: Seen = {
        instance,
        path: request.url ?? '',
        attempt: header(request, 'x-request-attempt'),
        idempotencyKey: header(request, 'idempotency-key'),
      };
      seen.push(entry);
      const { status, body } = answer(entry, seen.length - 1);
      sendJson(response, status, body);
    });
    urls.push(server.url);
  }
  return { urls, seen };
}

function header(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function client<S extends ServiceDefinition>(service: S, urls: string[], options: Partial<ClientOptions> = {}) {
  const created = createClient(service, {
    instances: urls,
    timeoutMs: 3000,
    random: seededRandom(7),
    outlier: false,
    ...options,
  });
  onTestFinished(() => created.close());
  return created;
}

const Body = z.object({ ok: z.boolean() });
/** The answer's `{ error }` body: a 200 that carries an error. */
const carriesError = (result: ClassifyInput) =>
  result.status === 200 && (result.body as { error?: string } | undefined)?.error === 'busy'
    ? ('retryable-failure' as const)
    : undefined;

describe('x-request-attempt', () => {
  it('each attempt carries its 1-based number; the retry goes to another instance', async () => {
    const { urls, seen } = await instances(2, (_seen, index) =>
      index === 0 ? { status: 503, body: { ok: false } } : { status: 200, body: { ok: true } },
    );
    const api = defineService({ name: 'api', endpoints: { get: endpoint({ method: 'GET', path: '/get' }) } });
    await client(api, urls).get();
    expect(seen.map((entry) => entry.attempt)).toEqual(['1', '2']);
    expect(seen[0]?.instance).not.toBe(seen[1]?.instance);
  });

  it('attemptHeader: false sends none', async () => {
    const { urls, seen } = await instances(1, () => ({ status: 200, body: { ok: true } }));
    const api = defineService({ name: 'api', endpoints: { get: endpoint({ method: 'GET', path: '/get' }) } });
    await client(api, urls, { attemptHeader: false }).get();
    expect(seen.map((entry) => entry.attempt)).toEqual([undefined]);
  });
});

describe('per-endpoint policy', () => {
  it('an endpoint retries on its own while the client does not; the others keep the client’s setting', async () => {
    const { urls, seen } = await instances(3, () => ({ status: 503, body: { ok: false } }));
    const api = defineService({
      name: 'api',
      endpoints: {
        plain: endpoint({ method: 'GET', path: '/plain' }),
        patient: endpoint({ method: 'GET', path: '/patient', retry: { maxRetries: 2 } }),
      },
    });
    const calls = client(api, urls, { retry: false });
    expect((await failure(calls.plain())).code).toBe(ErrorCode.HTTP_STATUS);
    expect((await failure(calls.patient())).code).toBe(ErrorCode.HTTP_STATUS);
    const plain = seen.filter((entry) => entry.path === '/plain');
    const patient = seen.filter((entry) => entry.path === '/patient');
    expect(plain.map((entry) => entry.attempt)).toEqual(['1']);
    expect(patient.map((entry) => entry.attempt)).toEqual(['1', '2', '3']);
    // Three attempts, three different instances.
    expect(new Set(patient.map((entry) => entry.instance)).size).toBe(3);
  });

  it('retry: false on one endpoint, retries elsewhere', async () => {
    const { urls, seen } = await instances(2, () => ({ status: 503, body: { ok: false } }));
    const api = defineService({
      name: 'api',
      endpoints: {
        once: endpoint({ method: 'GET', path: '/once', retry: false }),
        twice: endpoint({ method: 'GET', path: '/twice' }),
      },
    });
    const calls = client(api, urls);
    await failure(calls.once());
    await failure(calls.twice());
    expect(seen.filter((entry) => entry.path === '/once')).toHaveLength(1);
    expect(seen.filter((entry) => entry.path === '/twice')).toHaveLength(2);
  });

  it('statuses: a 500 is retried when listed, a 503 is not when left out', async () => {
    const { urls, seen } = await instances(2, (entry) =>
      entry.path === '/five-hundred' ? { status: 500, body: { ok: false } } : { status: 503, body: { ok: false } },
    );
    const api = defineService({
      name: 'api',
      endpoints: {
        fiveHundred: endpoint({ method: 'GET', path: '/five-hundred', retry: { statuses: [500] } }),
        unavailable: endpoint({ method: 'GET', path: '/unavailable', retry: { statuses: [500] } }),
      },
    });
    const calls = client(api, urls);
    const error = await failure(calls.fiveHundred());
    expect(error.retryable).toBe(true);
    const other = await failure(calls.unavailable());
    expect(other.retryable).toBe(false);
    expect(seen.filter((entry) => entry.path === '/five-hundred').map((entry) => entry.attempt)).toEqual(['1', '2']);
    expect(seen.filter((entry) => entry.path === '/unavailable').map((entry) => entry.attempt)).toEqual(['1']);
  });

  it('attemptTimeoutMs per endpoint: a hanging answer fails the attempt, not the whole budget', async () => {
    const server = await startServer(() => undefined); // never answers
    const api = defineService({
      name: 'api',
      endpoints: { quick: endpoint({ method: 'GET', path: '/quick', attemptTimeoutMs: 100 }) },
    });
    const started = performance.now();
    const error = await failure(client(api, [server.url], { retry: false }).quick());
    expect(error.code).toBe(ErrorCode.ATTEMPT_TIMEOUT);
    expect(performance.now() - started).toBeLessThan(2500);
  });

  it('hedge per endpoint: a slow first attempt gets a second, numbered 2, on the other instance', async () => {
    const seen: Array<{ instance: number; attempt: string | undefined }> = [];
    const urls: string[] = [];
    for (const instance of [0, 1]) {
      const server = await startServer((request, response) => {
        seen.push({ instance, attempt: header(request, 'x-request-attempt') });
        // Whoever gets the first attempt hangs; the hedge answers.
        if (seen.length === 1) return;
        sendJson(response, 200, { ok: true });
      });
      urls.push(server.url);
    }
    const api = defineService({
      name: 'api',
      endpoints: { hedged: endpoint({ method: 'GET', path: '/hedged', hedge: { delayMs: 50 }, response: Body }) },
    });
    expect(await client(api, urls).hedged()).toEqual({ ok: true });
    expect(seen.map((entry) => entry.attempt)).toEqual(['1', '2']);
    expect(seen[0]?.instance).not.toBe(seen[1]?.instance);
  });
});

describe('response classification', () => {
  it('a 200 carrying an error body is a retryable failure: retried on another instance', async () => {
    const { urls, seen } = await instances(2, (_entry, index) =>
      index === 0 ? { status: 200, body: { error: 'busy' } } : { status: 200, body: { ok: true } },
    );
    const api = defineService({
      name: 'api',
      endpoints: { get: endpoint({ method: 'GET', path: '/get', response: Body, retry: { classify: carriesError } }) },
    });
    const calls = client(api, urls);
    expect(await calls.get()).toEqual({ ok: true });
    expect(seen.map((entry) => entry.attempt)).toEqual(['1', '2']);
    expect(calls.stats().endpoints.get?.retries).toBe(1);
  });

  it('when every answer carries the error, the call fails with CLASSIFIED_FAILURE and the body', async () => {
    const { urls } = await instances(2, () => ({ status: 200, body: { error: 'busy' } }));
    const api = defineService({
      name: 'api',
      endpoints: { get: endpoint({ method: 'GET', path: '/get', retry: { classify: carriesError } }) },
    });
    const error = await failure(client(api, urls).get());
    expect(error.code).toBe(ErrorCode.CLASSIFIED_FAILURE);
    expect(error.responseClass).toBe('retryable-failure');
    expect((error as unknown as { body: unknown }).body).toEqual({ error: 'busy' });
  });

  it('a 409 classified as a failure opens the breaker; unclassified 409s never do', async () => {
    const { urls, seen } = await instances(1, () => ({ status: 409, body: { conflict: true } }));
    const breaker = { volumeThreshold: 3, errorThresholdPercentage: 50 };
    const api = defineService({
      name: 'api',
      endpoints: {
        judged: endpoint({
          method: 'GET',
          path: '/judged',
          breaker,
          retry: { classify: (result) => (result.status === 409 ? 'failure' : undefined) },
        }),
        plain: endpoint({ method: 'GET', path: '/plain', breaker }),
      },
    });
    const calls = client(api, urls);
    for (let index = 0; index < 4; index++) {
      await failure(calls.judged());
      await failure(calls.plain());
    }
    const judged = await failure(calls.judged());
    expect(judged.code).toBe(ErrorCode.CIRCUIT_OPEN);
    const plain = await failure(calls.plain());
    expect(plain.code).toBe(ErrorCode.HTTP_STATUS);
    // The open circuit sent nothing; a 409 classified 'failure' is not retried either.
    expect(seen.filter((entry) => entry.path === '/judged').length).toBeLessThanOrEqual(4);
    expect(seen.every((entry) => entry.attempt === '1')).toBe(true);
    expect(calls.stats().endpoints.judged?.breaker).toBe('open');
    expect(calls.stats().endpoints.plain?.breaker).toBe('closed');
  });

  it('a 503 classified as a success is not retried, counts as a success in stats and for ejection', async () => {
    const { urls, seen } = await instances(2, () => ({ status: 503, body: { maintenance: true } }));
    const api = defineService({
      name: 'api',
      endpoints: {
        get: endpoint({
          method: 'GET',
          path: '/get',
          retry: { classify: (result) => (result.status === 503 ? 'success' : undefined) },
        }),
      },
    });
    const calls = client(api, urls, { outlier: { consecutiveFailures: 2 } });
    for (let index = 0; index < 4; index++) {
      const error = await failure(calls.get());
      expect(error.code).toBe(ErrorCode.HTTP_STATUS);
      expect(error.responseClass).toBe('success');
    }
    expect(seen.map((entry) => entry.attempt)).toEqual(['1', '1', '1', '1']);
    const stats = calls.stats();
    expect(stats.endpoints.get?.successes).toBe(4);
    expect(stats.instances.every((instance) => !instance.ejected && instance.consecutiveFailures === 0)).toBe(true);
  });

  it('a write is never repeated on a classified retryable failure, unless it has an idempotency key', async () => {
    const { urls, seen } = await instances(2, () => ({ status: 200, body: { error: 'busy' } }));
    const api = defineService({
      name: 'api',
      endpoints: {
        create: endpoint({
          method: 'POST',
          path: '/create',
          body: z.object({ name: z.string() }),
          retry: { classify: carriesError },
        }),
      },
    });
    const calls = client(api, urls);
    await failure(calls.create({ name: 'a' }));
    expect(seen).toHaveLength(1);
    await failure(calls.create({ name: 'b' }, { headers: { 'idempotency-key': 'k-1' } }));
    const keyed = seen.slice(1);
    expect(keyed.map((entry) => entry.attempt)).toEqual(['1', '2']);
    expect(keyed.map((entry) => entry.idempotencyKey)).toEqual(['k-1', 'k-1']);
  });

  it('a classifier that throws fails the call with INVALID_RESPONSE, once, and no unhandled rejection', async () => {
    const { urls, seen } = await instances(2, () => ({ status: 200, body: { ok: true } }));
    const api = defineService({
      name: 'api',
      endpoints: {
        get: endpoint({
          method: 'GET',
          path: '/get',
          retry: {
            classify: () => {
              throw new Error('classifier bug');
            },
          },
        }),
        odd: endpoint({
          method: 'GET',
          path: '/odd',
          // A classifier that answers something else is as unusable.
          retry: { classify: () => 'maybe' as never },
        }),
      },
    });
    const calls = client(api, urls);
    const error = await failure(calls.get());
    expect(error.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(error.message).toContain('classifier bug');
    const odd = await failure(calls.odd());
    expect(odd.code).toBe(ErrorCode.INVALID_RESPONSE);
    expect(seen).toHaveLength(2);
  });
});

describe('bad policy options: INVALID_OPTION at createClient, naming endpoints.<name>.<option>', () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['a status out of range', { retry: { statuses: [200] } }, 'endpoints.get.retry.statuses[]'],
    ['statuses not an array', { retry: { statuses: 503 } }, 'endpoints.get.retry.statuses'],
    ['a negative backoff base', { retry: { backoff: { baseMs: -1 } } }, 'endpoints.get.retry.backoff.baseMs'],
    ['an inverted backoff', { retry: { backoff: { baseMs: 100, maxMs: 50 } } }, 'endpoints.get.retry.backoff.maxMs'],
    ['an unknown backoff key', { retry: { backoff: { base: 10 } } }, 'endpoints.get.retry.backoff.base'],
    ['a classify that is not a function', { retry: { classify: 'yes' } }, 'endpoints.get.retry.classify'],
    ['an unknown retry key', { retry: { maxRetry: 2 } }, 'endpoints.get.retry.maxRetry'],
    ['a budget per endpoint', { retry: { budget: { ratio: 1 } } }, 'endpoints.get.retry.budget'],
    ['too many retries', { retry: { maxRetries: 50 } }, 'endpoints.get.retry.maxRetries'],
    ['an unknown hedge key', { hedge: { delay: 5 } }, 'endpoints.get.hedge.delay'],
    ['a negative hedge delay', { hedge: { delayMs: -5 } }, 'endpoints.get.hedge.delayMs'],
    ['an unknown breaker key', { breaker: { threshold: 5 } }, 'endpoints.get.breaker.threshold'],
    ['a bad breaker value', { breaker: { volumeThreshold: -1 } }, 'endpoints.get.breaker.volumeThreshold'],
    ['a zero attempt timeout', { attemptTimeoutMs: 0 }, 'endpoints.get.attemptTimeoutMs'],
    ['retry not an object', { retry: 3 }, 'endpoints.get.retry'],
  ];
  for (const [what, policy, name] of cases) {
    it(what, () => {
      const api = defineService({
        name: 'api',
        endpoints: { get: endpoint({ method: 'GET', path: '/get', ...(policy as object) }) },
      });
      let thrown: unknown;
      try {
        createClient(api, { instances: ['http://127.0.0.1:1'] });
      } catch (error) {
        thrown = error;
      }
      expect((thrown as { code?: string }).code).toBe(ErrorCode.INVALID_OPTION);
      expect((thrown as Error).message.startsWith(`${name} must be`)).toBe(true);
    });
  }

  it('the client-level retry options are checked too', () => {
    const api = defineService({ name: 'api', endpoints: { get: endpoint({ method: 'GET', path: '/get' }) } });
    expect(() => createClient(api, { instances: ['http://127.0.0.1:1'], retry: { statuses: [99] } })).toThrow(
      /retry\.statuses\[\] must be/,
    );
    expect(() =>
      createClient(api, { instances: ['http://127.0.0.1:1'], retry: { backoff: { baseMs: 10, maxMs: 5 } } }),
    ).toThrow(/retry\.backoff\.maxMs must be/);
  });
});
