/**
 * CPU cost of telescope's layers alone: the client stack over an in-process transport that
 * answers at once, so no socket, parser or kernel time is in the numbers. Each row turns one
 * layer off (or on) against the full stack; the difference is that layer's cost per call.
 *
 * `node --import tsx bench/overhead/layers.ts [--calls 300000] [--rounds 5] [--only otel] [--paired] [--alloc]`
 * (`--only`: the rows whose name contains it, plus `all layers`. `--paired`: each row's
 * difference is the median, over rounds, of the row minus an `all layers` run measured right
 * after it, which cancels most of a shared machine's drift; it doubles the time. `--alloc`:
 * one more column, the bytes allocated per call, from V8's sampling heap profiler over
 * 50,000 more calls per row and round, objects collected since included. `--clients N`: each
 * row builds N clients and sends each call to one drawn at random, so that a call finds its
 * client's state cold in cache, as in a process that holds many clients: the storm
 * simulator's fleet holds 2,000.)
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Session } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { type AttemptTransport, type ClientOptions, createClient, type IncomingResponse } from '../../src/index.js';
import { otelMetricProducer, otelMetrics } from '../../src/otel/index.js';
import {
  movies,
  moviesClassified,
  moviesWithAnOverriddenEndpoint,
  moviesWithoutResponseSchema,
} from './movie-service.js';
import { movieJson } from './shared.js';

const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '300000' },
    rounds: { type: 'string', default: '5' },
    only: { type: 'string' },
    paired: { type: 'boolean', default: false },
    alloc: { type: 'boolean', default: false },
    clients: { type: 'string', default: '1' },
  },
});
const calls = Number(values.calls);
const rounds = Number(values.rounds);
const clientCount = Number(values.clients);
if (!(Number.isInteger(clientCount) && clientCount >= 1 && clientCount <= 100_000)) {
  throw new RangeError(`--clients must be an integer in [1, 100000], got ${values.clients}`);
}

const answer: IncomingResponse = { status: 200, headers: {}, body: JSON.parse(movieJson(7)), instance: '' };
const instant: AttemptTransport = {
  call: (_request, context) => Promise.resolve({ ...answer, instance: context.instance?.url ?? '' }),
  close: async () => {},
};
const plain = moviesWithoutResponseSchema;
const withSchema = movies;

/** A reader collected by hand: the bench collects once per measured run, inside the measurement. */
class ManualReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

/**
 * Around a measured run: starts what the row measures, and returns what to do at the end of
 * the run (inside the measurement) and after it.
 */
type Around = () => { atEnd?: () => Promise<unknown>; stop: () => unknown };

/**
 * otelMetrics() on an SDK MeterProvider. `collect`: one collection at the end of the run,
 * counted in the run's CPU (the SDK's histogram record() for every observation happens there).
 */
const withOtelMetrics =
  (collect: boolean): Around =>
  () => {
    const reader = new ManualReader();
    const provider = new MeterProvider({ readers: [reader] });
    const integration = otelMetrics({ meterProvider: provider });
    return {
      atEnd: collect ? () => reader.collect() : undefined,
      stop: () => {
        integration.stop();
        return provider.shutdown();
      },
    };
  };
/**
 * otelMetricProducer() on a reader of an SDK MeterProvider. `collect`: one collection at the
 * end of the run, counted in the run's CPU (one data point per series).
 */
const withOtelMetricProducer =
  (collect: boolean): Around =>
  () => {
    const producer = otelMetricProducer();
    const reader = new ManualReader({ metricProducers: [producer] });
    const provider = new MeterProvider({ readers: [reader] });
    return {
      atEnd: collect ? () => reader.collect() : undefined,
      stop: () => {
        producer.stop();
        return provider.shutdown();
      },
    };
  };
/** Subscribers that do nothing, on the channels the metrics read: the cost of publishing alone. */
const withEmptySubscribers: Around = () => {
  const names = ['telescope:attempt:end', 'telescope:call:end', 'telescope:call:error', 'telescope:client:event'];
  const nothing = () => {};
  for (const name of names) subscribe(name, nothing);
  return {
    stop: () => {
      for (const name of names) unsubscribe(name, nothing);
    },
  };
};
/** otelMetrics() with no SDK registered (the API's no-op meter provider). */
const withOtelMetricsNoSdk: Around = () => {
  const integration = otelMetrics();
  return { stop: () => integration.stop() };
};

const base: ClientOptions = { instances: ['http://127.0.0.1:1'], timeoutMs: 1000, transport: instant };
type Movies = typeof plain | typeof withSchema | typeof moviesWithAnOverriddenEndpoint | typeof moviesClassified;
type Variant = [string, Movies, ClientOptions, Around?];
const allVariants: Variant[] = [
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
  ['another endpoint has its own policy', moviesWithAnOverriddenEndpoint, base],
  ['own policy: retry.statuses + classify', moviesClassified, base],
  ['- breaker (and its throttle)', plain, { ...base, breaker: false }],
  ['- throttle', plain, { ...base, throttle: false }],
  ['- bulkhead', plain, { ...base, bulkhead: false }],
  ['- retry', plain, { ...base, retry: false }],
  ['- metrics', plain, { ...base, metrics: false }],
  ['- deadline header', plain, { ...base, deadlineHeader: false }],
  ['no optional layer', plain, { ...base, breaker: false, bulkhead: false, retry: false, metrics: false }],
  ['+ empty subscribers on the otel metrics channels', plain, base, withEmptySubscribers],
  ['+ otelMetrics(), SDK meter provider: call path', plain, base, withOtelMetrics(false)],
  ['+ otelMetrics(), SDK meter provider: call path + collection', plain, base, withOtelMetrics(true)],
  ['+ otelMetrics(), no SDK (no-op provider)', plain, base, withOtelMetricsNoSdk],
  ['+ otelMetricProducer() on an SDK reader: call path', plain, base, withOtelMetricProducer(false)],
  ['+ otelMetricProducer() on an SDK reader: call path + collection', plain, base, withOtelMetricProducer(true)],
];
const variants = allVariants.filter(
  ([name]) => values.only === undefined || name === 'all layers' || name.includes(values.only),
);

/** V8's sampling heap profiler, for `--alloc` (objects collected since the sample are counted). */
const profiler = values.alloc ? new Session() : undefined;
if (profiler !== undefined) {
  profiler.connect();
  await profiler.post('HeapProfiler.enable');
}
const allocCalls = 50_000;

/** Bytes allocated per call over `run(allocCalls)`: the sampled sizes, scaled by V8 to the whole. */
async function bytesPerCall(session: Session, run: (count: number) => Promise<void>): Promise<number> {
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: 256,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  await run(allocCalls);
  const { profile } = await session.post('HeapProfiler.stopSampling');
  let total = 0;
  const visit = (node: typeof profile.head): void => {
    total += node.selfSize;
    for (const child of node.children) visit(child);
  };
  visit(profile.head);
  return total / allocCalls;
}

async function measure(
  service: Movies,
  options: ClientOptions,
  around?: Around,
): Promise<{ micros: number; bytes?: number }> {
  const clients = Array.from({ length: clientCount }, () => createClient(service, options));
  const running = around?.();
  const inFlight = 64;
  // A fixed sequence of clients (an LCG), the same for every row.
  let seed = 1;
  const pick = () => {
    seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
    return clients[seed % clientCount] as (typeof clients)[number];
  };
  const run = async (count: number) => {
    let next = 0;
    const worker = async () => {
      while (next++ < count) await pick().getMovie({ id: 7 });
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
  };
  await run(20_000);
  const before = process.cpuUsage();
  await run(calls);
  await running?.atEnd?.();
  const used = process.cpuUsage(before);
  const bytes = profiler === undefined ? undefined : await bytesPerCall(profiler, run);
  await running?.stop();
  await Promise.all(clients.map((client) => client.close()));
  return { micros: (used.user + used.system) / calls, ...(bytes === undefined ? {} : { bytes }) };
}

const results = new Map<string, number[]>();
const allocated = new Map<string, number[]>();
/** `--paired`: per row, its CPU per call minus that of an `all layers` run right after it. */
const differences = new Map<string, number[]>();
const [, fullService, fullOptions] = variants.find(([name]) => name === 'all layers') as Variant;
for (let round = 0; round < rounds; round++) {
  for (const [name, service, options, around] of variants) {
    const { micros, bytes } = await measure(service, options, around);
    results.set(name, [...(results.get(name) ?? []), micros]);
    if (bytes !== undefined) allocated.set(name, [...(allocated.get(name) ?? []), bytes]);
    if (values.paired && name !== 'all layers') {
      const baseline = await measure(fullService, fullOptions);
      differences.set(name, [...(differences.get(name) ?? []), micros - baseline.micros]);
    }
  }
}
profiler?.disconnect();
const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)] as number;
const full = median(results.get('all layers') as number[]);
const paired = `${values.paired ? ', paired' : ''}${clientCount > 1 ? `, calls spread over ${clientCount} clients` : ''}`;
const allocHead = values.alloc ? ' bytes allocated/call |' : '';
console.log(
  `| Stack (in-process transport, ${calls} calls × ${rounds} rounds, 64 in flight${paired}) | µs CPU/call | vs all layers |${allocHead}`,
);
console.log(`| --- | ---: | ---: |${values.alloc ? ' ---: |' : ''}`);
for (const [name, list] of results) {
  const value = median(list);
  const difference = differences.has(name) ? median(differences.get(name) as number[]) : value - full;
  const bytes = allocated.has(name) ? ` ${Math.round(median(allocated.get(name) as number[]))} |` : '';
  console.log(`| ${name} | ${value.toFixed(2)} | ${difference >= 0 ? '+' : ''}${difference.toFixed(2)} |${bytes}`);
}
