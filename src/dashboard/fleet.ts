/**
 * Fleet mode: the dashboard polls other processes' dashboards (`stats.json`) and merges their
 * stats with its own clients', per service and endpoint: counters summed, latency histograms
 * merged bucket by bucket (percentiles recomputed from the merged histogram, never averaged).
 *
 * A source is polled with bounded time and bytes (`timeoutMs` for the whole exchange, at most
 * `maxBytes` of body) and its answer is checked field by field: one that hangs, answers HTML,
 * streams garbage or a JSON of another shape is marked down with a short reason and left out
 * of the sums; the others are never held up by it (every source is polled in parallel).
 */
import { Agent, request } from 'undici';
import type { EjectionReason } from '../balance/index.js';
import { mergeBuckets, summarizeBuckets } from '../observe/histogram.js';
import type { BreakerState, ClientStats, EndpointStatsSnapshot } from '../observe/stats.js';

/** Another process's dashboard to aggregate. */
export interface DashboardSource {
  /** The dashboard's URL (its page, e.g. `http://10.0.0.7:9099/`, or its `stats.json`). */
  url: string;
  /** Bearer token of that dashboard, when it has one. Never shown or logged. */
  token?: string;
}

/** How a source answered its last poll, as the page shows it. */
export interface SourceStatus {
  /** The source's URL without credentials, query or fragment. */
  name: string;
  up: boolean;
  /** When it last answered well (ms since the epoch), null if never. */
  lastSeen: number | null;
  /** Why it is down (`timeout`, `HTTP 500`, `not JSON`, ...), null when up. */
  error: string | null;
  /** Clients (services) it reported in its last good answer. */
  clients: number;
}

/** A merged client: the stats of every process that has this service, and how many they are. */
export type FleetClientStats = ClientStats & { processes: number };

const MAX_CLIENTS = 200;
const MAX_ENDPOINTS = 500;
const MAX_CODES = 100;
const MAX_INSTANCES = 1000;
const MAX_BUCKETS = 512;
const MAX_NAME = 200;

interface SourceState {
  readonly source: DashboardSource;
  readonly statsUrl: string;
  status: SourceStatus;
  clients: ClientStats[];
}

/** Polls sources; `poll()` never rejects and never takes longer than `timeoutMs` (plus a tick). */
export class FleetPoller {
  readonly #sources: SourceState[];
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  readonly #agent: Agent;
  #polling: Promise<void> | undefined;
  #closed = false;

  constructor(sources: readonly DashboardSource[], options: { timeoutMs: number; maxBytes: number }) {
    this.#timeoutMs = options.timeoutMs;
    this.#maxBytes = options.maxBytes;
    this.#agent = new Agent({
      connect: { timeout: options.timeoutMs },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      keepAliveTimeout: 10_000,
    });
    this.#sources = sources.map((source) => {
      const url = new URL(source.url);
      const statsUrl = url.pathname.endsWith('/stats.json') ? url : new URL('stats.json', withSlash(url));
      statsUrl.username = '';
      statsUrl.password = '';
      return {
        source,
        statsUrl: statsUrl.href,
        status: { name: displayUrl(source.url), up: false, lastSeen: null, error: 'not polled yet', clients: 0 },
        clients: [],
      };
    });
  }

  /** Polls every source once, in parallel; a poll already running is joined, not repeated. */
  poll(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#polling ??= Promise.all(this.#sources.map((state) => this.#pollOne(state))).then(() => {
      this.#polling = undefined;
    });
    return this.#polling;
  }

  /** The clients of every source that answered its last poll. */
  clients(): ClientStats[][] {
    return this.#sources.filter((state) => state.status.up).map((state) => state.clients);
  }

  statuses(): SourceStatus[] {
    return this.#sources.map((state) => ({ ...state.status }));
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#agent.destroy();
  }

  async #pollOne(state: SourceState): Promise<void> {
    try {
      const clients = readSnapshot(await this.#fetch(state));
      state.clients = clients;
      state.status = { name: state.status.name, up: true, lastSeen: Date.now(), error: null, clients: clients.length };
    } catch (error) {
      state.clients = [];
      state.status = {
        ...state.status,
        up: false,
        error: error instanceof SourceError ? error.message : 'unreachable',
        clients: 0,
      };
    }
  }

  async #fetch(state: SourceState): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (state.source.token !== undefined) headers.authorization = `Bearer ${state.source.token}`;
    // One bound on the whole exchange (connect, headers, every byte of the body); cleared at
    // the end, so it never aborts a request that is already done.
    const controller = new AbortController();
    const signal = controller.signal;
    const timer = setTimeout(() => controller.abort(), this.#timeoutMs);
    let response: Awaited<ReturnType<typeof request>>;
    try {
      response = await request(state.statsUrl, { dispatcher: this.#agent, headers, signal });
    } catch (error) {
      clearTimeout(timer);
      throw new SourceError(isTimeout(error, signal) ? 'timeout' : 'unreachable');
    }
    const { statusCode, body } = response;
    body.on('error', () => {}); // reported through the iteration below, or irrelevant once done
    try {
      if (statusCode !== 200) throw new SourceError(`HTTP ${statusCode}`);
      const type = String(response.headers['content-type'] ?? '');
      if (!type.startsWith('application/json')) throw new SourceError('not JSON');
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of body as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > this.#maxBytes) throw new SourceError('too large');
        chunks.push(chunk);
      }
      try {
        return JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        throw new SourceError('not JSON');
      }
    } catch (error) {
      if (error instanceof SourceError) throw error;
      throw new SourceError(isTimeout(error, signal) ? 'timeout' : 'broken answer');
    } finally {
      clearTimeout(timer);
      body.destroy();
    }
  }
}

class SourceError extends Error {}

function isTimeout(error: unknown, signal: AbortSignal): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return signal.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT';
}

function withSlash(url: URL): URL {
  const copy = new URL(url.href);
  if (!copy.pathname.endsWith('/')) copy.pathname += '/';
  copy.search = '';
  copy.hash = '';
  return copy;
}

/**
 * A URL fit to show: no user, password, query or fragment. Text that is not a URL is shown as
 * it is (the page renders it as text), cut at 200 characters.
 */
export function displayUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname === '/' ? '' : parsed.pathname}`;
  } catch {
    return url.slice(0, MAX_NAME);
  }
}

// --- reading a source's answer ---------------------------------------------------------------

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);
const count = (value: unknown): number =>
  typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
const name = (value: unknown): string => {
  if (typeof value !== 'string' || value === '' || value.length > MAX_NAME) throw new SourceError('invalid snapshot');
  return value;
};
const breakerStates: readonly BreakerState[] = ['closed', 'open', 'half-open', 'disabled'];
const ejectionReasons: readonly EjectionReason[] = ['consecutive-failures', 'failure-percentage', 'success-rate'];

/** A source's `stats.json`, checked and copied field by field; anything else throws. */
export function readSnapshot(value: unknown): ClientStats[] {
  if (!isObject(value) || !Array.isArray(value.clients) || value.clients.length > MAX_CLIENTS) {
    throw new SourceError('invalid snapshot');
  }
  return value.clients.map((client: unknown): ClientStats => {
    if (!isObject(client) || !isObject(client.endpoints)) throw new SourceError('invalid snapshot');
    const service = name(client.service);
    const entries = Object.entries(client.endpoints);
    const instances = Array.isArray(client.instances) ? client.instances.slice(0, MAX_INSTANCES) : [];
    if (entries.length > MAX_ENDPOINTS) throw new SourceError('invalid snapshot');
    return {
      service,
      // JSON has no Infinity: an unlimited budget arrives as null.
      retryTokens: client.retryTokens === null ? Number.POSITIVE_INFINITY : count(client.retryTokens),
      instances: instances.filter(isObject).map((instance) => {
        const ejected = instance.ejected === true;
        const reason = ejectionReasons.find((known) => known === instance.ejectionReason);
        const latencyMs = instance.latencyMs;
        return {
          url: displayUrl(String(instance.url)),
          outstanding: count(instance.outstanding),
          ejected,
          healthy: instance.healthy !== false,
          consecutiveFailures: count(instance.consecutiveFailures),
          ...(ejected && reason !== undefined ? { ejectionReason: reason } : {}),
          ...(typeof latencyMs === 'number' && Number.isFinite(latencyMs) && latencyMs >= 0 ? { latencyMs } : {}),
        };
      }),
      endpoints: Object.fromEntries(
        entries.map(([endpoint, snapshot]) => [name(endpoint), readEndpoint(service, name(endpoint), snapshot)]),
      ),
    };
  });
}

function readEndpoint(service: string, endpoint: string, value: unknown): EndpointStatsSnapshot {
  if (!isObject(value) || !isObject(value.window)) throw new SourceError('invalid snapshot');
  const window = value.window;
  const failures: Record<string, number> = {};
  if (isObject(value.failures)) {
    for (const [code, times] of Object.entries(value.failures).slice(0, MAX_CODES)) failures[name(code)] = count(times);
  }
  const buckets: Array<[number, number]> = [];
  if (Array.isArray(window.latencyBuckets)) {
    for (const pair of window.latencyBuckets.slice(0, MAX_BUCKETS)) {
      if (Array.isArray(pair) && pair.length === 2) buckets.push([count(pair[0]), count(pair[1])]);
    }
  }
  const latency = isObject(window.latency) ? window.latency : {};
  const maxMs = count(latency.maxMs);
  const windowRequests = count(window.requests);
  const windowFailures = Math.min(count(window.failures), windowRequests);
  return {
    service,
    endpoint,
    requests: count(value.requests),
    successes: count(value.successes),
    failures,
    retries: count(value.retries),
    hedges: count(value.hedges),
    fallbacks: count(value.fallbacks),
    shed: count(value.shed),
    outstanding: count(value.outstanding),
    breaker: breakerStates.includes(value.breaker as BreakerState) ? (value.breaker as BreakerState) : 'disabled',
    window: {
      windowMs: count(window.windowMs),
      requests: windowRequests,
      failures: windowFailures,
      errorPercentage: windowRequests === 0 ? 0 : Math.round((1000 * windowFailures) / windowRequests) / 10,
      latency: summarizeBuckets(buckets, maxMs),
      latencyBuckets: buckets,
    },
  };
}

// --- merging ---------------------------------------------------------------------------------

/** Worst first: what an operator must see when processes disagree. */
const breakerRank: Record<BreakerState, number> = { open: 3, 'half-open': 2, closed: 1, disabled: 0 };

/**
 * Merges the clients of several processes (one list per process) per service, in order of
 * first appearance: counters summed, histograms merged, the worst circuit state shown.
 */
export function mergeClients(processes: ReadonlyArray<readonly ClientStats[]>): FleetClientStats[] {
  const byService = new Map<string, ClientStats[]>();
  for (const clients of processes) {
    for (const client of clients) {
      const list = byService.get(client.service);
      if (list === undefined) byService.set(client.service, [client]);
      else list.push(client);
    }
  }
  return [...byService].map(([service, clients]) => {
    const instances = new Map<string, ClientStats['instances'][number]>();
    for (const client of clients) {
      for (const instance of client.instances) {
        const seen = instances.get(instance.url);
        if (seen === undefined) instances.set(instance.url, { ...instance });
        else {
          seen.outstanding += instance.outstanding;
          seen.ejected ||= instance.ejected;
          seen.ejectionReason ??= instance.ejectionReason;
          seen.healthy &&= instance.healthy;
          seen.consecutiveFailures = Math.max(seen.consecutiveFailures, instance.consecutiveFailures);
          // Each client has its own average: the worst one shows.
          if (instance.latencyMs !== undefined) seen.latencyMs = Math.max(seen.latencyMs ?? 0, instance.latencyMs);
        }
      }
    }
    const endpoints = new Map<string, EndpointStatsSnapshot[]>();
    for (const client of clients) {
      for (const [endpoint, snapshot] of Object.entries(client.endpoints)) {
        const list = endpoints.get(endpoint);
        if (list === undefined) endpoints.set(endpoint, [snapshot]);
        else list.push(snapshot);
      }
    }
    return {
      service,
      retryTokens: clients.reduce((sum, client) => sum + client.retryTokens, 0),
      instances: [...instances.values()],
      endpoints: Object.fromEntries([...endpoints].map(([endpoint, list]) => [endpoint, mergeEndpoint(list)])),
      processes: clients.length,
    };
  });
}

function mergeEndpoint(list: readonly EndpointStatsSnapshot[]): EndpointStatsSnapshot {
  const first = list[0] as EndpointStatsSnapshot;
  if (list.length === 1) return first;
  const failures: Record<string, number> = {};
  let breaker: BreakerState = 'disabled';
  let maxMs = 0;
  const sum = (pick: (snapshot: EndpointStatsSnapshot) => number) =>
    list.reduce((total, snapshot) => total + pick(snapshot), 0);
  for (const snapshot of list) {
    for (const [code, times] of Object.entries(snapshot.failures)) failures[code] = (failures[code] ?? 0) + times;
    if (breakerRank[snapshot.breaker] > breakerRank[breaker]) breaker = snapshot.breaker;
    maxMs = Math.max(maxMs, snapshot.window.latency.maxMs);
  }
  const requests = sum((snapshot) => snapshot.window.requests);
  const failed = sum((snapshot) => snapshot.window.failures);
  const buckets = mergeBuckets(list.map((snapshot) => snapshot.window.latencyBuckets ?? []));
  return {
    service: first.service,
    endpoint: first.endpoint,
    requests: sum((snapshot) => snapshot.requests),
    successes: sum((snapshot) => snapshot.successes),
    failures,
    retries: sum((snapshot) => snapshot.retries),
    hedges: sum((snapshot) => snapshot.hedges),
    fallbacks: sum((snapshot) => snapshot.fallbacks),
    shed: sum((snapshot) => snapshot.shed),
    outstanding: sum((snapshot) => snapshot.outstanding),
    breaker,
    window: {
      windowMs: Math.max(...list.map((snapshot) => snapshot.window.windowMs)),
      requests,
      failures: failed,
      errorPercentage: requests === 0 ? 0 : Math.round((1000 * failed) / requests) / 10,
      latency: summarizeBuckets(buckets, maxMs),
      latencyBuckets: buckets,
    },
  };
}
