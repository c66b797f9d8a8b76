/**
 * The clients under test. Each variant turns a list of target origins into one operation,
 * `getMovie(id)`, that resolves with the decoded JSON body after checking the status.
 * Libraries are imported lazily so that a client child loads only the one it measures
 * (its peak RSS is then that library's, not every library's).
 *
 * With several origins, every variant round-robins over them per request, as telescope's
 * balancer does, so the comparison stays like for like.
 */
import type { Agent as HttpAgent } from 'node:http';
import type { Dispatcher } from 'undici';

/** A client ready to be driven: one request per call, plus cleanup. */
export interface Driver {
  getMovie(id: number): Promise<unknown>;
  close(): Promise<void>;
}

export interface Variant {
  readonly name: string;
  /** One line for the results table's legend. */
  readonly description: string;
  /** The target's origins it talks to: HTTP/1.1 unless `h2c` or `h2` (over TLS). */
  readonly protocol?: 'h2c' | 'h2';
  /** The variant its ratios are computed against (raw undici over the same protocol). @default 'undici' */
  readonly baseline?: string;
  create(urls: readonly string[], target: { ca: string }): Promise<Driver>;
}

/** Round-robin over `items`: the same cheap picker for every variant. */
function roundRobin<T>(items: readonly T[]): () => T {
  if (items.length === 0) throw new Error('no target URLs');
  if (items.length === 1) {
    const only = items[0] as T;
    return () => only;
  }
  let cursor = 0;
  return () => items[cursor++ % items.length] as T;
}

function statusError(variant: string, status: number): Error {
  return new Error(`${variant}: HTTP ${status}`);
}

async function keepAliveAgent(): Promise<HttpAgent> {
  const { Agent } = await import('node:http');
  // Unlimited sockets, like undici's Pool default, so every variant may open one per request in flight.
  return new Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: Number.POSITIVE_INFINITY });
}

const undiciPool: Variant = {
  name: 'undici',
  description: 'undici `Pool.request` + `body.json()`: the floor every ratio is measured against',
  async create(urls) {
    const { Pool } = await import('undici');
    const pools = urls.map((url) => new Pool(url));
    const nextPool = roundRobin(pools);
    return {
      async getMovie(id) {
        const { statusCode, body } = await nextPool().request({ method: 'GET', path: `/movies/${id}` });
        if (statusCode !== 200) {
          await body.dump();
          throw statusError('undici', statusCode);
        }
        return body.json();
      },
      async close() {
        await Promise.all(pools.map((pool) => pool.close()));
      },
    };
  },
};

/**
 * A minimal `Dispatcher.DispatchHandler`: buffers the body, then parses it. This is the
 * mechanism telescope's transport is built on, without any of its layers, so the gap between
 * this and telescope is what the layers cost.
 */
class BufferingHandler implements Dispatcher.DispatchHandler {
  readonly promise: Promise<unknown>;
  #resolve!: (body: unknown) => void;
  #reject!: (error: Error) => void;
  #status = 0;
  #chunks: Buffer[] = [];

  constructor() {
    this.promise = new Promise<unknown>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  // undici tells the new handler API from the legacy one by the presence of this method.
  onRequestStart(): void {}

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number): void {
    this.#status = statusCode;
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.#chunks.push(chunk);
  }

  onResponseEnd(): void {
    if (this.#status !== 200) {
      this.#reject(statusError('undici-dispatch', this.#status));
      return;
    }
    try {
      const body = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks);
      this.#resolve(JSON.parse(body.toString('utf8')));
    } catch (error) {
      this.#reject(error as Error);
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, error: Error): void {
    this.#reject(error);
  }
}

const undiciDispatch: Variant = {
  name: 'undici-dispatch',
  description: "undici `Pool.dispatch` with a buffering handler + `JSON.parse`: telescope's transport minus its layers",
  async create(urls) {
    const { Pool } = await import('undici');
    const pools = urls.map((url) => new Pool(url));
    const nextPool = roundRobin(pools);
    return {
      getMovie(id) {
        const handler = new BufferingHandler();
        nextPool().dispatch({ method: 'GET', path: `/movies/${id}` }, handler);
        return handler.promise;
      },
      async close() {
        await Promise.all(pools.map((pool) => pool.close()));
      },
    };
  },
};

const undiciFetch: Variant = {
  name: 'undici-fetch',
  description: '`fetch` from the undici package (WHATWG Request/Response objects)',
  async create(urls) {
    const { Agent, fetch } = await import('undici');
    const dispatcher = new Agent();
    const nextUrl = roundRobin(urls);
    return {
      async getMovie(id) {
        const response = await fetch(`${nextUrl()}/movies/${id}`, { dispatcher });
        if (response.status !== 200) {
          await response.arrayBuffer();
          throw statusError('undici-fetch', response.status);
        }
        return response.json();
      },
      async close() {
        await dispatcher.close();
      },
    };
  },
};

const nodeHttp: Variant = {
  name: 'node-http',
  description: '`node:http` `request` with a keep-alive `Agent`, body collected and `JSON.parse`d',
  async create(urls) {
    const { request } = await import('node:http');
    const agent = await keepAliveAgent();
    const origins = urls.map((url) => new URL(url));
    const nextOrigin = roundRobin(origins);
    return {
      getMovie(id) {
        const origin = nextOrigin();
        return new Promise<unknown>((resolve, reject) => {
          const outgoing = request(
            { agent, hostname: origin.hostname, port: origin.port, path: `/movies/${id}`, method: 'GET' },
            (response) => {
              const chunks: Buffer[] = [];
              response.on('data', (chunk: Buffer) => chunks.push(chunk));
              response.on('error', reject);
              response.on('end', () => {
                if (response.statusCode !== 200) {
                  reject(statusError('node-http', response.statusCode ?? 0));
                  return;
                }
                try {
                  resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
                } catch (error) {
                  reject(error);
                }
              });
            },
          );
          outgoing.on('error', reject);
          outgoing.end();
        });
      },
      async close() {
        agent.destroy();
      },
    };
  },
};

const got: Variant = {
  name: 'got',
  description: 'got 14, keep-alive agent, `responseType: json`, retries off',
  async create(urls) {
    const { default: gotDefault } = await import('got');
    const agent = await keepAliveAgent();
    const client = gotDefault.extend({
      agent: { http: agent },
      retry: { limit: 0 },
      throwHttpErrors: false,
      responseType: 'json',
    });
    const nextUrl = roundRobin(urls);
    return {
      async getMovie(id) {
        const response = await client.get<unknown>(`${nextUrl()}/movies/${id}`);
        if (response.statusCode !== 200) throw statusError('got', response.statusCode);
        return response.body;
      },
      async close() {
        agent.destroy();
      },
    };
  },
};

const axios: Variant = {
  name: 'axios',
  description: 'axios 1, http adapter with a keep-alive agent',
  async create(urls) {
    const { default: axiosDefault } = await import('axios');
    const agent = await keepAliveAgent();
    const client = axiosDefault.create({ adapter: 'http', httpAgent: agent, validateStatus: () => true });
    const nextUrl = roundRobin(urls);
    return {
      async getMovie(id) {
        const response = await client.get<unknown>(`${nextUrl()}/movies/${id}`);
        if (response.status !== 200) throw statusError('axios', response.status);
        return response.data;
      },
      async close() {
        agent.destroy();
      },
    };
  },
};

const cockatiel: Variant = {
  name: 'cockatiel',
  description: 'undici Pool.request in cockatiel retry(1) → sampling breaker → cooperative 1 s timeout',
  async create(urls) {
    const { Pool } = await import('undici');
    const { circuitBreaker, ExponentialBackoff, handleAll, retry, SamplingBreaker, TimeoutStrategy, timeout, wrap } =
      await import('cockatiel');
    const pools = urls.map((url) => new Pool(url));
    const nextPool = roundRobin(pools);
    // Configured as a service client would be; none of it fires against a healthy target.
    const policy = wrap(
      retry(handleAll, { maxAttempts: 1, backoff: new ExponentialBackoff({ initialDelay: 50 }) }),
      circuitBreaker(handleAll, {
        halfOpenAfter: 10_000,
        breaker: new SamplingBreaker({ threshold: 0.5, duration: 10_000 }),
      }),
      timeout(1000, TimeoutStrategy.Cooperative),
    );
    // cockatiel links each call's timeout signal to an outer one (by default a shared
    // never-aborted signal); with 64 calls in flight that trips Node's listener-leak warning.
    // A driver-wide signal with the limit lifted costs the same and keeps the output clean.
    const { EventEmitter } = await import('node:events');
    const shutdown = new AbortController();
    EventEmitter.setMaxListeners(0, shutdown.signal);
    return {
      getMovie(id) {
        return policy.execute(async ({ signal }) => {
          const { statusCode, body } = await nextPool().request({ method: 'GET', path: `/movies/${id}`, signal });
          if (statusCode !== 200) {
            await body.dump();
            throw statusError('cockatiel', statusCode);
          }
          return body.json();
        }, shutdown.signal);
      },
      async close() {
        await Promise.all(pools.map((pool) => pool.close()));
      },
    };
  },
};

const opossum: Variant = {
  name: 'opossum+p-retry',
  description: 'undici Pool.request in an opossum breaker (1 s timeout) inside p-retry (retries: 1)',
  async create(urls) {
    const { Pool } = await import('undici');
    const { default: CircuitBreaker } = await import('opossum');
    const { default: pRetry } = await import('p-retry');
    const pools = urls.map((url) => new Pool(url));
    const nextPool = roundRobin(pools);
    const fetchMovie = async (id: number): Promise<unknown> => {
      const { statusCode, body } = await nextPool().request({ method: 'GET', path: `/movies/${id}` });
      if (statusCode !== 200) {
        await body.dump();
        throw statusError('opossum+p-retry', statusCode);
      }
      return body.json();
    };
    const breaker = new CircuitBreaker(fetchMovie, {
      timeout: 1000,
      errorThresholdPercentage: 50,
      resetTimeout: 10_000,
    });
    return {
      getMovie(id) {
        return pRetry(() => breaker.fire(id), { retries: 1 });
      },
      async close() {
        // Stops opossum's rolling-window interval, which would otherwise keep the process alive.
        breaker.shutdown();
        await Promise.all(pools.map((pool) => pool.close()));
      },
    };
  },
};

/** telescope's typed client; `withResponseSchema` toggles zod validation of the body. */
function telescopeVariant(name: string, withResponseSchema: boolean): Variant {
  return {
    name,
    description: withResponseSchema
      ? 'telescope `createClient`, zod params + zod response schema, `timeoutMs: 1000`'
      : 'telescope `createClient`, zod params, no response schema (isolates validation cost)',
    async create(urls) {
      const { createClient } = await import('../../src/index.js');
      const { movies, moviesWithoutResponseSchema } = await import('./movie-service.js');
      // Two clients rather than one over a union, so each keeps its exact type.
      if (withResponseSchema) {
        const client = createClient(movies, { instances: urls, timeoutMs: 1000 });
        return { getMovie: (id) => client.getMovie({ id }), close: () => client.close() };
      }
      const client = createClient(moviesWithoutResponseSchema, { instances: urls, timeoutMs: 1000 });
      return { getMovie: (id) => client.getMovie({ id }), close: () => client.close() };
    },
  };
}

/** telescope with the cache extension in front: every call after the first per id is a local hit. */
const telescopeCache: Variant = {
  name: 'telescope-cache',
  description: 'telescope client behind `withCache` (local LRU, in-memory remote), serving local hits',
  async create(urls) {
    const { createClient } = await import('../../src/index.js');
    const { withCache } = await import('../../src/cache/index.js');
    const { moviesWithoutResponseSchema } = await import('./movie-service.js');
    const cached = withCache(createClient(moviesWithoutResponseSchema, { instances: urls, timeoutMs: 1000 }), {
      local: { maxEntries: 10_000, ttlMs: 600_000 },
      endpoints: { getMovie: { ttlMs: 600_000, key: (params) => `movie:${params.id}` } },
    });
    return { getMovie: (id) => cached.getMovie({ id }), close: () => cached.close() };
  },
};

/**
 * Raw undici over HTTP/2: one `Client` per origin (one connection, streams multiplexed up to
 * 100 in flight), h2c by prior knowledge or h2 by ALPN over TLS. The floor of the HTTP/2 rows.
 */
function undiciHttp2(protocol: 'h2c' | 'h2', headers?: Record<string, string>): Variant {
  const name = headers === undefined ? `undici-${protocol}` : `undici-${protocol}-headers`;
  return {
    name,
    description:
      headers === undefined
        ? `undici \`Client\` over ${protocol === 'h2c' ? 'h2c (prior knowledge)' : 'h2 (TLS, ALPN)'}, \`pipelining: 100\`, \`request\` + \`body.json()\`: the floor of the ${protocol} rows`
        : `as undici-${protocol}, plus the three headers telescope sends on every attempt (what they cost over ${protocol})`,
    protocol,
    baseline: `undici-${protocol}`,
    async create(urls, target) {
      const { Client } = await import('undici');
      const clients = urls.map(
        (url) =>
          new Client(url, {
            pipelining: 100,
            ...(protocol === 'h2c' ? { useH2c: true } : { allowH2: true, connect: { ca: target.ca } }),
          }),
      );
      const next = roundRobin(clients);
      return {
        async getMovie(id) {
          const { statusCode, body } = await next().request({ method: 'GET', path: `/movies/${id}`, headers });
          if (statusCode !== 200) {
            await body.dump();
            throw statusError(name, statusCode);
          }
          return body.json();
        },
        async close() {
          await Promise.all(clients.map((client) => client.close()));
        },
      };
    },
  };
}

/** telescope with `http2: true`, zod params and response schema, against the same protocol's floor. */
function telescopeHttp2(protocol: 'h2c' | 'h2', withoutOptionalLayers = false): Variant {
  return {
    name: withoutOptionalLayers ? `telescope-${protocol}-min` : `telescope-${protocol}`,
    description: withoutOptionalLayers
      ? `as telescope-${protocol}, with \`breaker\`, \`bulkhead\`, \`retry\` and \`metrics\` off (what those layers cost over ${protocol})`
      : `telescope \`createClient\` with \`http2: true\` over ${protocol}${protocol === 'h2' ? ' (`tls: { ca }`)' : ''}, zod params + zod response schema; ratios ÷ undici-${protocol}`,
    protocol,
    baseline: `undici-${protocol}`,
    async create(urls, target) {
      const { createClient } = await import('../../src/index.js');
      const { movies } = await import('./movie-service.js');
      const client = createClient(movies, {
        instances: urls,
        timeoutMs: 1000,
        http2: true,
        ...(protocol === 'h2' ? { tls: { ca: target.ca } } : {}),
        ...(withoutOptionalLayers ? { breaker: false, bulkhead: false, retry: false, metrics: false } : {}),
      });
      return { getMovie: (id) => client.getMovie({ id }), close: () => client.close() };
    },
  };
}

/** The headers telescope's client sends on every attempt (its default options, first attempt). */
const telescopeAttemptHeaders = {
  'accept-encoding': 'identity',
  'x-request-attempt': '1',
  'x-request-timeout-ms': '1000',
};

/**
 * telescope's transport alone over h2c: its own node:http2 connection with telescope's attempt
 * handler and its three headers, no layers above it. With `undici-h2c-headers` and `telescope-h2c-min`
 * it shows where telescope's cost over HTTP/2 sits.
 */
const telescopeTransportHttp2: Variant = {
  name: 'telescope-h2c-transport',
  description:
    "telescope's transport alone over h2c (attempt handler, the three headers, no layers); ratios ÷ undici-h2c",
  protocol: 'h2c',
  baseline: 'undici-h2c',
  async create(urls) {
    const { transport } = await import('../../src/transport/index.js');
    const { CallContext } = await import('../../src/core/call.js');
    const { systemClock } = await import('../../src/core/clock.js');
    const wire = transport({ http2: true });
    const nextInstance = roundRobin(urls.map((url) => ({ url, weight: 1 })));
    return {
      async getMovie(id) {
        const context = new CallContext({
          service: 'movies',
          endpoint: 'getMovie',
          idempotent: true,
          clock: systemClock,
          timeoutMs: 1000,
        });
        context.instance = nextInstance();
        const request = {
          method: 'GET',
          path: `/movies/${id}`,
          headers: { ...telescopeAttemptHeaders },
          body: undefined,
        };
        return (await wire.call(request, context)).body;
      },
      close: () => wire.close(),
    };
  },
};

/** Every variant, in the order of the results table. */
export const variants: readonly Variant[] = [
  undiciPool,
  undiciDispatch,
  undiciFetch,
  nodeHttp,
  got,
  axios,
  cockatiel,
  opossum,
  telescopeVariant('telescope', true),
  telescopeVariant('telescope-no-schema', false),
  telescopeCache,
  undiciHttp2('h2c'),
  undiciHttp2('h2c', telescopeAttemptHeaders),
  telescopeTransportHttp2,
  telescopeHttp2('h2c'),
  telescopeHttp2('h2c', true),
  undiciHttp2('h2'),
  telescopeHttp2('h2'),
];

/** The variant every ratio is computed against; always run. */
export const baselineName = 'undici';

export function variantNamed(name: string): Variant {
  const variant = variants.find((candidate) => candidate.name === name);
  if (variant === undefined) {
    throw new Error(`unknown variant ${name}; known: ${variants.map((candidate) => candidate.name).join(', ')}`);
  }
  return variant;
}
