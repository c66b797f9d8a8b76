/**
 * `telescope-http/dashboard` end to end on 127.0.0.1: the page (self-contained, strict CSP, escaped
 * title), `/stats.json`, the SSE stream (frames, one shared timer, cleanup on disconnect),
 * `close()` leaving no sockets or timers, the loopback Host check, option checking, and, in
 * headless Chromium driven by playwright-core, a circuit opening on the page within seconds
 * of the dependency failing, and hostile service names shown as text.
 *
 * Without /usr/bin/chromium the browser tests are skipped (with the reason printed), unless
 * TELESCOPE_REQUIRE_SERVICES=1, where they fail. TELESCOPE_DASHBOARD_SCREENSHOT=<path> saves a
 * screenshot of the page with the circuit open.
 */
import { existsSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from 'vitest';
import { type ClientStats, type DashboardHandler, dashboard, dashboardHandler } from '../../src/dashboard/index.js';
import { createClient, ErrorCode, isTelescopeError } from '../../src/index.js';
import { waitFor } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { activeCount } from '../helpers/process-resources.js';
import { delay, sendJson, startServer } from '../helpers/server.js';

const CHROMIUM = '/usr/bin/chromium';
const requireServices = process.env.TELESCOPE_REQUIRE_SERVICES === '1';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  console.warn(
    requireServices
      ? `dashboard browser tests: ${CHROMIUM} is missing and TELESCOPE_REQUIRE_SERVICES=1: failing`
      : `dashboard browser tests skipped: ${CHROMIUM} is missing (apt-get install chromium)`,
  );
}

// --- helpers ---------------------------------------------------------------------------------

interface SseEvent {
  event: string;
  data: string;
}

/** An SSE stream read with fetch: `next()` resolves with the next event, `end()` when it ends. */
async function openStream(url: string) {
  const controller = new AbortController();
  const response = await fetch(url, { signal: controller.signal });
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let ended = false;
  const readMore = async () => {
    const { value, done } = await reader.read();
    if (done) ended = true;
    else buffer += decoder.decode(value, { stream: true });
  };
  return {
    response,
    async next(): Promise<SseEvent> {
      for (;;) {
        const end = buffer.indexOf('\n\n');
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event: SseEvent = { event: 'message', data: '' };
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event.event = line.slice(7);
            if (line.startsWith('data: ')) event.data += line.slice(6);
          }
          if (event.data !== '') return event;
          continue;
        }
        if (ended) throw new Error('the stream ended');
        await readMore();
      }
    },
    /** Resolves once the server has ended the stream (reading and dropping what is left). */
    async end(): Promise<void> {
      while (!ended) await readMore();
    },
    close: () => controller.abort(),
  };
}

/** One HTTP request with node:http (so the Host header can be anything). */
function get(url: string, headers: Record<string, string> = {}, method = 'GET') {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    const request = httpRequest(url, { method, headers, agent: false }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        body += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body }));
    });
    request.on('error', reject);
    request.end();
  });
}

/** A movie server whose getMovie answers 503 while `failing` is set. */
async function movieServer() {
  const state = { failing: false };
  const server = await startServer((request, response) => {
    const movie = /^\/movies\/(\d+)$/.exec(request.url ?? '');
    if (state.failing) return sendJson(response, 503, { error: 'catalogue unavailable' });
    if (movie) return sendJson(response, 200, { id: Number(movie[1]), title: 'Heat' });
    return sendJson(response, 200, { ok: true });
  });
  return { server, state };
}

/** Serves a handler on its own server on 127.0.0.1:0. */
async function serve(handler: DashboardHandler): Promise<{ url: string; server: Server; close(): Promise<void> }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return {
    url,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        handler.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The DOM bits the in-page callbacks use (this tsconfig has no DOM lib; types are erased). */
interface PageGlobal {
  document: {
    querySelector(selector: string): { textContent: string | null; getAttribute(name: string): string | null } | null;
  };
  getComputedStyle(node: unknown): { backgroundColor: string };
  __pwned?: number;
}

// Held open for the whole test: the first probe waits as long as the longest.
// The window alone opens the circuit (no `consecutiveFailures`): the page's test then knows the
// window's error percentage is above 50 when it opens. With the default of 20 in a row, a slow
// page load meant more than 20 healthy calls first, and the circuit opened at 47.6%.
const breaker = {
  volumeThreshold: 5,
  errorThresholdPercentage: 50,
  consecutiveFailures: 0,
  minResetTimeoutMs: 60_000,
  resetTimeoutMs: 60_000,
};

// --- HTTP ------------------------------------------------------------------------------------

describe('dashboard: HTTP', () => {
  it('GET / serves one self-contained page: inline CSS and JS, strict CSP, escaped title', async () => {
    const board = await dashboard([], { title: '<script>alert(1)</script> & ops' });
    try {
      expect(board.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
      const page = await get(board.url);
      expect(page.status).toBe(200);
      expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
      const csp = String(page.headers['content-security-policy']);
      expect(csp).toContain("default-src 'none'");
      expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
      expect(csp).toContain("connect-src 'self'");
      expect(page.body).toContain('<title>&lt;script&gt;alert(1)&lt;/script&gt; &amp; ops</title>');
      expect(page.body).not.toContain('<script>alert(1)');
      // Works offline: nothing is loaded from anywhere (the SVG namespace is a name, not a fetch).
      // (An empty data: icon keeps browsers from asking for /favicon.ico.)
      const offline = page.body
        .replaceAll('http://www.w3.org/2000/svg', '')
        .replace('<link rel="icon" href="data:,">', '');
      expect(offline).not.toMatch(/https?:\/\/|<link|\ssrc=|@import|url\(/);
      expect(page.body.match(/<script>/g)).toHaveLength(1);
      const head = await get(board.url, {}, 'HEAD');
      expect(head.status).toBe(200);
      expect(head.body).toBe('');
    } finally {
      await board.close();
    }
  });

  it('GET /stats.json answers one snapshot of every client', async () => {
    const { server } = await movieServer();
    const client = createClient(movies, { instances: [server.url], breaker });
    const board = await dashboard([client], { intervalMs: 200 });
    try {
      await client.getMovie({ id: 7 });
      const answer = await get(`${board.url}stats.json`);
      expect(answer.status).toBe(200);
      expect(answer.headers['content-type']).toBe('application/json; charset=utf-8');
      const snapshot = JSON.parse(answer.body);
      expect(snapshot.intervalMs).toBe(200);
      expect(Math.abs(snapshot.time - Date.now())).toBeLessThan(5000);
      expect(snapshot.clients).toHaveLength(1);
      expect(snapshot.clients[0].service).toBe('movies');
      expect(snapshot.clients[0].endpoints.getMovie).toMatchObject({
        service: 'movies',
        endpoint: 'getMovie',
        requests: 1,
        successes: 1,
        breaker: 'closed',
      });
    } finally {
      await board.close();
      await client.close();
    }
  });

  it('answers 404 for other paths, 405 for other methods, 403 for a non-loopback Host header', async () => {
    const board = await dashboard([]);
    try {
      expect((await get(`${board.url}nope`)).status).toBe(404);
      const post = await get(board.url, {}, 'POST');
      expect(post.status).toBe(405);
      expect(post.headers.allow).toBe('GET, HEAD');
      // DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the stats.
      expect((await get(`${board.url}stats.json`, { host: 'evil.example' })).status).toBe(403);
      expect((await get(`${board.url}stats.json`, { host: `localhost:${board.port}` })).status).toBe(200);
      expect((await get(`${board.url}stats.json`, { host: `127.0.0.1:${board.port}` })).status).toBe(200);
    } finally {
      await board.close();
    }
  });

  it('checks its options', async () => {
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        return isTelescopeError(error) ? error.code : String(error);
      }
      return 'no error';
    };
    expect(code(() => dashboardHandler([], { intervalMs: 0 }))).toBe(ErrorCode.INVALID_OPTION);
    expect(code(() => dashboardHandler([], { intervalMs: Number.NaN }))).toBe(ErrorCode.INVALID_OPTION);
    expect(code(() => dashboardHandler({} as never))).toBe(ErrorCode.INVALID_OPTION);
    expect(code(() => dashboardHandler([{}] as never))).toBe(ErrorCode.INVALID_OPTION);
    await expect(dashboard([], { port: -1 })).rejects.toMatchObject({ code: ErrorCode.INVALID_OPTION });
  });
});

// --- SSE -------------------------------------------------------------------------------------

describe('dashboard: SSE stream', () => {
  it('sends `event: stats` frames every intervalMs, from one timer shared by all streams, stopped when none is left', async () => {
    const { server } = await movieServer();
    const client = createClient(movies, { instances: [server.url], breaker });
    const handler = dashboardHandler([client], { intervalMs: 200 });
    const site = await serve(handler);
    try {
      await client.getMovie({ id: 1 });
      const timersBefore = activeCount('Timeout');
      expect(handler.ticking()).toBe(false);
      const setIntervalSpy = vi.spyOn(globalThis, 'setInterval');
      const clearIntervalSpy = vi.spyOn(globalThis, 'clearInterval');
      onTestFinished(() => {
        setIntervalSpy.mockRestore();
        clearIntervalSpy.mockRestore();
      });

      const first = await openStream(`${site.url}stats`);
      expect(first.response.status).toBe(200);
      expect(first.response.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
      expect(first.response.headers.get('cache-control')).toContain('no-cache');
      // The first frame comes at once, the next after one interval.
      const event = await first.next();
      expect(event.event).toBe('stats');
      const snapshot = JSON.parse(event.data) as { time: number; intervalMs: number; clients: ClientStats[] };
      expect(snapshot.intervalMs).toBe(200);
      expect(snapshot.clients[0]?.endpoints.getMovie?.requests).toBe(1);
      const started = performance.now();
      const second = JSON.parse((await first.next()).data) as { time: number };
      expect(performance.now() - started).toBeGreaterThan(100);
      expect(second.time - snapshot.time).toBeGreaterThanOrEqual(150);
      expect(handler.connections()).toBe(1);
      expect(handler.ticking()).toBe(true);
      expect(setIntervalSpy).toHaveBeenCalledTimes(1);
      expect(setIntervalSpy.mock.calls[0]?.[1]).toBe(200);

      // A second stream shares the timer: no new timer, and both get the same frames.
      const other = await openStream(`${site.url}stats`);
      await other.next();
      expect(handler.connections()).toBe(2);
      expect(setIntervalSpy).toHaveBeenCalledTimes(1);
      const times = async (stream: Awaited<ReturnType<typeof openStream>>, count: number) => {
        const seen: number[] = [];
        for (let index = 0; index < count; index++) seen.push(JSON.parse((await stream.next()).data).time);
        return seen;
      };
      const [fromFirst, fromOther] = await Promise.all([times(first, 3), times(other, 2)]);
      expect(fromOther.some((time) => fromFirst.includes(time))).toBe(true);

      // Disconnects are cleaned up; the timer stops with the last stream.
      first.close();
      await waitFor('the first stream to be dropped', () => handler.connections() === 1);
      expect(handler.ticking()).toBe(true);
      other.close();
      await waitFor('the last stream to be dropped', () => handler.connections() === 0);
      expect(handler.ticking()).toBe(false);
      expect(clearIntervalSpy).toHaveBeenCalledTimes(1);
      await waitFor('the timer to go', () => activeCount('Timeout') <= timersBefore);

      // And it starts again for the next browser.
      const again = await openStream(`${site.url}stats`);
      await again.next();
      expect(handler.ticking()).toBe(true);
      expect(setIntervalSpy).toHaveBeenCalledTimes(2);
      again.close();
      await waitFor('the timer to stop again', () => !handler.ticking());
    } finally {
      await site.close();
      await client.close();
    }
  });

  it('close() ends every stream and leaves no server, socket or timer behind', async () => {
    const { server } = await movieServer();
    const client = createClient(movies, { instances: [server.url], breaker });
    await client.getMovie({ id: 1 });
    const before = {
      servers: activeCount('TCPServerWrap'),
      sockets: activeCount('TCPSocketWrap'),
      timers: activeCount('Timeout'),
    };
    const board = await dashboard([client], { intervalMs: 200 });
    const streams = await Promise.all([openStream(`${board.url}stats`), openStream(`${board.url}stats`)]);
    for (const stream of streams) expect((await stream.next()).event).toBe('stats');
    expect(board.handler.connections()).toBe(2);
    expect(activeCount('TCPServerWrap')).toBe(before.servers + 1);

    await board.close();
    await Promise.all(streams.map((stream) => stream.end()));
    expect(board.handler.connections()).toBe(0);
    expect(board.handler.ticking()).toBe(false);
    await waitFor('the server and its sockets to close', () => {
      return activeCount('TCPServerWrap') === before.servers && activeCount('TCPSocketWrap') <= before.sockets;
    });
    await waitFor('the timer to go', () => activeCount('Timeout') <= before.timers);
    await expect(fetch(`${board.url}stats.json`)).rejects.toThrow();
    await board.close(); // twice is fine
    await client.close();
  });
});

// --- in a browser ----------------------------------------------------------------------------

describe.skipIf(!haveChromium && !requireServices)('dashboard: in headless Chromium', () => {
  let browser: Browser;

  beforeAll(async () => {
    if (!haveChromium) throw new Error(`TELESCOPE_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing`);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 30_000);

  afterAll(async () => {
    await browser?.close();
  });

  it('shows the circuit opening within seconds of the dependency failing', async () => {
    const { server, state } = await movieServer();
    const client = createClient(movies, { instances: [server.url], breaker });
    const board = await dashboard([client], { intervalMs: 200 });
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const problems: string[] = [];
    const foreign: string[] = [];
    page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(`console: ${message.text()}`);
    });
    page.on('request', (request) => {
      if (!request.url().startsWith(board.url)) foreign.push(request.url());
    });
    const card = '.card[data-endpoint="movies.getMovie"]';
    try {
      await page.goto(board.url);

      // Healthy traffic: the card shows a request rate and a closed circuit.
      let driving = true;
      const traffic = (async () => {
        while (driving) {
          await client.getMovie({ id: 7 });
          await delay(20);
        }
      })();
      await page.waitForSelector(`${card} .badge[data-state="closed"]`, { timeout: 5000 });
      await page.waitForFunction(
        (selector) =>
          Number.parseFloat((globalThis as unknown as PageGlobal).document.querySelector(selector)?.textContent ?? '') >
          0,
        `${card} [data-field="rate"]`,
        { timeout: 5000 },
      );
      driving = false;
      await traffic;
      expect(await page.getAttribute(`${card} .badge`, 'data-state')).toBe('closed');
      expect(await page.getAttribute(card, 'data-state')).toBe('closed');
      expect(await page.textContent(`${card} .badge`)).toBe('closed');
      const successes = client.stats().endpoints.getMovie?.successes ?? 0;
      expect(successes).toBeGreaterThan(0);

      // The dependency fails: call until the breaker opens, then the page must follow.
      state.failing = true;
      let calls = 0;
      while (client.stats().endpoints.getMovie?.breaker !== 'open') {
        await client.getMovie({ id: 7 }).catch(() => {});
        if (++calls > 500) throw new Error('the circuit did not open');
      }
      const openedAt = performance.now();
      await page.waitForSelector(`${card} .badge[data-state="open"]`, { timeout: 5000 });
      const shownAfterMs = performance.now() - openedAt;
      expect(shownAfterMs).toBeLessThan(5000);
      expect(await page.textContent(`${card} .badge`)).toBe('open');
      expect(await page.getAttribute(card, 'data-state')).toBe('open');
      // Red badge, an error percentage, a drawn sparkline; the other endpoints stay closed.
      expect(
        await page.$eval(
          `${card} .badge`,
          (node) => (globalThis as unknown as PageGlobal).getComputedStyle(node).backgroundColor,
        ),
      ).toBe('rgb(248, 81, 73)');
      await page.waitForFunction(
        (selector) =>
          Number.parseFloat(
            (globalThis as unknown as PageGlobal).document.querySelector(selector)?.textContent ?? '',
          ) >= 50,
        `${card} [data-field="error-percentage"]`,
        { timeout: 5000 },
      );
      // The number shown is the window's, and the box is marked bad.
      const shownPercentage = await page.textContent(`${card} [data-field="error-percentage"]`);
      expect(Number(shownPercentage)).toBe(client.stats().endpoints.getMovie?.window.errorPercentage);
      expect((await page.getAttribute(`${card} .errpct`, 'class'))?.split(' ')).toContain('bad');
      await page.waitForFunction(
        (selector) =>
          ((globalThis as unknown as PageGlobal).document.querySelector(selector)?.getAttribute('points') ?? '')
            .trim()
            .split(' ').length >= 5,
        `${card} polyline.req-line`,
        { timeout: 5000 },
      );
      expect(await page.getAttribute(`${card} polyline.err-line`, 'points')).toBeTruthy();
      expect(await page.getAttribute('.card[data-endpoint="movies.search"] .badge', 'data-state')).toBe('closed');
      expect(await page.textContent(`${card} [data-field="requests"]`)).toMatch(/^\d+(\.\dk)?$/);
      expect(await page.getAttribute('#conn', 'data-conn')).toBe('live');
      if (process.env.TELESCOPE_DASHBOARD_SCREENSHOT) {
        await page.screenshot({ path: process.env.TELESCOPE_DASHBOARD_SCREENSHOT, fullPage: true });
      }
      console.log(
        `dashboard: circuit shown open ${Math.round(shownAfterMs)} ms after it opened (${calls} failing calls)`,
      );

      expect(problems).toEqual([]);
      expect(foreign).toEqual([]);
    } finally {
      await page.close();
      await board.close();
      await client.close();
    }
  });

  it('shows hostile service and endpoint names as text, never as markup', async () => {
    const hostile = '<img src=x onerror="window.__pwned=1">';
    const endpointName = '"><svg onload="window.__pwned=2"></svg>';
    const source = {
      stats: (): ClientStats => ({
        service: hostile,
        retryTokens: Number.POSITIVE_INFINITY,
        instances: [
          {
            url: '<script>window.__pwned=3</script>',
            outstanding: 0,
            ejected: false,
            healthy: true,
            consecutiveFailures: 0,
            latencyMs: 12.345,
          },
        ],
        endpoints: {
          [endpointName]: {
            service: hostile,
            endpoint: endpointName,
            requests: 3,
            successes: 1,
            failures: { '<b>CODE</b>': 2 },
            retries: 0,
            hedges: 0,
            fallbacks: 0,
            shed: 0,
            outstanding: 0,
            breaker: 'half-open',
            window: {
              windowMs: 10_000,
              requests: 3,
              failures: 2,
              errorPercentage: 66.7,
              latency: { count: 3, p50Ms: 1, p90Ms: 2, p99Ms: 3, maxMs: 3 },
              latencyBuckets: [],
            },
          },
        },
      }),
    };
    // Mounted under a prefix the way a router does it (prefix stripped), at a URL without a
    // trailing slash: the page must still find its stream.
    const handler = dashboardHandler([source], { intervalMs: 200 });
    const server = createServer((request, response) => {
      const url = request.url ?? '/';
      if (!url.startsWith('/ops/dash')) return response.writeHead(404).end();
      request.url = url.slice('/ops/dash'.length) || '/';
      handler(request, response);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const streams: string[] = [];
    const page = await browser.newPage();
    page.on('request', (request) => streams.push(new URL(request.url()).pathname));
    try {
      await page.goto(`${base}/ops/dash`);
      await page.waitForSelector('.badge[data-state="half-open"]', { timeout: 5000 });
      expect(await page.textContent('.service-head h2')).toBe(hostile);
      expect(await page.textContent('.card .name')).toBe(`${hostile}.${endpointName}`);
      expect(await page.getAttribute('.card', 'data-endpoint')).toBe(`${hostile}.${endpointName}`);
      expect(await page.textContent('.codes')).toContain('<b>CODE</b>');
      expect(await page.textContent('.chips')).toContain('<script>window.__pwned=3</script>');
      expect(await page.textContent('.chips')).toContain('∞');
      // p2c-ewma's latency average on the instance's chip.
      expect(await page.textContent('.chips')).toContain('0 in flight · 12.3 ms');
      await delay(300);
      expect(await page.evaluate(() => (globalThis as unknown as PageGlobal).__pwned)).toBeUndefined();
      expect(await page.$$('main img, main script, [onerror], [onload], .codes b b')).toHaveLength(0);
      expect(streams).toEqual(['/ops/dash', '/ops/dash/stats']);
    } finally {
      await page.close();
      handler.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
  });
});
