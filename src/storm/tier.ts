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
import { loadStrategy } from './strategies/index.js';
import type { StormStrategy, TierCaller } from './strategy.js';
import type { EdgeSample, FaultStep, FromTier, TierConfig, TierCounters, ToTier } from './types.js';

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
  let fault: FaultStep['fault'] = 'none';
  let slowFactor = 10;
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
    if (config.tier === 'backend') {
      if (fault === 'hang') return; // accepted, never answered: the slot stays taken, as in a real hang
      const latencyMs = config.latencyMs * (fault === 'slow' ? slowFactor : 1);
      const status = failsNext() ? 503 : 200;
      setTimeout(() => {
        answer(request, response, status, arrivedAt);
        release();
      }, latencyMs);
      return;
    }
    if (caller === undefined) {
      answer(request, response, 503, arrivedAt);
      release();
      return;
    }
    caller.call(request).then(
      (outcome) => {
        answer(request, response, outcome.status, arrivedAt, outcome.fallback === true);
        release();
      },
      () => {
        answer(request, response, 500, arrivedAt);
        release();
      },
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
      const next = queue.shift();
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
    if (active < config.capacity.maxConcurrent) {
      active++;
      start();
    } else if (queue.length < config.capacity.maxQueue) {
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
    request.resume();
    const next = () => admit(request, response, arrivedAt);
    if (strategy.serve) strategy.serve(request, response, next);
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
        failRate = message.rate ?? 0.1;
        if (fault === 'down') goDown();
        else if (previous === 'down') comeUp();
        break;
      }
      case 'start-clock':
        // The measured run starts now: forget the warm-up.
        epochMs = message.epochMs;
        Object.assign(counters, { received: 0, statuses: {}, shed: 0, wasted: 0, downstreamAttempts: 0 });
        counters.peakInFlight = counters.inFlight;
        samples = [];
        break;
      case 'poll':
        send({ type: 'counters', id: message.id, counters, samples, downstreamTimes: [] });
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
