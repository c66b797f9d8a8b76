/**
 * CPU cost of telescope's layers alone: the client stack over an in-process transport that
 * answers at once, so no socket, parser or kernel time is in the numbers. Each row turns one
 * layer off (or on) against the full stack; the difference is that layer's cost per call.
 *
 * `node --import tsx bench/overhead/layers.ts [--calls 300000] [--rounds 5]`
 */
import { parseArgs } from 'node:util';
import { type AttemptTransport, type ClientOptions, createClient, type IncomingResponse } from '../../src/index.js';
import { movies, moviesWithoutResponseSchema } from './movie-service.js';
import { movieJson } from './shared.js';

const { values } = parseArgs({
  options: { calls: { type: 'string', default: '300000' }, rounds: { type: 'string', default: '5' } },
});
const calls = Number(values.calls);
const rounds = Number(values.rounds);

const answer: IncomingResponse = { status: 200, headers: {}, body: JSON.parse(movieJson(7)), instance: '' };
const instant: AttemptTransport = {
  call: (_request, context) => Promise.resolve({ ...answer, instance: context.instance?.url ?? '' }),
  close: async () => {},
};
const plain = moviesWithoutResponseSchema;
const withSchema = movies;

const base: ClientOptions = { instances: ['http://127.0.0.1:1'], timeoutMs: 1000, transport: instant };
const variants: Array<[string, typeof plain | typeof withSchema, ClientOptions]> = [
  ['all layers', plain, base],
  [
    'all layers, 3 instances',
    plain,
    { ...base, instances: ['http://127.0.0.1:1', 'http://127.0.0.1:2', 'http://127.0.0.1:3'] },
  ],
  [
    "3 instances, balancer 'p2c-ewma'",
    plain,
    {
      ...base,
      instances: ['http://127.0.0.1:1', 'http://127.0.0.1:2', 'http://127.0.0.1:3'],
      balancer: 'p2c-ewma',
    },
  ],
  ['+ zod response schema', withSchema, base],
  ['- breaker', plain, { ...base, breaker: false }],
  ['- bulkhead', plain, { ...base, bulkhead: false }],
  ['- retry', plain, { ...base, retry: false }],
  ['- metrics', plain, { ...base, metrics: false }],
  ['- deadline header', plain, { ...base, deadlineHeader: false }],
  ['no optional layer', plain, { ...base, breaker: false, bulkhead: false, retry: false, metrics: false }],
];

async function measure(service: typeof plain, options: ClientOptions): Promise<number> {
  const client = createClient(service, options);
  const inFlight = 64;
  const run = async (count: number) => {
    let next = 0;
    const worker = async () => {
      while (next++ < count) await client.getMovie({ id: 7 });
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
  };
  await run(20_000);
  const before = process.cpuUsage();
  await run(calls);
  const used = process.cpuUsage(before);
  await client.close();
  return (used.user + used.system) / calls;
}

const results = new Map<string, number[]>();
for (let round = 0; round < rounds; round++) {
  for (const [name, service, options] of variants) {
    const micros = await measure(service, options);
    results.set(name, [...(results.get(name) ?? []), micros]);
  }
}
const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)] as number;
const full = median(results.get('all layers') as number[]);
console.log(
  `| Stack (in-process transport, ${calls} calls × ${rounds} rounds, 64 in flight) | µs CPU/call | vs all layers |`,
);
console.log('| --- | ---: | ---: |');
for (const [name, list] of results) {
  const value = median(list);
  console.log(`| ${name} | ${value.toFixed(2)} | ${value - full >= 0 ? '+' : ''}${(value - full).toFixed(2)} |`);
}
