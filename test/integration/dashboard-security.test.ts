/**
 * The dashboard's credential and actions on 127.0.0.1, over raw node:http requests (every
 * header under the test's control): 401 without or with a wrong token for the page, the stream,
 * stats.json and actions; 405 for GET on actions; 403 for cross-origin POSTs; the sign-in form
 * exchanging the token for a session cookie; actions dispatched to the client's methods and
 * logged with who and what (secrets redacted); option checks.
 */
import { request as httpRequest } from 'node:http';
import { describe, expect, it, onTestFinished } from 'vitest';
import { invalidOption } from '../../src/core/errors.js';
import { type DashboardClient, dashboard } from '../../src/dashboard/index.js';
import { type ClientStats, createClient, ErrorCode } from '../../src/index.js';
import { failure } from '../helpers/assert.js';
import { movies } from '../helpers/movies.js';
import { sendJson, startServer } from '../helpers/server.js';

const TOKEN = 'a-long-enough-dashboard-token-42';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One HTTP request with exactly these headers; a stream's body is cut after its first bytes. */
function call(url: string, method: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const outgoing = httpRequest(url, { method, headers }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
        if (String(response.headers['content-type']).startsWith('text/event-stream')) {
          response.destroy();
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text });
        }
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }));
    });
    outgoing.on('error', reject);
    outgoing.end(body);
  });
}

function stats(service: string): ClientStats {
  const window = {
    windowMs: 10_000,
    requests: 0,
    failures: 0,
    errorPercentage: 0,
    latency: { count: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, maxMs: 0 },
    latencyBuckets: [],
  };
  return {
    service,
    retryTokens: 10,
    instances: [
      {
        url: 'http://user:secret-pass@10.0.0.9:8080/?key=k',
        outstanding: 0,
        ejected: false,
        healthy: true,
        consecutiveFailures: 0,
      },
    ],
    endpoints: {
      getMovie: {
        service,
        endpoint: 'getMovie',
        requests: 0,
        successes: 0,
        failures: {},
        retries: 0,
        hedges: 0,
        fallbacks: 0,
        shed: 0,
        outstanding: 0,
        breaker: 'closed',
        window,
      },
    },
  };
}

/** A client with the operator surface the dashboard drives, recording what it was asked. */
function stubClient(service = 'movies') {
  const calls: string[] = [];
  const client: DashboardClient = {
    stats: () => stats(service),
    circuit: (endpoint) => ({
      forceOpen: () => calls.push(`${endpoint}.forceOpen`),
      forceClosed: () => calls.push(`${endpoint}.forceClosed`),
      reset: () => calls.push(`${endpoint}.reset`),
    }),
    configure: (options) => {
      for (const key of Object.keys(options)) {
        if (!['timeoutMs', 'headers'].includes(key)) invalidOption(key, 'a known client option', key);
      }
      calls.push(`configure ${JSON.stringify(options)}`);
    },
  };
  return { client, calls };
}

async function start(clients: DashboardClient[], options: Parameters<typeof dashboard>[1] = {}) {
  const logged: Array<Record<string, unknown>> = [];
  const board = await dashboard(clients, {
    token: TOKEN,
    actions: true,
    logger: { info: (fields) => logged.push(fields) },
    ...options,
  });
  onTestFinished(() => board.close());
  const host = new URL(board.url).host;
  return { board, logged, host, origin: `http://${host}` };
}

const bearer = { authorization: `Bearer ${TOKEN}` };
const json = { 'content-type': 'application/json' };
const forceOpen = JSON.stringify({ service: 'movies', endpoint: 'getMovie', operation: 'breaker.forceOpen' });

describe('dashboard token', () => {
  it('answers 401 without the token or with a wrong one: page, stream, stats.json and actions', async () => {
    const { client, calls } = stubClient();
    const { board } = await start([client]);
    const wrong = { authorization: `Bearer ${TOKEN.slice(0, -1)}x` };
    const attempts: Array<Record<string, string>> = [
      {},
      wrong,
      { authorization: 'Basic abc' },
      { cookie: 'telescope_dashboard_session=forged' },
    ];
    for (const headers of attempts) {
      const page = await call(board.url, 'GET', headers);
      expect(page.status).toBe(401);
      expect(page.body).toContain('<form method="post" action="login">');
      expect(page.body).not.toContain('EventSource');
      for (const path of ['stats', 'stats.json']) {
        const answer = await call(new URL(path, board.url).href, 'GET', headers);
        expect(answer.status, `${path} ${JSON.stringify(headers)}`).toBe(401);
        expect(answer.headers['www-authenticate']).toMatch(/^Bearer/);
        expect(answer.body).not.toContain('movies');
      }
      const action = await call(new URL('actions', board.url).href, 'POST', { ...headers, ...json }, forceOpen);
      expect(action.status).toBe(401);
    }
    expect(calls).toEqual([]);
    // With the token: the stream opens, stats.json answers, instance URLs carry no credentials.
    const stream = await call(new URL('stats', board.url).href, 'GET', bearer);
    expect(stream.status).toBe(200);
    expect(stream.body).toContain('event: stats');
    const snapshot = await call(new URL('stats.json', board.url).href, 'GET', bearer);
    expect(snapshot.status).toBe(200);
    expect(JSON.parse(snapshot.body).clients[0].instances[0].url).toBe('http://10.0.0.9:8080');
    expect(snapshot.body).not.toContain('secret-pass');
    expect(JSON.parse(snapshot.body).actions).toEqual([
      'breaker.forceOpen',
      'breaker.forceClosed',
      'breaker.reset',
      'configure',
    ]);
  });

  it('signs a browser in through the form: a session cookie (HttpOnly, SameSite=Strict) that is not the token', async () => {
    const { client, calls } = stubClient();
    const { board, origin, logged } = await start([client]);
    const loginUrl = new URL('login', board.url).href;
    const form = { 'content-type': 'application/x-www-form-urlencoded', origin };
    expect((await call(loginUrl, 'GET')).status).toBe(405);
    expect((await call(loginUrl, 'POST', form, 'token=wrong-token-wrong-token')).status).toBe(401);
    expect((await call(loginUrl, 'POST', { ...form, origin: 'http://evil.example' }, `token=${TOKEN}`)).status).toBe(
      403,
    );
    const signedIn = await call(loginUrl, 'POST', form, `token=${encodeURIComponent(TOKEN)}`);
    expect(signedIn.status).toBe(303);
    const cookie = String(signedIn.headers['set-cookie']);
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toContain(TOKEN);
    const session = cookie.split(';')[0] as string;
    expect((await call(board.url, 'GET', { cookie: session })).body).toContain('EventSource');
    // The page's own POST: same origin, with the cookie.
    const action = await call(
      new URL('actions', board.url).href,
      'POST',
      { cookie: session, origin, ...json },
      forceOpen,
    );
    expect(action.status).toBe(200);
    expect(calls).toEqual(['getMovie.forceOpen']);
    expect(logged.map((entry) => [entry.dashboard, entry.result])).toEqual([
      ['login', 'refused'],
      ['login', 'ok'],
      ['action', 'ok'],
    ]);
    expect(JSON.stringify(logged)).not.toContain(TOKEN);
  });
});

describe('dashboard actions', () => {
  it('GET on actions is 405; a cross-origin POST is 403 and changes nothing', async () => {
    const { client, calls } = stubClient();
    const { board, logged } = await start([client]);
    const actions = new URL('actions', board.url).href;
    const get = await call(actions, 'GET', bearer);
    expect(get.status).toBe(405);
    expect(get.headers.allow).toBe('POST');
    expect((await call(actions, 'POST', { ...bearer, ...json, origin: 'http://evil.example' }, forceOpen)).status).toBe(
      403,
    );
    expect((await call(actions, 'POST', { ...bearer, ...json, origin: 'null' }, forceOpen)).status).toBe(403);
    expect(
      (await call(actions, 'POST', { ...bearer, ...json, 'sec-fetch-site': 'cross-site' }, forceOpen)).status,
    ).toBe(403);
    expect(calls).toEqual([]);
    expect(logged.every((entry) => entry.result === 'cross-origin refused')).toBe(true);
  });

  it('dispatches each operation to the client, logs who and what, and redacts secrets in the log', async () => {
    const { client, calls } = stubClient();
    const statsOnly: DashboardClient = { stats: () => stats('ratings') };
    const { board, logged } = await start([client, statsOnly]);
    const actions = new URL('actions', board.url).href;
    const post = (body: unknown) => call(actions, 'POST', { ...bearer, ...json }, JSON.stringify(body));
    for (const operation of ['breaker.forceOpen', 'breaker.forceClosed', 'breaker.reset']) {
      const answer = await post({ service: 'movies', endpoint: 'getMovie', operation });
      expect(answer.status, operation).toBe(200);
    }
    const configured = await post({
      service: 'movies',
      operation: 'configure',
      options: { timeoutMs: 250, headers: { authorization: 'Bearer downstream-secret' } },
    });
    expect(configured.status).toBe(200);
    expect(calls).toEqual([
      'getMovie.forceOpen',
      'getMovie.forceClosed',
      'getMovie.reset',
      'configure {"timeoutMs":250,"headers":{"authorization":"Bearer downstream-secret"}}',
    ]);
    // The client's validation: INVALID_OPTION → 400, nothing applied.
    const invalid = await post({ service: 'movies', operation: 'configure', options: { retries: 9 } });
    expect(invalid.status).toBe(400);
    expect(JSON.parse(invalid.body).code).toBe('INVALID_OPTION');
    expect((await post({ service: 'movies', endpoint: 'nope', operation: 'breaker.reset' })).status).toBe(404);
    expect((await post({ service: 'nope', endpoint: 'getMovie', operation: 'breaker.reset' })).status).toBe(404);
    expect((await post({ service: 'movies', endpoint: 'getMovie', operation: 'rm -rf' })).status).toBe(400);
    expect((await post({ service: 'movies', operation: 'breaker.reset' })).status).toBe(400);
    expect((await post({ service: 'ratings', endpoint: 'getMovie', operation: 'breaker.reset' })).status).toBe(501);
    expect((await call(actions, 'POST', { ...bearer, 'content-type': 'text/plain' }, forceOpen)).status).toBe(415);
    expect((await call(actions, 'POST', { ...bearer, ...json }, '{not json')).status).toBe(400);
    expect((await call(actions, 'POST', { ...bearer, ...json }, `"${'x'.repeat(20_000)}"`)).status).toBe(413);

    const first = logged[0] as { who: Record<string, unknown>; action: Record<string, unknown>; result: unknown };
    expect(first.who).toMatchObject({ credential: 'bearer', remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
    expect(first.action).toMatchObject({ service: 'movies', endpoint: 'getMovie', operation: 'breaker.forceOpen' });
    expect(first.result).toBe('ok');
    const configureEntry = logged[3] as { action: { options: unknown } };
    expect(configureEntry.action.options).toEqual({ timeoutMs: 250, headers: { authorization: '[redacted]' } });
    expect(JSON.stringify(logged)).not.toContain('downstream-secret');
    expect(JSON.stringify(logged)).not.toContain(TOKEN);
    // Requests that are not an action (malformed, wrong type, too large) are answered, not logged.
    expect(logged.length).toBe(8);
  });

  it('drives a real client: force open fails calls fast, force closed and reset bring them back', async () => {
    const server = await startServer((_request, response) => sendJson(response, 200, { id: 7, title: 'Heat' }));
    const client = createClient(movies, { instances: [server.url] });
    onTestFinished(() => client.close());
    const { board, logged } = await start([client]);
    const post = (operation: string) =>
      call(
        new URL('actions', board.url).href,
        'POST',
        { ...bearer, ...json },
        JSON.stringify({ service: 'movies', endpoint: 'getMovie', operation }),
      );
    expect((await post('breaker.forceOpen')).status).toBe(200);
    expect(client.circuit('getMovie').forced()).toBe('open');
    expect((await failure(client.getMovie({ id: 7 }))).code).toBe(ErrorCode.CIRCUIT_OPEN);
    expect((await post('breaker.forceClosed')).status).toBe(200);
    expect(client.circuit('getMovie').forced()).toBe('closed');
    expect(await client.getMovie({ id: 7 })).toEqual({ id: 7, title: 'Heat' });
    expect((await post('breaker.reset')).status).toBe(200);
    expect(client.circuit('getMovie').forced()).toBeUndefined();
    expect(client.circuit('getMovie').state()).toBe('closed');
    // configure(): applied to the live client, or refused whole with INVALID_OPTION.
    const configure = (options: Record<string, unknown>) =>
      call(
        new URL('actions', board.url).href,
        'POST',
        { ...bearer, ...json },
        JSON.stringify({ service: 'movies', operation: 'configure', options }),
      );
    expect((await configure({ timeoutMs: 250 })).status).toBe(200);
    const refused = await configure({ timeoutMs: -1 });
    expect(refused.status).toBe(400);
    expect(JSON.parse(refused.body).code).toBe('INVALID_OPTION');
    expect(await client.getMovie({ id: 7 })).toEqual({ id: 7, title: 'Heat' });
    expect(logged.map((entry) => (entry.action as { operation: string }).operation)).toEqual([
      'breaker.forceOpen',
      'breaker.forceClosed',
      'breaker.reset',
      'configure',
      'configure',
    ]);
  });

  it('checks its options: actions and non-loopback hosts need a token of 16 characters or more', async () => {
    const code = expect.objectContaining({ code: 'INVALID_OPTION' });
    await expect(dashboard([], { actions: true })).rejects.toThrow(code);
    await expect(dashboard([], { host: '0.0.0.0' })).rejects.toThrow(code);
    await expect(dashboard([], { token: 'short' })).rejects.toThrow(code);
    await expect(dashboard([], { sources: ['ftp://example.com/'] })).rejects.toThrow(code);
    await expect(dashboard([], { sources: ['http://127.0.0.1:1/'], sourceTimeoutMs: 1 })).rejects.toThrow(code);
    // Without actions, POST on actions is just another path: 405 (GET-only dashboard).
    const board = await dashboard([]);
    onTestFinished(() => board.close());
    expect((await call(new URL('actions', board.url).href, 'POST', json, forceOpen)).status).toBe(405);
  });
});
