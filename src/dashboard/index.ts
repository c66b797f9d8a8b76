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
import { createHash } from 'node:crypto';
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

function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char] ?? char,
  );
}

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

function renderPage(title: string): { html: string; csp: string } {
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="dark">
<link rel="icon" href="data:,">
<title>${escapeHtml(title)}</title>
<style>${PAGE_CSS}</style>
</head>
<body>
<header class="top">
  <div class="brand"><span class="logo" aria-hidden="true"></span><h1>${escapeHtml(title)}</h1></div>
  <div class="meta">
    <span class="legend"><i class="sw req"></i>req/s <i class="sw err"></i>errors/s</span>
    <span id="updated" class="updated">no data yet</span>
    <span id="conn" class="conn" data-conn="connecting">connecting</span>
  </div>
</header>
<nav id="sources" class="sources" hidden></nav>
<main id="services"><p id="empty" class="empty">Waiting for the first snapshot…</p></main>
<script>${PAGE_JS}</script>
</body>
</html>
`;
  const csp = [
    "default-src 'none'",
    `script-src ${sha256(PAGE_JS)}`,
    `style-src ${sha256(PAGE_CSS)}`,
    "connect-src 'self'",
    'img-src data:',
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html, csp };
}

const LOGIN_CSS = `
html,body{margin:0;background:#0d1117;color:#e6edf3;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
main{max-width:360px;margin:18vh auto;padding:24px;background:#161b22;border:1px solid #2a3341;border-radius:8px}
h1{font-size:16px;margin:0 0 14px}label{display:block;color:#8b98a9;margin-bottom:6px}
input{box-sizing:border-box;width:100%;padding:8px;border-radius:6px;border:1px solid #2a3341;background:#0d1117;color:#e6edf3}
button{margin-top:12px;padding:7px 14px;border-radius:6px;border:0;background:#58a6ff;color:#0d1117;font-weight:600}
.error{color:#f85149;margin:0 0 10px}
`;

/** The sign-in page: a form that posts the token to `login` (no script, no token in a URL). */
function renderLogin(title: string, message: string): { html: string; csp: string } {
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${escapeHtml(title)}: sign in</title>
<style>${LOGIN_CSS}</style>
</head>
<body>
<main>
<h1>${escapeHtml(title)}</h1>
${message === '' ? '' : `<p class="error">${escapeHtml(message)}</p>`}
<form method="post" action="login">
<label for="token">Dashboard token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
`;
  const csp = [
    "default-src 'none'",
    `style-src ${sha256(LOGIN_CSS)}`,
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
  return { html, csp };
}

const PAGE_CSS = `
:root{--bg:#0d1117;--panel:#161b22;--panel2:#1c2330;--line:#2a3341;--text:#e6edf3;--muted:#8b98a9;
--closed:#2fbf71;--open:#f85149;--half:#e3a21a;--disabled:#6e7681;--req:#58a6ff;--err:#f85149}
*{box-sizing:border-box}
html,body{margin:0;background:var(--bg);color:var(--text);
font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.top{position:sticky;top:0;z-index:1;display:flex;justify-content:space-between;align-items:center;gap:16px;
padding:10px 20px;background:#0a0e14;border-bottom:1px solid var(--line)}
.brand{display:flex;align-items:center;gap:10px}
.brand h1{font-size:16px;font-weight:600;margin:0;letter-spacing:.2px}
.logo{width:18px;height:18px;border-radius:50%;border:3px solid var(--req);box-shadow:inset 0 0 0 3px #0a0e14,inset 0 0 0 9px var(--req)}
.meta{display:flex;align-items:center;gap:16px;color:var(--muted);font-size:12px}
.legend{display:flex;align-items:center;gap:6px}
.sw{display:inline-block;width:14px;height:3px;border-radius:2px;margin-left:6px}
.sw.req{background:var(--req)}.sw.err{background:var(--err)}
.conn{padding:2px 10px;border-radius:999px;border:1px solid var(--line);font-weight:600}
.conn::before{content:"";display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:6px;background:var(--disabled)}
.conn[data-conn="live"]{color:var(--closed)}.conn[data-conn="live"]::before{background:var(--closed)}
.conn[data-conn="stale"],.conn[data-conn="reconnecting"]{color:var(--half)}
.conn[data-conn="stale"]::before,.conn[data-conn="reconnecting"]::before{background:var(--half)}
main{padding:16px 20px 28px}
.empty{color:var(--muted)}
body.stale main{opacity:.55}
.service{margin-bottom:22px}
.service-head{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px 16px;margin:0 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
.service-head h2{font-size:15px;margin:0;font-weight:600}
.chips{display:flex;flex-wrap:wrap;gap:6px}
.chip{font-size:12px;color:var(--muted);background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:1px 8px;white-space:nowrap}
.chip.ejected{color:var(--open);border-color:#5c2426}
.chip b{color:var(--text);font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.card{background:var(--panel);border:1px solid var(--line);border-left:4px solid var(--closed);border-radius:8px;padding:10px 12px 12px;min-width:0}
.card[data-state="open"]{border-left-color:var(--open);background:linear-gradient(180deg,#2a1416 0,var(--panel) 60%)}
.card[data-state="half-open"]{border-left-color:var(--half)}
.card[data-state="disabled"]{border-left-color:var(--disabled)}
.card.idle{opacity:.6}
.card-head{display:flex;justify-content:space-between;align-items:center;gap:8px}
.name{font-weight:600;font-size:14px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.name .svc{color:var(--muted);font-weight:400}
.badge{flex:none;font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.6px;padding:2px 8px;border-radius:4px;color:#0d1117;background:var(--closed)}
.badge[data-state="open"]{background:var(--open);color:#fff}
.badge[data-state="half-open"]{background:var(--half)}
.badge[data-state="disabled"]{background:var(--disabled);color:#fff}
.spark{display:block;width:100%;height:52px;margin:2px 0 6px;background:var(--panel2);border-radius:4px}
.spark .req-area{fill:rgba(88,166,255,.18)}.spark .req-line{fill:none;stroke:var(--req);stroke-width:1.5}
.spark .err-area{fill:rgba(248,81,73,.22)}.spark .err-line{fill:none;stroke:var(--err);stroke-width:1.5}
.spark-cap{display:flex;justify-content:space-between;margin-top:8px;font-size:10px;color:var(--muted);font-variant-numeric:tabular-nums}
.nums{display:flex;gap:18px;align-items:baseline}
.big .v{font-size:24px;font-weight:700;font-variant-numeric:tabular-nums}
.big .u{font-size:12px;color:var(--muted);margin-left:4px}
.big.errpct .v{color:var(--closed)}
.big.errpct.warn .v{color:var(--half)}
.big.errpct.bad .v{color:var(--open)}
.big.errpct.none .v{color:var(--muted)}
.kv{display:grid;grid-template-columns:repeat(4,1fr);gap:4px 10px;margin:8px 0 0}
.kv div{min-width:0}
.kv dt{font-size:10px;text-transform:uppercase;letter-spacing:.5px;color:var(--muted)}
.kv dd{margin:0;font-variant-numeric:tabular-nums;font-size:13px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.codes{margin-top:8px;font-size:11px;color:var(--muted);min-height:15px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.codes b{color:#ffa198;font-weight:600}
.sources{display:flex;flex-wrap:wrap;gap:6px;padding:8px 20px 0}
.source{font-size:12px;border-radius:999px;padding:1px 10px;border:1px solid var(--line)}
.source[data-up="true"]{color:var(--closed)}.source[data-up="false"]{color:var(--open);border-color:#5c2426}
.acts{display:flex;gap:6px;margin-top:8px;align-items:center}
.acts button{font:inherit;font-size:11px;padding:2px 8px;border-radius:4px;border:1px solid var(--line);background:var(--panel2);color:var(--text);cursor:pointer}
.acts button:hover{border-color:var(--req)}
.acts .note{font-size:11px;color:var(--muted)}
`;

// Runs in the browser. Builds every node with createElement/textContent/setAttribute: no
// string from the stream is ever parsed as HTML. Kept free of backticks and dollar-brace.
const PAGE_JS = String.raw`
(function () {
  'use strict';
  var HISTORY = 60;
  var SVG = 'http://www.w3.org/2000/svg';
  var main = document.getElementById('services');
  var empty = document.getElementById('empty');
  var conn = document.getElementById('conn');
  var updated = document.getElementById('updated');
  var sections = new Map();
  var cards = new Map();
  var lastEventAt = 0;
  var intervalMs = 1000;
  var actions = [];
  var sourcesBar = document.getElementById('sources');

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, cls) {
    var node = document.createElementNS(SVG, tag);
    if (cls) node.setAttribute('class', cls);
    return node;
  }
  function setConn(state) {
    conn.setAttribute('data-conn', state);
    conn.textContent = state;
    document.body.classList.toggle('stale', state !== 'live');
  }
  function fmtRate(value) {
    if (value === null) return '–';
    if (value === 0) return '0';
    if (value < 9.95) return value.toFixed(1);
    return String(Math.round(value));
  }
  function fmtMs(value, count) {
    if (!count) return '–';
    if (value >= 1000) return (value / 1000).toFixed(value >= 10000 ? 0 : 1) + ' s';
    if (value >= 10) return Math.round(value) + ' ms';
    return value.toFixed(1) + ' ms';
  }
  function fmtCount(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(1) + 'M';
    if (value >= 1e4) return (value / 1e3).toFixed(1) + 'k';
    return String(value);
  }
  function sum(record) {
    var total = 0;
    for (var key in record) if (Object.prototype.hasOwnProperty.call(record, key)) total += record[key];
    return total;
  }

  function getSection(key, service) {
    var section = sections.get(key);
    if (section) return section;
    var root = el('section', 'service');
    root.setAttribute('data-service', service);
    var head = el('div', 'service-head');
    head.appendChild(el('h2', '', service));
    var chips = el('div', 'chips');
    head.appendChild(chips);
    var grid = el('div', 'grid');
    root.appendChild(head);
    root.appendChild(grid);
    main.appendChild(root);
    section = { root: root, chips: chips, grid: grid };
    sections.set(key, section);
    return section;
  }

  function stat(parent, label) {
    var box = el('div');
    box.appendChild(el('dt', '', label));
    var value = el('dd', '', '–');
    box.appendChild(value);
    parent.appendChild(box);
    return value;
  }

  function getCard(key, section, service, endpoint) {
    var card = cards.get(key);
    if (card) return card;
    var root = el('article', 'card');
    root.setAttribute('data-endpoint', service + '.' + endpoint);
    var head = el('div', 'card-head');
    var name = el('span', 'name');
    name.title = service + '.' + endpoint;
    name.appendChild(el('span', 'svc', service + '.'));
    name.appendChild(document.createTextNode(endpoint));
    var badge = el('span', 'badge', '–');
    head.appendChild(name);
    head.appendChild(badge);
    var wrap = el('div');
    var chart = svg('svg', 'spark');
    chart.setAttribute('viewBox', '0 0 ' + (HISTORY - 1) + ' 50');
    chart.setAttribute('preserveAspectRatio', 'none');
    var reqArea = svg('polygon', 'req-area');
    var reqLine = svg('polyline', 'req-line');
    var errArea = svg('polygon', 'err-area');
    var errLine = svg('polyline', 'err-line');
    reqLine.setAttribute('vector-effect', 'non-scaling-stroke');
    errLine.setAttribute('vector-effect', 'non-scaling-stroke');
    chart.appendChild(reqArea);
    chart.appendChild(reqLine);
    chart.appendChild(errArea);
    chart.appendChild(errLine);
    var caption = el('div', 'spark-cap');
    var span = el('span', '', 'last ' + Math.round(((HISTORY - 1) * intervalMs) / 1000) + ' s');
    var max = el('span', '', '');
    caption.appendChild(span);
    caption.appendChild(max);
    wrap.appendChild(caption);
    wrap.appendChild(chart);
    var nums = el('div', 'nums');
    var rateBox = el('div', 'big rate');
    var rate = el('span', 'v', '–');
    rate.setAttribute('data-field', 'rate');
    rateBox.appendChild(rate);
    rateBox.appendChild(el('span', 'u', 'req/s'));
    var errBox = el('div', 'big errpct');
    var errPct = el('span', 'v', '–');
    errPct.setAttribute('data-field', 'error-percentage');
    errBox.appendChild(errPct);
    errBox.appendChild(el('span', 'u', '% errors'));
    nums.appendChild(rateBox);
    nums.appendChild(errBox);
    var kv = el('dl', 'kv');
    var fields = {
      p50: stat(kv, 'p50'),
      p90: stat(kv, 'p90'),
      p99: stat(kv, 'p99'),
      max: stat(kv, 'max'),
      outstanding: stat(kv, 'in flight'),
      requests: stat(kv, 'requests'),
      failures: stat(kv, 'failures'),
      retries: stat(kv, 'retries'),
    };
    for (var field in fields) fields[field].setAttribute('data-field', field);
    var codes = el('div', 'codes');
    root.appendChild(head);
    root.appendChild(wrap);
    root.appendChild(nums);
    root.appendChild(kv);
    root.appendChild(codes);
    if (actions.indexOf('breaker.forceOpen') >= 0) root.appendChild(actionBar(service, endpoint));
    section.grid.appendChild(root);
    card = {
      root: root, badge: badge, reqArea: reqArea, reqLine: reqLine, errArea: errArea, errLine: errLine,
      max: max, rate: rate, errBox: errBox, errPct: errPct, fields: fields, codes: codes,
      prev: null, points: []
    };
    cards.set(key, card);
    return card;
  }

  // Operator actions: POST, same origin, JSON; the server checks the session and the origin.
  function act(service, endpoint, operation, note) {
    note.textContent = '…';
    fetch(actionsUrl, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: service, endpoint: endpoint, operation: operation })
    }).then(function (response) {
      return response.json().then(function (body) {
        note.textContent = response.ok ? 'done' : (body && body.error ? String(body.error) : 'HTTP ' + response.status);
      }, function () { note.textContent = 'HTTP ' + response.status; });
    }, function () { note.textContent = 'failed'; });
  }
  function actionBar(service, endpoint) {
    var bar = el('div', 'acts');
    var note = el('span', 'note', '');
    var labels = [['breaker.forceOpen', 'force open'], ['breaker.forceClosed', 'force closed'], ['breaker.reset', 'reset']];
    labels.forEach(function (pair) {
      var button = el('button', '', pair[1]);
      button.type = 'button';
      button.setAttribute('data-action', pair[0]);
      button.addEventListener('click', function () { act(service, endpoint, pair[0], note); });
      bar.appendChild(button);
    });
    bar.appendChild(note);
    return bar;
  }

  function updateSources(list) {
    sourcesBar.hidden = !list;
    if (!list) return;
    sourcesBar.textContent = '';
    for (var i = 0; i < list.length; i++) {
      var source = list[i];
      var chip = el('span', 'source', String(source.name) + (source.up ? ' up' : ' down' + (source.error ? ': ' + source.error : '')));
      chip.setAttribute('data-source', String(source.name));
      chip.setAttribute('data-up', source.up ? 'true' : 'false');
      chip.title = source.lastSeen ? 'last answer ' + new Date(source.lastSeen).toLocaleTimeString() : 'no answer yet';
      sourcesBar.appendChild(chip);
    }
  }

  function drawSpark(card) {
    var points = card.points;
    var peak = 0;
    var anyErrors = false;
    for (var i = 0; i < points.length; i++) {
      if (points[i].rate > peak) peak = points[i].rate;
      if (points[i].errors > 0) anyErrors = true;
    }
    var top = Math.max(peak, 1);
    var offset = HISTORY - points.length;
    var req = [];
    var err = [];
    for (var j = 0; j < points.length; j++) {
      var x = offset + j;
      req.push(x + ',' + (50 - (points[j].rate / top) * 46).toFixed(2));
      err.push(x + ',' + (50 - (points[j].errors / top) * 46).toFixed(2));
    }
    var req0 = req.join(' ');
    var err0 = err.join(' ');
    var base = points.length ? ' ' + (HISTORY - 1) + ',50 ' + offset + ',50' : '';
    card.reqLine.setAttribute('points', req0);
    card.reqArea.setAttribute('points', points.length ? req0 + base : '');
    // The error line is drawn only once there were errors to show.
    card.errLine.setAttribute('points', anyErrors ? err0 : '');
    card.errArea.setAttribute('points', anyErrors ? err0 + base : '');
    card.max.textContent = points.length ? 'peak ' + fmtRate(peak) + ' req/s' : '';
  }

  function updateCard(card, snap, time) {
    var failures = sum(snap.failures);
    var rate = null;
    if (card.prev && time > card.prev.time) {
      var seconds = (time - card.prev.time) / 1000;
      rate = Math.max(0, snap.requests - card.prev.requests) / seconds;
      var errors = Math.max(0, failures - card.prev.failures) / seconds;
      card.points.push({ rate: rate, errors: errors });
      if (card.points.length > HISTORY) card.points.shift();
      drawSpark(card);
    }
    card.prev = { time: time, requests: snap.requests, failures: failures };
    var state = snap.breaker;
    card.root.setAttribute('data-state', state);
    card.badge.setAttribute('data-state', state);
    card.badge.textContent = state;
    card.badge.title = 'circuit ' + state;
    card.root.classList.toggle('idle', snap.requests === 0);
    card.rate.textContent = fmtRate(rate);
    var pct = snap.window.errorPercentage;
    card.errPct.textContent = snap.window.requests ? String(pct) : '–';
    card.errBox.classList.toggle('none', !snap.window.requests);
    card.errBox.classList.toggle('warn', pct > 0 && pct < 50);
    card.errBox.classList.toggle('bad', pct >= 50);
    var latency = snap.window.latency;
    card.fields.p50.textContent = fmtMs(latency.p50Ms, latency.count);
    card.fields.p90.textContent = fmtMs(latency.p90Ms, latency.count);
    card.fields.p99.textContent = fmtMs(latency.p99Ms, latency.count);
    card.fields.max.textContent = fmtMs(latency.maxMs, latency.count);
    card.fields.outstanding.textContent = String(snap.outstanding);
    card.fields.requests.textContent = fmtCount(snap.requests);
    card.fields.failures.textContent = fmtCount(failures);
    card.fields.retries.textContent = fmtCount(snap.retries);
    var codes = Object.keys(snap.failures).sort(function (a, b) { return snap.failures[b] - snap.failures[a]; });
    card.codes.textContent = '';
    var extras = [];
    if (snap.shed) extras.push('shed ' + snap.shed);
    if (snap.fallbacks) extras.push('fallbacks ' + snap.fallbacks);
    if (snap.hedges) extras.push('hedges ' + snap.hedges);
    for (var i = 0; i < codes.length && i < 3; i++) {
      if (i > 0) card.codes.appendChild(document.createTextNode(' · '));
      card.codes.appendChild(el('b', '', codes[i]));
      card.codes.appendChild(document.createTextNode(' ' + snap.failures[codes[i]]));
    }
    if (extras.length) card.codes.appendChild(document.createTextNode((codes.length ? ' · ' : '') + extras.join(' · ')));
    card.codes.title = codes.map(function (code) { return code + ' ' + snap.failures[code]; }).join(', ');
  }

  function updateChips(section, client) {
    section.chips.textContent = '';
    if (client.processes) {
      var processes = el('span', 'chip processes', 'processes ');
      processes.appendChild(el('b', '', String(client.processes)));
      section.chips.appendChild(processes);
    }
    var tokens = client.retryTokens;
    var chip = el('span', 'chip', 'retry tokens ');
    chip.appendChild(el('b', '', tokens === null || tokens === undefined ? '∞' : String(Math.floor(tokens))));
    section.chips.appendChild(chip);
    var bulkhead = client.bulkhead;
    if (bulkhead) {
      var limitChip = el('span', 'chip limit', (bulkhead.mode === 'static' ? 'limit ' : bulkhead.mode + ' limit '));
      limitChip.appendChild(el('b', '', String(bulkhead.limit)));
      limitChip.appendChild(document.createTextNode(' · ' + bulkhead.inflight + ' in flight · ' + bulkhead.queued + ' queued'));
      limitChip.title = 'bulkhead: calls allowed in flight now (adaptive: learned from latency and drops)';
      section.chips.appendChild(limitChip);
    }
    var instances = client.instances || [];
    for (var i = 0; i < instances.length; i++) {
      var instance = instances[i];
      var out = instance.ejected || instance.healthy === false;
      var item = el('span', 'chip' + (out ? ' ejected' : ''), instance.url + ' ');
      var label = instance.ejected
        ? 'ejected' + (instance.ejectionReason ? ' (' + instance.ejectionReason + ')' : '')
        : instance.healthy === false
          ? 'failing health checks'
          : instance.outstanding + ' in flight';
      item.appendChild(el('b', '', label));
      // p2c-ewma: the latency the balancer weighs it by (why it gets less traffic).
      if (!out && typeof instance.latencyMs === 'number') {
        item.appendChild(document.createTextNode(' · ' + instance.latencyMs.toFixed(1) + ' ms'));
      }
      section.chips.appendChild(item);
    }
  }

  function update(data) {
    lastEventAt = Date.now();
    intervalMs = data.intervalMs || intervalMs;
    setConn('live');
    updated.textContent = 'updated ' + new Date(data.time).toLocaleTimeString();
    actions = data.actions || [];
    updateSources(data.sources);
    var seenSections = new Set();
    var seenCards = new Set();
    var clients = data.clients || [];
    for (var c = 0; c < clients.length; c++) {
      var client = clients[c];
      var sectionKey = c + '\u0000' + client.service;
      seenSections.add(sectionKey);
      var section = getSection(sectionKey, String(client.service));
      updateChips(section, client);
      var names = Object.keys(client.endpoints || {});
      for (var e = 0; e < names.length; e++) {
        var snap = client.endpoints[names[e]];
        var cardKey = sectionKey + '\u0000' + names[e];
        seenCards.add(cardKey);
        updateCard(getCard(cardKey, section, String(snap.service), String(snap.endpoint)), snap, data.time);
      }
    }
    cards.forEach(function (card, key) {
      if (!seenCards.has(key)) { card.root.remove(); cards.delete(key); }
    });
    sections.forEach(function (section, key) {
      if (!seenSections.has(key)) { section.root.remove(); sections.delete(key); }
    });
    empty.hidden = clients.length > 0;
    if (!clients.length) empty.textContent = 'No clients to show.';
  }

  // Relative to the page, so a dashboard mounted under a prefix streams from that prefix.
  var last = location.pathname.slice(location.pathname.lastIndexOf('/') + 1);
  var base = last === '' || last === 'index.html' ? '' : last + '/';
  var actionsUrl = base + 'actions';
  var source = new EventSource(base + 'stats');
  source.addEventListener('stats', function (event) {
    var data;
    try { data = JSON.parse(event.data); } catch (error) { return; }
    update(data);
  });
  source.addEventListener('error', function () {
    setConn(source.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting');
  });
  setInterval(function () {
    if (lastEventAt && conn.getAttribute('data-conn') === 'live' && Date.now() - lastEventAt > 3 * intervalMs + 1000) {
      setConn('stale');
    }
  }, 1000);
})();
`;
