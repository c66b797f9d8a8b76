/**
 * Fleet dashboard on 127.0.0.1: sources polled and merged per service and endpoint (counters
 * summed, histograms merged), hostile sources (one that hangs, one answering HTML, one
 * streaming garbage, one dripping bytes forever, one of the wrong shape, one refusing the
 * token) marked down within the poll bound without holding up the others; and in headless
 * Chromium, three service processes aggregated on one page, one of them killed mid-test:
 * its source turns down and the sums drop to the two left.
 *
 * Without /usr/bin/chromium the browser test is skipped, unless TELESCOPE_REQUIRE_SERVICES=1.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createInterface } from 'node:readline';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { type DashboardSnapshot, dashboard, type FleetClientStats } from '../../src/dashboard/index.js';
import { createClient } from '../../src/index.js';
import { movies } from '../helpers/movies.js';
import { listenOnLoopback, sendJson, startServer } from '../helpers/server.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
const requireServices = process.env.TELESCOPE_REQUIRE_SERVICES === '1';
const TOKEN = 'fleet-test-token-0123456789';

/** A hostile source: a node:http server on 127.0.0.1 with this behaviour, closed after the test. */
async function hostile(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const server: Server = createServer((request, response) => handler?.(request, response));
  const listening = await listenOnLoopback(server, timers);
  onTestFinished(listening.close);
  return `${listening.url}/`;
}

/** A service process (test/fixtures/dashboard-process.ts); its dashboard URL once it is up. */
async function serviceProcess(calls: number): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/dashboard-process.ts'], {
    env: { ...process.env, TOKEN, CALLS: String(calls) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const line = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`service process exited (${code}) before it was up`)));
    setTimeout(() => reject(new Error('service process not up within 30 s')), 30_000).unref();
  });
  return { url: (JSON.parse(line) as { url: string }).url, child };
}

/** The DOM bits the in-page callbacks use (this tsconfig has no DOM lib; types are erased). */
interface PageGlobal {
  document: { querySelector(selector: string): { textContent: string | null } | null };
}

const moviesOf = (snapshot: DashboardSnapshot) =>
  snapshot.clients.find((client) => client.service === 'movies') as FleetClientStats | undefined;

describe('dashboard fleet: merging and hostile sources', () => {
  it('merges a source with local clients and marks every hostile source down within the poll bound', async () => {
    const upstream = await startServer((request, response) => {
      const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
      if (id % 10 === 0) return sendJson(response, 503, { error: 'unavailable' });
      sendJson(response, 200, { id, title: 'Heat' });
    });
    const local = createClient(movies, { instances: [upstream.url], retry: false, breaker: false });
    const remote = createClient(movies, { instances: [upstream.url], retry: false, breaker: false });
    onTestFinished(() => local.close());
    onTestFinished(() => remote.close());
    for (let id = 1; id <= 20; id++) await local.getMovie({ id }).catch(() => undefined);
    for (let id = 1; id <= 30; id++) await remote.getMovie({ id }).catch(() => undefined);
    const source = await dashboard([remote], { token: TOKEN });
    onTestFinished(() => source.close());

    const hang = await hostile(() => {}); // accepts, never answers
    const html = await hostile((_request, response) => {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end('<!doctype html><title>login</title>');
    });
    const garbage = await hostile((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(Buffer.from([0x7b, 0xff, 0x00, 0x13, 0x22, 0x5b]));
    });
    const drip = await hostile((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      const timer = setInterval(() => response.write(' '), 50);
      response.on('close', () => clearInterval(timer));
    });
    const wrongShape = await hostile((_request, response) => sendJson(response, 200, { clients: [{ service: 7 }] }));
    const fleet = await dashboard([local], {
      sources: [
        { url: source.url, token: TOKEN },
        hang,
        html,
        garbage,
        drip,
        wrongShape,
        { url: source.url.replace('http://', 'http://admin:hunter2@'), token: 'not-the-right-token-at-all' },
      ],
      sourceTimeoutMs: 400,
    });
    onTestFinished(() => fleet.close());

    const startedAt = Date.now();
    const answer = await fetch(new URL('stats.json', fleet.url));
    const snapshot = (await answer.json()) as DashboardSnapshot;
    // Every source is polled in parallel, each bounded: the hostile ones cost one bound, not six.
    expect(Date.now() - startedAt).toBeLessThan(3000);
    const byName = Object.fromEntries((snapshot.sources ?? []).map((status, index) => [index, status]));
    expect(byName[0]).toMatchObject({ up: true, error: null, clients: 1 });
    expect(byName[1]).toMatchObject({ up: false, error: 'timeout' });
    expect(byName[2]).toMatchObject({ up: false, error: 'not JSON' });
    expect(byName[3]).toMatchObject({ up: false, error: 'not JSON' });
    expect(byName[4]).toMatchObject({ up: false, error: 'timeout' });
    expect(byName[5]).toMatchObject({ up: false, error: 'invalid snapshot' });
    expect(byName[6]).toMatchObject({ up: false, error: 'HTTP 401' });
    // Credentials in a source URL are never shown.
    expect(JSON.stringify(snapshot)).not.toContain('hunter2');
    expect(JSON.stringify(snapshot)).not.toContain(TOKEN);

    const merged = moviesOf(snapshot);
    expect(merged?.processes).toBe(2);
    const getMovie = merged?.endpoints.getMovie;
    expect(getMovie?.requests).toBe(50);
    expect(getMovie?.successes).toBe(45);
    expect(getMovie?.failures).toEqual({ HTTP_STATUS: 5 });
    expect(getMovie?.window.requests).toBe(50);
    expect(getMovie?.window.errorPercentage).toBe(10);
    // Histograms merged bucket by bucket: every observation of both processes is in it.
    expect(getMovie?.window.latency.count).toBe(50);
    expect(getMovie?.window.latencyBuckets.reduce((sum, [, count]) => sum + count, 0)).toBe(50);
    const localBuckets = local.stats().endpoints.getMovie?.window.latencyBuckets ?? [];
    for (const [bound, count] of localBuckets) {
      expect(getMovie?.window.latencyBuckets.find(([other]) => other === bound)?.[1]).toBeGreaterThanOrEqual(count);
    }
  });
});

describe.skipIf(!haveChromium && !requireServices)('dashboard fleet: three processes in Chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('aggregates three processes, and shows one as down once it is killed', { timeout: 90_000 }, async () => {
    const processes = await Promise.all([serviceProcess(30), serviceProcess(30), serviceProcess(30)]);
    const fleet = await dashboard([], {
      sources: processes.map(({ url }) => ({ url, token: TOKEN })),
      intervalMs: 250,
      sourceTimeoutMs: 1000,
    });
    onTestFinished(() => fleet.close());
    const page = await browser.newPage();
    onTestFinished(() => page.close());
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(error.message));
    await page.goto(fleet.url);

    const card = '.card[data-endpoint="movies.getMovie"]';
    const text = (selector: string) => page.textContent(selector);
    await page.waitForSelector('.source[data-up="true"]:nth-child(3)', { timeout: 15_000 });
    await page.waitForFunction(
      (selector) => (globalThis as unknown as PageGlobal).document.querySelector(selector)?.textContent === '90',
      `${card} [data-field="requests"]`,
      { timeout: 15_000 },
    );
    expect(await text('.chip.processes b')).toBe('3');
    expect(await text(`${card} [data-field="failures"]`)).toBe('9');
    expect(await page.locator('.source[data-up="true"]').count()).toBe(3);

    // Kill the second process: its source turns down, the sums drop to the two left.
    const killed = processes[1]!;
    killed.child.kill('SIGKILL');
    const killedName = killed.url.replace(/\/$/, '');
    await page.waitForSelector(`.source[data-up="false"][data-source="${killedName}"]`, { timeout: 15_000 });
    await page.waitForFunction(
      (selector) => (globalThis as unknown as PageGlobal).document.querySelector(selector)?.textContent === '60',
      `${card} [data-field="requests"]`,
      { timeout: 15_000 },
    );
    expect(await text('.chip.processes b')).toBe('2');
    expect(await page.locator('.source[data-up="true"]').count()).toBe(2);
    // The page keeps updating from the two left.
    const before = await text('#updated');
    await page.waitForFunction(
      (previous) => (globalThis as unknown as PageGlobal).document.querySelector('#updated')?.textContent !== previous,
      before,
      { timeout: 10_000 },
    );
    expect(await page.getAttribute('#conn', 'data-conn')).toBe('live');
    expect(problems).toEqual([]);
  });
});

describe('telescope-dashboard CLI', () => {
  it('aggregates --source dashboards, tokens from the environment', { timeout: 60_000 }, async () => {
    const upstream = await startServer((_request, response) => sendJson(response, 200, { id: 7, title: 'Heat' }));
    const remote = createClient(movies, { instances: [upstream.url] });
    onTestFinished(() => remote.close());
    await remote.getMovie({ id: 7 });
    const source = await dashboard([remote], { token: TOKEN });
    onTestFinished(() => source.close());
    const cli = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/dashboard/cli.ts', '--source', source.url, '--source-timeout-ms', '1000'],
      { env: { ...process.env, TELESCOPE_DASHBOARD_SOURCE_TOKEN: TOKEN }, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = new Promise<number | null>((resolve) => cli.once('exit', (code) => resolve(code)));
    onTestFinished(() => {
      if (cli.exitCode === null && cli.signalCode === null) cli.kill('SIGKILL');
    });
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: cli.stdout as NodeJS.ReadableStream }).once('line', resolve);
      cli.once('exit', (code) => reject(new Error(`telescope-dashboard exited (${code})`)));
    });
    const { url } = JSON.parse(line) as { url: string };
    const snapshot = (await (await fetch(new URL('stats.json', url))).json()) as DashboardSnapshot;
    expect(snapshot.sources?.[0]).toMatchObject({ up: true });
    expect(moviesOf(snapshot)?.endpoints.getMovie?.requests).toBe(1);
    cli.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('refuses to start without a source', async () => {
    const cli = spawn(process.execPath, ['--import', 'tsx', 'src/dashboard/cli.ts'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    cli.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => cli.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('at least one --source');
  });
});
