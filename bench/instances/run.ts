/**
 * Full-length instance-health numbers on real loopback servers (the integration tests run
 * shorter versions):
 *
 * - flaky-one: one of 3 instances answers 503 to 10% of requests, 200 calls/s for 30 s: the
 *   flaky instance's share of attempts after 10 s, and the error rate callers see.
 * - slow-one: one of 3 instances answers in 50 ms, the others in 10 ms, 100 calls/s: the slow
 *   instance's share and the callers' p99, against a run with only the two fast instances.
 *
 * - alike: 3 instances answering in 10 ms, 100 calls/s: how evenly each balancer shares
 *   like instances on this machine (latency noise must not move traffic).
 *
 * `node --import tsx bench/instances/run.ts [--seconds 30] [--scenario all|flaky-one|slow-one|alike]`
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { type ClientOptions, createClient, defineService, endpoint } from '../../src/index.js';

const { values } = parseArgs({
  options: { seconds: { type: 'string', default: '30' }, scenario: { type: 'string', default: 'all' } },
});
const seconds = Number(values.seconds);
const only = values.scenario;

const service = defineService({ name: 'bench', endpoints: { get: endpoint({ method: 'GET', path: '/item' }) } });

interface Backend {
  url: string;
  attempts: number;
  /** Attempts that arrived after `mark` was set. */
  attemptsAfterMark: number;
  mark: boolean;
  server: Server;
}

async function backend(answer: (count: number) => { status: number; delayMs: number }): Promise<Backend> {
  const state = { attempts: 0, attemptsAfterMark: 0, mark: false } as Backend;
  const server = createServer((_request, response) => {
    const { status, delayMs } = answer(state.attempts++);
    if (state.mark) state.attemptsAfterMark++;
    const send = () => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(status === 200 ? '{"ok":true}' : '{"error":"unavailable"}');
    };
    if (delayMs > 0) setTimeout(send, delayMs);
    else send();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.server = server;
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return state;
}

async function closeAll(backends: Backend[]) {
  for (const item of backends) item.server.closeAllConnections();
  await Promise.all(backends.map((item) => new Promise((resolve) => item.server.close(resolve))));
}

/** Open loop: `perSecond` calls a second for `durationS`; `onSecond(s)` at each whole second. */
async function openLoop(
  call: () => Promise<unknown>,
  perSecond: number,
  durationS: number,
  onSecond: (second: number) => void = () => {},
) {
  const latencies: number[] = [];
  let errors = 0;
  const pending: Array<Promise<void>> = [];
  const start = performance.now();
  const total = Math.round(perSecond * durationS);
  for (let index = 0; index < total; index++) {
    if (index % perSecond === 0) onSecond(index / perSecond);
    const wait = start + (index * 1000) / perSecond - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    const began = performance.now();
    pending.push(
      call().then(
        () => void latencies.push(performance.now() - began),
        () => {
          errors++;
          latencies.push(performance.now() - began);
        },
      ),
    );
  }
  await Promise.all(pending);
  latencies.sort((a, b) => a - b);
  const p99 = latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? 0;
  return { calls: total, errors, p99 };
}

async function flakyOne(label: string, options: Partial<ClientOptions>) {
  const flaky = await backend((count) => ({ status: count % 10 === 9 ? 503 : 200, delayMs: 0 }));
  const others = [
    await backend(() => ({ status: 200, delayMs: 0 })),
    await backend(() => ({ status: 200, delayMs: 0 })),
  ];
  const all = [flaky, ...others];
  const client = createClient(service, { instances: all.map((item) => item.url), ...options });
  let ejections = 0;
  client.on('eject', () => ejections++);
  const run = await openLoop(
    () => client.get(),
    200,
    seconds,
    (second) => {
      if (second === 10) for (const item of all) item.mark = true;
    },
  );
  await client.close();
  await closeAll(all);
  const after = all.reduce((sum, item) => sum + item.attemptsAfterMark, 0);
  const share = flaky.attemptsAfterMark / after;
  const total = all.reduce((sum, item) => sum + item.attempts, 0);
  console.log(
    `| flaky-one | ${label} | ${(100 * share).toFixed(2)}% | ${((100 * run.errors) / run.calls).toFixed(3)}% | ${(total / run.calls).toFixed(3)} | ${ejections} |`,
  );
}

async function slowOne(label: string, options: Partial<ClientOptions>, withSlow: boolean) {
  const slow = await backend(() => ({ status: 200, delayMs: 50 }));
  const fast = [
    await backend(() => ({ status: 200, delayMs: 10 })),
    await backend(() => ({ status: 200, delayMs: 10 })),
  ];
  const used = withSlow ? [slow, ...fast] : fast;
  const client = createClient(service, { instances: used.map((item) => item.url), ...options });
  const run = await openLoop(() => client.get(), 100, seconds);
  await client.close();
  await closeAll([slow, ...fast]);
  const total = used.reduce((sum, item) => sum + item.attempts, 0);
  const share = withSlow ? `${((100 * slow.attempts) / total).toFixed(2)}%` : '–';
  console.log(`| slow-one | ${label} | ${share} | ${run.p99.toFixed(1)} ms | ${run.errors} |`);
  return run.p99;
}

if (only === 'all' || only === 'flaky-one') {
  console.log(`flaky-one: 200 calls/s for ${seconds} s; share of attempts from 10 s on`);
  console.log('| scenario | client | flaky share after 10 s | caller errors | attempts per call | ejections |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: |');
  await flakyOne("balancer 'p2c', consecutive failures only", { balancer: 'p2c' });
  await flakyOne("balancer 'p2c' + failurePercentage 5, intervalMs 1000", {
    balancer: 'p2c',
    outlier: { failurePercentage: 5, intervalMs: 1000 },
  });
  await flakyOne("balancer 'p2c-ewma', no rate ejection", { balancer: 'p2c-ewma' });
  await flakyOne("balancer 'p2c-ewma' + failurePercentage 5", {
    balancer: 'p2c-ewma',
    outlier: { failurePercentage: 5, intervalMs: 1000 },
  });
}
if (only === 'all' || only === 'slow-one') {
  console.log(`\nslow-one: 100 calls/s for ${seconds} s (open loop, about 1–2 calls in flight)`);
  console.log('| scenario | client | slow share | caller p99 | errors |');
  console.log('| --- | --- | ---: | ---: | ---: |');
  const baseline = await slowOne('two fast instances only (baseline)', {}, false);
  const plain = await slowOne("balancer 'p2c'", { balancer: 'p2c' }, true);
  const ewma = await slowOne("balancer 'p2c-ewma'", { balancer: 'p2c-ewma' }, true);
  console.log(`\np99 vs baseline: p2c ${(plain / baseline).toFixed(2)}×, p2c-ewma ${(ewma / baseline).toFixed(2)}×`);
}

async function alike(label: string, options: Partial<ClientOptions>) {
  const all = [
    await backend(() => ({ status: 200, delayMs: 10 })),
    await backend(() => ({ status: 200, delayMs: 10 })),
    await backend(() => ({ status: 200, delayMs: 10 })),
  ];
  const client = createClient(service, { instances: all.map((item) => item.url), ...options });
  const run = await openLoop(() => client.get(), 100, seconds);
  await client.close();
  await closeAll(all);
  const total = all.reduce((sum, item) => sum + item.attempts, 0);
  const shares = all.map((item) => item.attempts / total);
  const spread = Math.max(...shares) / Math.min(...shares);
  const shown = shares.map((share) => `${(100 * share).toFixed(1)}%`).join(' / ');
  console.log(`| alike | ${label} | ${shown} | ${spread.toFixed(2)} | ${run.p99.toFixed(1)} ms | ${run.errors} |`);
}

if (only === 'all' || only === 'alike') {
  console.log(`\nalike: 3 instances at 10 ms, 100 calls/s for ${seconds} s`);
  console.log('| scenario | client | shares | max / min | caller p99 | errors |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: |');
  await alike("balancer 'p2c'", { balancer: 'p2c' });
  await alike("balancer 'p2c-ewma'", { balancer: 'p2c-ewma' });
  await alike("balancer 'p2c'", { balancer: 'p2c' });
  await alike("balancer 'p2c-ewma'", { balancer: 'p2c-ewma' });
}
