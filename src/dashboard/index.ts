/**
 * `telescope-http/dashboard`: a live operator dashboard in the spirit of the Hystrix dashboard.
 *
 * One self-contained HTML page (inline CSS and JS, no external assets, works offline) and a
 * server-sent-events stream of `client.stats()`. The page draws one card per endpoint: request
 * rate (from successive snapshots), error %, latency p50/p90/p99, calls in flight, the circuit
 * state and a sparkline of the last 60 points.
 *
 * Plain node:http, no dependencies. `dashboard()` serves it on its own server (127.0.0.1 by
 * default); `dashboardHandler()` is the request handler, to mount on a server you already run.
 *
 * Cost: nothing until a browser connects. While any SSE stream is open, one timer (shared by
 * every stream) takes one snapshot per interval and writes the same frame to each stream;
 * streams whose socket buffer is still full skip a frame instead of queueing it.
 *
 * @module telescope-http/dashboard
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../core/call.js';
import { invalidOption } from '../core/errors.js';
import type { ClientStats } from '../observe/index.js';
import {
  type DashboardClient,
  type DashboardOperation,
  dashboardOperations,
  parseAction,
  redactOptions,
  runAction,
} from './actions.js';
import { type Requester, SESSION_COOKIE, sameOrigin, TokenCheck } from './auth.js';
import {
  type DashboardSource,
  displayUrl,
  type FleetClientStats,
  FleetPoller,
  mergeClients,
  type SourceStatus,
} from './fleet.js';
import { renderLogin, renderPage } from './page.js';

export type { ClientStats, EndpointStatsSnapshot } from '../observe/index.js';
export type {
  ActionResult,
  DashboardAction,
  DashboardClient,
  DashboardOperation,
  OperatorCircuit,
} from './actions.js';
export { dashboardOperations } from './actions.js';
export type { DashboardSource, FleetClientStats, SourceStatus } from './fleet.js';

/** Anything with `stats()`: a telescope client, or your own source of the same shape. */
export interface StatsSource {
  stats(): ClientStats;
}

/** Options of {@link dashboardHandler}. */
export interface DashboardHandlerOptions {
  /** How often the SSE stream sends a snapshot. @default 1000 */
  intervalMs?: number;
  /** Title of the page. @default 'telescope dashboard' */
  title?: string;
  /**
   * Fleet mode: other processes' dashboards to aggregate with this one's clients (their URL,
   * or `{ url, token }` when they have a token). Counters are summed and latency histograms
   * merged per service and endpoint; a source that does not answer well is marked down and
   * left out. @default []
   */
  sources?: ReadonlyArray<string | DashboardSource>;
  /** Bound on one poll of a source (connect, headers and body together). @default 2000 */
  sourceTimeoutMs?: number;
  /** Larger answers from a source are cut off and the source marked down. @default 4194304 */
  sourceMaxBytes?: number;
  /**
   * Bearer token every request must carry (`Authorization: Bearer <token>`, or the session
   * cookie a browser gets by signing in with it on the page). At least 16 characters. Required
   * when `actions` is on, or when the dashboard listens beyond loopback. @default undefined
   */
  token?: string;
  /**
   * Accept operator actions (`POST actions`: force a circuit open or closed, reset it, change
   * options through `configure`). Needs `token`. @default false
   */
  actions?: boolean;
  /**
   * Where actions and sign-ins are logged (who, what, the result), at `info`. @default one
   * JSON line per entry on stderr
   */
  logger?: Pick<Logger, 'info'>;
}

/** Options of {@link dashboard}. */
export interface DashboardOptions extends DashboardHandlerOptions {
  /** Port to listen on; 0 picks a free one. @default 0 */
  port?: number;
  /** Address to listen on. Anything but loopback exposes your stats to the network. @default '127.0.0.1' */
  host?: string;
}

/** What `GET /stats.json` answers and each `event: stats` of `GET /stats` carries. */
export interface DashboardSnapshot {
  /** When the snapshot was taken (ms since the epoch, server clock). */
  time: number;
  intervalMs: number;
  /**
   * One entry per client, in the order given (`retryTokens` is `null` in JSON when unlimited).
   * In fleet mode, one entry per service, merged over this process and every source that is up,
   * with `processes` saying how many contributed.
   */
  clients: Array<ClientStats | FleetClientStats>;
  /** Fleet mode: every source and whether it answered its last poll. */
  sources?: SourceStatus[];
  /** The operations `POST actions` accepts (only when actions are on). */
  actions?: DashboardOperation[];
}

/** A node:http request handler serving the dashboard, plus what it holds open. */
export interface DashboardHandler {
  /** Serves `GET /` (the page), `GET /stats` (SSE) and `GET /stats.json`; anything else is 404. */
  (request: IncomingMessage, response: ServerResponse): void;
  /** Ends every SSE stream and stops the timer; later SSE requests get 503. */
  close(): void;
  /** SSE streams open now. */
  connections(): number;
  /** Whether the shared snapshot timer is running (only while a stream is open). */
  ticking(): boolean;
  /** One snapshot, as `GET /stats.json` answers it. */
  snapshot(): DashboardSnapshot;
}

/** A running dashboard server. */
export interface Dashboard {
  /** The page's URL, e.g. `http://127.0.0.1:43127/`. */
  readonly url: string;
  readonly port: number;
  /** The request handler behind the server (open streams, timer, snapshots). */
  readonly handler: DashboardHandler;
  /** Ends every SSE stream, stops the timer, closes the server and every socket. */
  close(): Promise<void>;
}

export const dashboardDefaults = {
  intervalMs: 1000,
  host: '127.0.0.1',
  port: 0,
  title: 'telescope dashboard',
  sourceTimeoutMs: 2000,
  sourceMaxBytes: 4 * 1024 * 1024,
  /** Shortest token accepted. */
  minTokenLength: 16,
} as const;

/** Largest body accepted by `POST actions` and `POST login`. */
const MAX_POST_BYTES = 16 * 1024;

/**
 * Serves the dashboard for `clients` on its own node:http server.
 *
 * @example
 * const board = await dashboard([moviesClient, usersClient], { port: 9099 });
 * console.log(`dashboard: ${board.url}`);
 * // ...
 * await board.close();
 */
export async function dashboard(
  clients: readonly DashboardClient[],
  options: DashboardOptions = {},
): Promise<Dashboard> {
  const host = options.host ?? dashboardDefaults.host;
  const port = options.port ?? dashboardDefaults.port;
  if (typeof host !== 'string' || host === '') invalidOption('dashboard host', 'a non-empty string', host);
  if (!(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    invalidOption('dashboard port', 'an integer from 0 to 65535', port);
  }
  // On loopback, only answer requests addressed to loopback: a web page that rebinds its own
  // DNS name to 127.0.0.1 must not read the stats.
  const checkHost = isLoopbackName(host);
  if (!checkHost && options.token === undefined) {
    invalidOption('dashboard token', `set when host is not loopback (host ${host})`, options.token);
  }
  const handler = dashboardHandler(clients, options);
  const server = createServer((request, response) => {
    if (checkHost && !isLoopbackHostHeader(request.headers.host)) {
      send(response, 403, 'text/plain; charset=utf-8', 'forbidden: not a loopback Host header\n', request.method);
      return;
    }
    handler(request, response);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    handler.close();
    throw error;
  }
  const address = server.address() as AddressInfo;
  const urlHost = address.address.includes(':') ? `[${address.address}]` : address.address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost}:${address.port}/`,
    port: address.port,
    handler,
    close() {
      closing ??= new Promise<void>((resolve) => {
        handler.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

/**
 * The dashboard as a node:http request handler, to mount on your own server. It routes on the
 * path's last segment (`''` or `index.html`, `stats`, `stats.json`), and the page uses relative
 * URLs, so it works under any prefix (`/ops/dashboard/`, or a router that strips the prefix).
 * Call `close()` when shutting down: SSE streams otherwise stay open.
 *
 * @example
 * const board = dashboardHandler([client], { intervalMs: 2000 });
 * http.createServer((req, res) => (req.url?.startsWith('/ops/') ? board(req, res) : app(req, res)));
 */
export function dashboardHandler(
  clients: readonly DashboardClient[],
  options: DashboardHandlerOptions = {},
): DashboardHandler {
  if (!Array.isArray(clients)) invalidOption('dashboard clients', 'an array of objects with stats()', clients);
  for (const [index, client] of clients.entries()) {
    if (typeof (client as StatsSource | undefined)?.stats !== 'function') {
      invalidOption(`dashboard clients[${index}]`, 'an object with stats()', client);
    }
  }
  const intervalMs = options.intervalMs ?? dashboardDefaults.intervalMs;
  if (!(Number.isFinite(intervalMs) && intervalMs >= 50)) {
    invalidOption('dashboard intervalMs', 'a finite number ≥ 50', intervalMs);
  }
  const title = options.title ?? dashboardDefaults.title;
  if (typeof title !== 'string') invalidOption('dashboard title', 'a string', title);
  const token = options.token;
  if (token !== undefined && (typeof token !== 'string' || token.length < dashboardDefaults.minTokenLength)) {
    invalidOption(
      'dashboard token',
      `a string of at least ${dashboardDefaults.minTokenLength} characters`,
      '[not shown]',
    );
  }
  const actionsOn = options.actions ?? false;
  if (typeof actionsOn !== 'boolean') invalidOption('dashboard actions', 'a boolean', actionsOn);
  if (actionsOn && token === undefined) invalidOption('dashboard token', 'set when actions are on', undefined);
  const logger = options.logger ?? stderrLogger;
  if (typeof logger?.info !== 'function') invalidOption('dashboard logger', 'a pino-style logger', logger);
  const check = token === undefined ? undefined : new TokenCheck(token);
  const poller = fleetPoller(options);
  const page = renderPage(title);
  const loginPage = (message: string) => renderLogin(title, message);
  const streams = new Set<ServerResponse>();
  let timer: ReturnType<typeof setInterval> | undefined;
  let polling = false;
  let closed = false;

  const snapshot = (): DashboardSnapshot => {
    const list: ClientStats[] = [];
    for (const client of clients) {
      try {
        const stats: ClientStats = client.stats();
        // Instance URLs as they may be shown: without credentials, query or fragment.
        list.push({ ...stats, instances: stats.instances.map((item) => ({ ...item, url: displayUrl(item.url) })) });
      } catch {
        // A client that cannot answer now is left out of this snapshot.
      }
    }
    const taken: DashboardSnapshot = { time: Date.now(), intervalMs, clients: list };
    if (poller !== undefined) {
      taken.clients = mergeClients([list, ...poller.clients()]);
      taken.sources = poller.statuses();
    }
    if (actionsOn) taken.actions = [...dashboardOperations];
    return taken;
  };
  /** A snapshot after polling the sources (at once without sources). Never rejects. */
  const freshSnapshot = async (): Promise<DashboardSnapshot> => {
    await poller?.poll();
    return snapshot();
  };
  const frameOf = (taken: DashboardSnapshot) => `event: stats\ndata: ${JSON.stringify(taken)}\n\n`;
  const broadcast = (data: string) => {
    for (const stream of streams) {
      // A slow reader skips frames; nothing queues up behind it.
      if (!stream.writableNeedDrain) stream.write(data);
    }
  };
  const tick = () => {
    if (poller === undefined) {
      broadcast(frameOf(snapshot()));
      return;
    }
    // One poll at a time: a tick that finds the last one still running is skipped.
    if (polling) return;
    polling = true;
    void freshSnapshot().then((taken) => {
      polling = false;
      if (!closed) broadcast(frameOf(taken));
    });
  };
  const stopTimer = () => {
    if (timer !== undefined) clearInterval(timer);
    timer = undefined;
  };

  const openStream = (request: IncomingMessage, response: ServerResponse) => {
    if (closed) {
      send(response, 503, 'text/plain; charset=utf-8', 'dashboard closed\n', request.method);
      return;
    }
    response.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      'x-accel-buffering': 'no',
      'x-content-type-options': 'nosniff',
    });
    response.socket?.setNoDelay(true);
    response.socket?.setTimeout(0);
    // Reconnect hint, and a first snapshot at once so the page draws without waiting (the
    // sources' last answers; the next tick polls them).
    response.write(`retry: ${Math.max(1000, Math.round(intervalMs * 2))}\n\n${frameOf(snapshot())}`);
    if (poller !== undefined && timer === undefined) tick();
    streams.add(response);
    response.on('close', () => {
      streams.delete(response);
      if (streams.size === 0) stopTimer();
    });
    if (timer === undefined) {
      // Not unref'd: it only runs while a stream (an open socket) is there anyway.
      timer = setInterval(tick, intervalMs);
    }
  };

  const servePage = (
    response: ServerResponse,
    status: number,
    served: { html: string; csp: string },
    method: string,
  ) => {
    response.setHeader('content-security-policy', served.csp);
    response.setHeader('referrer-policy', 'no-referrer');
    response.setHeader('x-frame-options', 'DENY');
    send(response, status, 'text/html; charset=utf-8', served.html, method);
  };
  const unauthorized = (response: ServerResponse, method: string) => {
    response.setHeader('www-authenticate', 'Bearer realm="telescope dashboard"');
    send(response, 401, 'text/plain; charset=utf-8', 'unauthorized: a bearer token is required\n', method);
  };

  /** `POST login`: the token from the page's form, exchanged for the session cookie. */
  const login = async (request: IncomingMessage, response: ServerResponse) => {
    if (check === undefined) {
      send(response, 404, 'text/plain; charset=utf-8', 'not found: no token to sign in with\n');
      return;
    }
    if (!sameOrigin(request, undefined) && request.headers.origin !== undefined) {
      send(response, 403, 'text/plain; charset=utf-8', 'forbidden: cross-origin request\n');
      return;
    }
    const body = await readBody(request, MAX_POST_BYTES);
    const candidate = body === undefined ? undefined : new URLSearchParams(body).get('token');
    const who = { remote: `${request.socket.remoteAddress}:${request.socket.remotePort}` };
    if (request.headers.origin === undefined || candidate == null || !check.matches(candidate)) {
      logger.info({ dashboard: 'login', who, result: 'refused' }, 'dashboard sign-in refused');
      servePage(response, 401, loginPage('That token is not the right one.'), 'POST');
      return;
    }
    logger.info({ dashboard: 'login', who, result: 'ok' }, 'dashboard sign-in');
    const secure = (request.socket as { encrypted?: boolean }).encrypted === true ? '; Secure' : '';
    const path = (request.url ?? '/').split('?', 1)[0] ?? '/';
    const directory = path.slice(0, path.lastIndexOf('/') + 1) || '/';
    response.setHeader(
      'set-cookie',
      `${SESSION_COOKIE}=${check.session}; HttpOnly; SameSite=Strict; Path=${directory}${secure}`,
    );
    response.setHeader('location', './');
    send(response, 303, 'text/plain; charset=utf-8', 'signed in\n');
  };

  /** `POST actions`: checked, run, logged with who and what. */
  const act = async (request: IncomingMessage, response: ServerResponse, requester: Requester) => {
    if (!sameOrigin(request, requester)) {
      logger.info({ dashboard: 'action', who: requester, result: 'cross-origin refused' }, 'dashboard action refused');
      send(response, 403, 'text/plain; charset=utf-8', 'forbidden: cross-origin request\n');
      return;
    }
    if (!String(request.headers['content-type'] ?? '').startsWith('application/json')) {
      send(response, 415, 'text/plain; charset=utf-8', 'unsupported media type: send application/json\n');
      return;
    }
    const body = await readBody(request, MAX_POST_BYTES);
    if (body === undefined) {
      send(response, 413, 'text/plain; charset=utf-8', `payload too large: at most ${MAX_POST_BYTES} bytes\n`);
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      send(response, 400, 'application/json; charset=utf-8', JSON.stringify({ error: 'the body is not JSON' }));
      return;
    }
    const action = parseAction(parsed);
    if (typeof action === 'string') {
      send(response, 400, 'application/json; charset=utf-8', JSON.stringify({ error: action }));
      return;
    }
    const result = runAction(clients, action);
    logger.info(
      {
        dashboard: 'action',
        who: requester,
        action: { ...action, options: action.options === undefined ? undefined : redactOptions(action.options) },
        status: result.status,
        result: result.status === 200 ? 'ok' : result.body.error,
      },
      'dashboard action',
    );
    send(response, result.status, 'application/json; charset=utf-8', JSON.stringify(result.body));
  };

  const handler = ((request: IncomingMessage, response: ServerResponse) => {
    const method = request.method ?? 'GET';
    const path = (request.url ?? '/').split('?', 1)[0] ?? '/';
    const route = path.slice(path.lastIndexOf('/') + 1);
    const postRoute = route === 'login' || (route === 'actions' && actionsOn);
    if (postRoute ? method !== 'POST' : method !== 'GET' && method !== 'HEAD') {
      response.setHeader('allow', postRoute ? 'POST' : 'GET, HEAD');
      send(response, 405, 'text/plain; charset=utf-8', 'method not allowed\n', method);
      return;
    }
    if (route === 'login') {
      void login(request, response).catch(() => response.destroy());
      return;
    }
    const requester = check?.authorize(request);
    if (check !== undefined && requester === undefined) {
      if (route === '' || route === 'index.html') servePage(response, 401, loginPage(''), method);
      else unauthorized(response, method);
      return;
    }
    if (route === 'actions' && actionsOn) {
      void act(request, response, requester as Requester).catch(() => response.destroy());
    } else if (route === '' || route === 'index.html') {
      servePage(response, 200, page, method);
    } else if (route === 'stats' && method === 'GET') {
      openStream(request, response);
    } else if (route === 'stats' || route === 'stats.json') {
      void freshSnapshot().then((taken) =>
        send(response, 200, 'application/json; charset=utf-8', JSON.stringify(taken), method),
      );
    } else {
      send(response, 404, 'text/plain; charset=utf-8', 'not found\n', method);
    }
  }) as DashboardHandler;
  handler.close = () => {
    closed = true;
    stopTimer();
    for (const stream of streams) stream.end();
    streams.clear();
    void poller?.close();
  };
  handler.connections = () => streams.size;
  handler.ticking = () => timer !== undefined;
  handler.snapshot = snapshot;
  return handler;
}

function fleetPoller(options: DashboardHandlerOptions): FleetPoller | undefined {
  const sources = options.sources ?? [];
  if (!Array.isArray(sources)) invalidOption('dashboard sources', 'an array of URLs or { url, token }', sources);
  if (sources.length === 0) return undefined;
  const list = sources.map((source, index): DashboardSource => {
    const entry = typeof source === 'string' ? { url: source } : source;
    let url: URL | undefined;
    try {
      url = new URL(String(entry?.url));
    } catch {}
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      invalidOption(`dashboard sources[${index}]`, 'an http(s) URL or { url, token }', displayUrl(String(entry?.url)));
    }
    if (entry.token !== undefined && typeof entry.token !== 'string') {
      invalidOption(`dashboard sources[${index}].token`, 'a string', '[not shown]');
    }
    return entry;
  });
  const timeoutMs = options.sourceTimeoutMs ?? dashboardDefaults.sourceTimeoutMs;
  if (!(Number.isFinite(timeoutMs) && timeoutMs >= 50 && timeoutMs <= 60_000)) {
    invalidOption('dashboard sourceTimeoutMs', 'a number from 50 to 60000', timeoutMs);
  }
  const maxBytes = options.sourceMaxBytes ?? dashboardDefaults.sourceMaxBytes;
  if (!(Number.isInteger(maxBytes) && maxBytes >= 1024)) {
    invalidOption('dashboard sourceMaxBytes', 'an integer ≥ 1024', maxBytes);
  }
  return new FleetPoller(list, { timeoutMs, maxBytes });
}

/** The request body as text, or undefined when it is larger than `limit` bytes. */
async function readBody(request: IncomingMessage, limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const stderrLogger: Pick<Logger, 'info'> = {
  info(fields, message) {
    process.stderr.write(`${JSON.stringify({ level: 'info', time: Date.now(), msg: message, ...fields })}\n`);
  },
};

function send(response: ServerResponse, status: number, type: string, body: string, method?: string): void {
  response.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  response.end(method === 'HEAD' ? undefined : body);
}

function isLoopbackName(host: string): boolean {
  const name = host.toLowerCase().replace(/^\[|\]$/g, '');
  return name === 'localhost' || name === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

function isLoopbackHostHeader(header: string | undefined): boolean {
  if (header === undefined) return true; // HTTP/1.0 without Host: not a browser
  const match = /^(\[[^\]]*\]|[^:]*)(?::\d+)?$/.exec(header.trim());
  return match !== null && isLoopbackName(match[1] ?? '');
}
