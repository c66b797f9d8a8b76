// A live dashboard over two clients with real traffic and a failure phase:
//   node --import tsx examples/dashboard/run.ts [--seconds 15] [--port 0]
// Open the printed URL. After 35% of the run, getMovie starts answering 503: its circuit opens,
// half-open probes fail while the outage lasts, and it closes again once the service recovers.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { dashboard } from '../../src/dashboard/index.js';
import { createClient, defineService, endpoint } from '../../src/index.js';
import { movies } from '../movies/service.js';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '15' }, port: { type: 'string', default: '0' } },
});
const seconds = Number(values.seconds);
const port = Number(values.port);
if (!(Number.isFinite(seconds) && seconds > 0))
  throw new Error(`--seconds must be a positive number, got ${values.seconds}`);

// A second dependency, so the page shows more than one service.
const reviews = defineService({
  name: 'reviews',
  endpoints: {
    forMovie: endpoint({
      method: 'GET',
      path: '/reviews/:id',
      params: z.object({ id: z.number().int() }),
      response: z.array(z.object({ stars: z.number(), text: z.string() })),
    }),
  },
});

// --- the services: one loopback server, switchable between healthy and failing ----------------
let outage = false;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const json = (response: ServerResponse, status: number, value: unknown) => {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(value));
};
async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://localhost');
  for await (const _ of request); // drain the body
  await sleep(2 + Math.random() * (url.pathname.startsWith('/reviews') ? 40 : 12));
  if (/^\/movies\/\d+$/.test(url.pathname)) {
    if (outage) return json(response, 503, { error: 'catalogue database unavailable' });
    return json(response, 200, { id: Number(url.pathname.slice(8)), title: 'Heat', year: 1995 });
  }
  if (/^\/movies\/\d+\/ratings$/.test(url.pathname)) return json(response, 200, { ok: true, average: 4.5 });
  if (url.pathname === '/movies') return json(response, 200, [{ id: 1, title: 'Heat', year: 1995 }]);
  if (url.pathname.startsWith('/reviews/')) {
    // A flaky dependency: a few percent of errors, not enough to open its circuit.
    if (Math.random() < 0.04) return json(response, 500, { error: 'flaky' });
    return json(response, 200, [{ stars: 5, text: 'A classic.' }]);
  }
  json(response, 404, { error: 'not found' });
}
const server = createServer((request, response) => {
  handle(request, response).catch((error: unknown) => response.destroy(error as Error));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const serviceUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

// --- the clients and the dashboard ------------------------------------------------------------
const breaker = { volumeThreshold: 10, errorThresholdPercentage: 50, resetTimeoutMs: 2000, rollingWindowMs: 5000 };
const movieClient = createClient(movies, { instances: [serviceUrl], breaker, metricsWindowMs: 5000 });
const reviewClient = createClient(reviews, { instances: [serviceUrl], breaker, metricsWindowMs: 5000 });
const board = await dashboard([movieClient, reviewClient], { intervalMs: 500, port });
console.log(`dashboard: ${board.url}  (running ${seconds} s)`);
const startedAt = performance.now();
const at = () => `${((performance.now() - startedAt) / 1000).toFixed(1).padStart(5)} s`;
movieClient.on('breaker', ({ endpoint, state }) => console.log(`${at()}  movies.${endpoint} circuit ${state}`));
reviewClient.on('breaker', ({ endpoint, state }) => console.log(`${at()}  reviews.${endpoint} circuit ${state}`));

// --- traffic: ~40 getMovie/s, ~10 search/s, ~4 rate/s, ~15 reviews/s --------------------------
const ignore = () => {};
const loops = [
  { everyMs: 25, call: () => movieClient.getMovie({ id: 1 + Math.floor(Math.random() * 9) }) },
  { everyMs: 100, call: () => movieClient.search({ q: 'heat' }) },
  { everyMs: 250, call: () => movieClient.rate({ id: 7 }, { stars: 5 }) },
  { everyMs: 66, call: () => reviewClient.forMovie({ id: 7 }) },
].map(({ everyMs, call }) => setInterval(() => call().then(ignore, ignore), everyMs));
const phases = [
  setTimeout(
    () => {
      outage = true;
      console.log(`${at()}  outage: GET /movies/:id answers 503`);
    },
    seconds * 1000 * 0.35,
  ),
  setTimeout(
    () => {
      outage = false;
      console.log(`${at()}  recovered`);
    },
    seconds * 1000 * 0.6,
  ),
];

await sleep(seconds * 1000);
for (const timer of [...loops, ...phases]) clearInterval(timer);
const stats = movieClient.stats().endpoints.getMovie;
console.log(`${at()}  done: getMovie ${stats?.requests} calls, failures ${JSON.stringify(stats?.failures)}`);
await board.close();
await Promise.all([movieClient.close(), reviewClient.close()]);
await new Promise<void>((resolve) => server.close(() => resolve()));
