/**
 * One tier instance of the storm lab, run as a child process: a real HTTP server on
 * 127.0.0.1 with bounded concurrency and a little CPU work per request, calling the next
 * tier through the strategy under test, with faults injected by the lab over IPC. It counts
 * what happens on the server side; the lab polls the counts.
 *
 * Exits when the lab goes away (IPC disconnect), so no tier outlives a crashed or killed lab.
 */
import { AsyncResource } from 'node:async_hooks';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { seededRandom } from '../testing/random.js';
import { loadStrategy } from './strategies/index.js';
import type { CallOutcome, StormStrategy, TierCaller } from './strategy.js';
import type { EdgeSample, FromTier, TierConfig, TierCounters, ToTier } from './types.js';

const send = (message: FromTier) => process.send?.(message);

function busyWork(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // CPU work stands for real request handling, so that overload costs what it costs.
  }
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '{}') as TierConfig;
  const strategy: StormStrategy = await loadStrategy(config.strategy);
  const plan = config.service;
  // Topology runs: each call's own strategy (the run's when it names none).
  const callStrategies = await Promise.all(
    (plan?.calls ?? []).map((call) => (call.strategy === config.strategy ? strategy : loadStrategy(call.strategy))),
  );
  const attemptsByCall = (plan?.calls ?? []).map(() => 0);
  let receivedBySecond: number[] = [];
  let okBySecond: number[] = [];
  let random = seededRandom(config.seed);
  const counters: TierCounters = {
    tier: config.tier,
    index: config.index,
    received: 0,
    statuses: {},
    shed: 0,
    wasted: 0,
    inFlight: 0,
    peakInFlight: 0,
    downstreamAttempts: 0,
  };
  let samples: EdgeSample[] = [];
  let epochMs = Date.now();
  let fault: Extract<ToTier, { type: 'fault' }>['fault'] = 'none';
  let slowFactor = 10;
  let addedMs = 0;
  let errorRate = 0;
  let maxConcurrent = config.capacity.maxConcurrent;
  let maxQueue = config.capacity.maxQueue;
  /** fail: share of answers that are 503, spread evenly by a running credit (deterministic). */
  let failRate = 0;
  let failCredit = 0;
  const failsNext = () => {
    if (fault !== 'fail') return false;
    failCredit += failRate;
    if (failCredit < 1) return false;
    failCredit -= 1;
    return true;
  };
  let caller: TierCaller | undefined;
  /** Topology runs: the caller of each call, by index. */
  const callers: Array<TierCaller | undefined> = (plan?.calls ?? []).map(() => undefined);
  const second = (atMs: number) => Math.max(0, Math.floor((atMs - epochMs) / 1000));
  const queue: Array<() => void> = [];
  let active = 0;
  const sockets = new Set<Socket>();

  const answer = (
    request: IncomingMessage,
    response: ServerResponse,
    status: number,
    arrivedAt: number,
    fallback = false,
  ) => {
    if (
      response.destroyed ||
      response.writableEnded ||
      request.socket.destroyed ||
      strategy.expired?.(request) === true
    ) {
      counters.wasted++;
    }
    if (status === 200 && !fallback && plan !== undefined) {
      const at = second(arrivedAt);
      okBySecond[at] = (okBySecond[at] ?? 0) + 1;
    }
    const key = fallback ? `${status}-fallback` : String(status);
    counters.statuses[key] = (counters.statuses[key] ?? 0) + 1;
    if (config.tier === 'edge') {
      samples.push({ atMs: arrivedAt - epochMs, latencyMs: Date.now() - arrivedAt, ok: status === 200 && !fallback });
    }
    if (!response.destroyed && !response.writableEnded) {
      const body = JSON.stringify({ tier: config.tier, index: config.index, status, fallback });
      response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      response.end(body);
    }
  };

  const work = (request: IncomingMessage, response: ServerResponse, arrivedAt: number, release: () => void) => {
    busyWork(config.workMs);
    if (fault === 'hang') return; // accepted, never answered: the slot stays taken, as in a real hang
    const finish = (outcome: CallOutcome) => {
      answer(request, response, outcome.status, arrivedAt, outcome.fallback === true);
      release();
    };
    const proceed = () => {
      if (errorRate > 0 && random() < errorRate) finish({ status: 500 });
      else if (failsNext()) finish({ status: 503 });
      else if (plan !== undefined) {
        if (plan.calls.length === 0) finish({ status: 200 });
        else runPlan(request).then(finish, () => finish({ status: 500 }));
      } else if (config.tier === 'backend') finish({ status: 200 });
      else if (caller === undefined) finish({ status: 503 });
      else caller.call(request).then(finish, () => finish({ status: 500 }));
    };
    const latencyMs = config.latencyMs * (fault === 'slow' ? slowFactor : 1) + addedMs;
    if (latencyMs > 0) setTimeout(proceed, latencyMs);
    else proceed();
  };

  /** Topology runs: the service's calls for one request, in sequence or in parallel. */
  const callOnce = async (index: number, request: IncomingMessage): Promise<CallOutcome> => {
    const target = callers[index];
    if (target === undefined) return { status: 503 };
    const outcome = await target.call(request);
    // A fallback the topology asks for, whatever the strategy does itself.
    if (outcome.status !== 200 && plan?.calls[index]?.fallback === true) return { status: 200, fallback: true };
    return outcome;
  };
  const runPlan = (request: IncomingMessage): Promise<CallOutcome> => {
    const calls = (plan as NonNullable<typeof plan>).calls;
    const one = (index: number) => {
      const call = calls[index] as (typeof calls)[number];
      return inOrder(
        call.mode,
        Array.from({ length: call.times }, () => () => callOnce(index, request)),
      );
    };
    return inOrder(
      (plan as NonNullable<typeof plan>).callMode,
      calls.map((_, index) => () => one(index)),
    );
  };

  const admit = (request: IncomingMessage, response: ServerResponse, arrivedAt: number) => {
    let started = false;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      if (!started) {
        // The caller went away while the request was queued: it never took a slot.
        const index = queue.indexOf(queued);
        if (index !== -1) queue.splice(index, 1);
        return;
      }
      counters.inFlight--;
      // The slot passes to the next in the queue, unless a capacity drop took it away.
      const next = active > maxConcurrent ? undefined : queue.shift();
      if (next === undefined) active--;
      else next();
    };
    // A hung backend request keeps its slot until the caller goes away.
    response.on('close', release);
    const start = () => {
      started = true;
      counters.inFlight++;
      if (counters.inFlight > counters.peakInFlight) counters.peakInFlight = counters.inFlight;
      if (response.destroyed) {
        counters.wasted++;
        release();
        return;
      }
      work(request, response, arrivedAt, release);
    };
    // Run later in this request's own async context (its deadline), not the releaser's.
    const queued = AsyncResource.bind(start);
    if (active < maxConcurrent) {
      active++;
      start();
    } else if (queue.length < maxQueue) {
      queue.push(queued);
    } else {
      counters.shed++;
      response.removeListener('close', release);
      answer(request, response, 503, arrivedAt);
    }
  };

  const server = createServer((request, response) => {
    counters.received++;
    const arrivedAt = Date.now();
    if (plan !== undefined) {
      const at = second(arrivedAt);
      receivedBySecond[at] = (receivedBySecond[at] ?? 0) + 1;
    }
    request.resume();
    const next = () => admit(request, response, arrivedAt);
    if (strategy.serve) strategy.serve(request, response, next, config.tier);
    else next();
  });
  server.keepAliveTimeout = 5000;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const goDown = () => {
    server.close();
    for (const socket of sockets) socket.destroy();
  };
  const comeUp = () => {
    if (!server.listening) server.listen(port, '127.0.0.1');
  };

  process.on('message', async (message: ToTier) => {
    switch (message.type) {
      case 'targets': {
        if (plan !== undefined) {
          const index = message.call ?? 0;
          const call = plan.calls[index];
          if (call === undefined) break;
          await callers[index]?.close();
          callers[index] = await (callStrategies[index] as StormStrategy).createCaller({
            tier: config.tier,
            targets: message.urls,
            onAttempt: () => {
              counters.downstreamAttempts++;
              attemptsByCall[index] = (attemptsByCall[index] ?? 0) + 1;
            },
            ...(call.fallback === undefined ? {} : { fallback: call.fallback }),
            ...(call.client === undefined ? {} : { client: call.client }),
          });
          break;
        }
        await caller?.close();
        caller = await strategy.createCaller({
          tier: config.tier,
          targets: message.urls,
          onAttempt: () => {
            counters.downstreamAttempts++;
          },
        });
        break;
      }
      case 'fault': {
        const previous = fault;
        fault = message.fault;
        slowFactor = message.factor ?? 10;
        addedMs = fault === 'latency' ? (message.addedMs ?? 0) : 0;
        errorRate = fault === 'errors' ? (message.errorRate ?? 0) : 0;
        const fraction = fault === 'capacity' ? (message.capacityFraction ?? 1) : 1;
        maxConcurrent = Math.max(1, Math.floor(config.capacity.maxConcurrent * fraction));
        maxQueue = Math.floor(config.capacity.maxQueue * fraction);
        // Capacity back: the queue fills the slots that came back.
        while (active < maxConcurrent && queue.length > 0) {
          active++;
          (queue.shift() as () => void)();
        }
        failRate = fault === 'fail' ? (message.rate ?? 0.1) : 0;
        if (fault === 'down') goDown();
        else if (previous === 'down') comeUp();
        break;
      }
      case 'start-clock':
        // The measured run starts now: forget the warm-up.
        epochMs = message.epochMs;
        Object.assign(counters, { received: 0, statuses: {}, shed: 0, wasted: 0, downstreamAttempts: 0 });
        receivedBySecond = [];
        okBySecond = [];
        attemptsByCall.fill(0);
        random = seededRandom(config.seed);
        counters.peakInFlight = counters.inFlight;
        samples = [];
        break;
      case 'poll':
        send({
          type: 'counters',
          id: message.id,
          counters:
            plan === undefined
              ? counters
              : { ...counters, receivedBySecond: [...receivedBySecond], okBySecond: [...okBySecond], attemptsByCall },
          samples,
          downstreamTimes: [],
        });
        samples = [];
        break;
      case 'stop':
        await shutdown();
        break;
    }
  });

  const shutdown = async () => {
    goDown();
    await caller?.close().catch(() => undefined);
    await Promise.all(callers.map((each) => each?.close().catch(() => undefined)));
    process.exit(0);
  };
  // The lab went away (crash, Ctrl-C, kill): never outlive it.
  process.on('disconnect', () => void shutdown());
  send({ type: 'ready', port });
}

main().catch((error: unknown) => {
  send({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) });
  process.exit(1);
});

/**
 * Runs `steps` one after another (a failure stops the rest) or all at once; answers with the
 * first failure, or 200 (a fallback when any step fell back) once every step succeeded.
 */
function inOrder(mode: 'sequence' | 'parallel', steps: Array<() => Promise<CallOutcome>>): Promise<CallOutcome> {
  if (mode === 'sequence') {
    return (async () => {
      let fallback = false;
      for (const step of steps) {
        const outcome = await step();
        if (outcome.status !== 200) return outcome;
        if (outcome.fallback === true) fallback = true;
      }
      return fallback ? { status: 200, fallback } : { status: 200 };
    })();
  }
  return new Promise((resolve) => {
    let pending = steps.length;
    let fallback = false;
    let settled = false;
    if (pending === 0) resolve({ status: 200 });
    for (const step of steps) {
      step().then(
        (outcome) => {
          if (settled) return;
          if (outcome.fallback === true) fallback = true;
          if (outcome.status !== 200) {
            settled = true;
            resolve(outcome);
          } else if (--pending === 0) {
            settled = true;
            resolve(fallback ? { status: 200, fallback } : { status: 200 });
          }
        },
        () => {
          if (settled) return;
          settled = true;
          resolve({ status: 500 });
        },
      );
    }
  });
}
