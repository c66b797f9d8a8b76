/**
 * Leak check under faults: 50,000 calls through a client with retries, hedging, outlier
 * ejection, breaker, bulkhead and a fallback, against three real node:http instances on
 * 127.0.0.1 that fail about 30% of their requests in every way a dependency fails (503,
 * connection reset before and in the middle of the response, hangs until the attempt times
 * out, slow answers, invalid JSON, a body of the wrong shape), plus a fourth instance URL on a
 * closed port (connection refused: ejection and retries), caller aborts through AbortSignal,
 * a long-lived AbortSignal shared by a third of the calls, and `withDeadline` budgets.
 *
 * The client runs in a child process (test/hardening/leak-driver.ts, `node --expose-gc`), so
 * that its heap after GC, active resources, socket descriptors, undici sockets, timer-wheel
 * entries and abort listeners are its own; it measures them before the client exists, after a
 * warm-up (the baseline), once idle after the calls, and after `close()`. The instances run
 * here, and count sockets and unanswered requests on the server side. The test also checks
 * that the faults really happened, so that it fails if injection silently stops.
 *
 * `TELESCOPE_LEAK_CALLS` overrides the number of calls (e.g. 500000 for a longer local run);
 * `TELESCOPE_HARDENING_VERBOSE=1` prints the driver's measurements (printed anyway on failure).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFailed, onTestFinished } from 'vitest';
import { waitFor } from '../helpers/assert.js';
import { seededRandom } from '../helpers/random.js';
import { closedPort, listenOnLoopback } from '../helpers/server.js';
import type { Snapshot } from './leak-driver.js';

const here = dirname(fileURLToPath(import.meta.url));
const repositoryRoot = join(here, '..', '..');
const MiB = 1024 * 1024;

const calls = Number(process.env.TELESCOPE_LEAK_CALLS ?? 50_000);
const concurrency = 64;
const attemptTimeoutMs = 60;
/** The whole run normally takes 15–30 s on 2 cores; the child is killed after this. */
const driverTimeoutMs = Math.max(100_000, calls * 2);

// --- the faulty instances ----------------------------------------------------------------------

const faultWeights = {
  ok: 0.7,
  /** Answered after 15–45 ms: within the attempt timeout, but late enough to be hedged. */
  slow: 0.09,
  'status-503': 0.06,
  /** The socket is destroyed (half of them with a TCP RST) before any byte of the response. */
  'reset-before-response': 0.03,
  /** Status line, headers and part of the body, then the socket is destroyed. */
  'reset-mid-response': 0.03,
  /** Never answered: the attempt times out and the client must drop the socket. */
  hang: 0.04,
  'invalid-json': 0.03,
  /** Valid JSON that fails the response schema. */
  'wrong-shape': 0.02,
} as const;
type Fault = keyof typeof faultWeights;
const faults = Object.keys(faultWeights) as Fault[];

interface FaultServer {
  readonly url: string;
  readonly counts: Record<Fault, number>;
  /** Requests whose answer is still due (hung or slow) and whose socket is still open. */
  pending(): number;
  openSockets(): number;
  close(): Promise<void>;
}

/**
 * A movie-service instance that draws one fault per request. Counts only (no request log), so
 * that 50,000 requests cost this process nothing that grows.
 */
async function startFaultServer(seed: number): Promise<FaultServer> {
  const random = seededRandom(seed);
  const counts = Object.fromEntries(faults.map((fault) => [fault, 0])) as Record<Fault, number>;
  const pending = new Set<ServerResponse>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  let resets = 0;

  const pick = (): Fault => {
    let draw = random();
    for (const fault of faults) {
      draw -= faultWeights[fault];
      if (draw < 0) return fault;
    }
    return 'ok';
  };
  const json = (response: ServerResponse, status: number, body: string) => {
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    response.end(body);
  };
  const answer = (request: IncomingMessage, response: ServerResponse) => {
    const id = Number(/^\/movies\/(\d+)/.exec(request.url ?? '')?.[1] ?? 0);
    json(response, 200, request.method === 'POST' ? '{"ok":true}' : JSON.stringify({ id, title: 'Heat' }));
  };

  const respond = (request: IncomingMessage, response: ServerResponse) => {
    const fault = pick();
    counts[fault]++;
    switch (fault) {
      case 'ok':
        return answer(request, response);
      case 'slow': {
        pending.add(response);
        response.once('close', () => pending.delete(response));
        const timer = setTimeout(
          () => {
            timers.delete(timer);
            if (!response.destroyed) answer(request, response);
          },
          15 + Math.floor(random() * 30),
        );
        timers.add(timer);
        return;
      }
      case 'status-503':
        return json(response, 503, '{"error":"unavailable"}');
      case 'reset-before-response':
        if (resets++ % 2 === 0) request.socket.resetAndDestroy();
        else request.socket.destroy();
        return;
      case 'reset-mid-response':
        response.writeHead(200, { 'content-type': 'application/json', 'content-length': '400' });
        response.write('{"id":1,"title":"He', () => request.socket.destroy());
        return;
      case 'hang':
        pending.add(response);
        response.once('close', () => pending.delete(response));
        return;
      case 'invalid-json':
        return json(response, 200, '{"id":1,"title":"He');
      case 'wrong-shape':
        return json(response, 200, '{"id":"one"}');
    }
  };

  const server = createServer((request, response) => {
    request.resume();
    request.once('end', () => respond(request, response));
  });
  const listening = await listenOnLoopback(server, timers);
  return {
    url: listening.url,
    counts,
    pending: () => pending.size,
    openSockets: listening.openSockets,
    close: listening.close,
  };
}

// --- the driver child ------------------------------------------------------------------------

interface DriverResult {
  phase: 'result';
  durationMs: number;
  callsSettled: number;
  outcomes: Record<string, Record<string, number>>;
  unexpected: number;
  unexpectedMessages: string[];
  events: {
    retriesByCode: Record<string, number>;
    hedges: number;
    budgetExhausted: number;
    ejections: Record<string, number>;
    returns: number;
    breakerTransitions: Record<string, number>;
    fallbacks: number;
    shed: number;
  };
  undiciOpened: number;
  peaks: {
    wheel: number;
    abortListeners: number;
    tcpSockets: number;
    undiciSockets: number;
    inFlight: number;
    heapUsed: number;
  };
  atSettle: { wheelAtSettle: number; listenersAtSettle: number };
  warnings: string[];
  before: Snapshot;
  baseline: Snapshot;
  afterCalls: Snapshot;
  afterClose: Snapshot;
  bulkhead: { mode: string; limit: number; inflight: number; queued: number; limits: { min: number; max: number } };
}

interface Driver {
  /** Resolves with the driver's next stdout line of that phase; rejects if it exits first. */
  next<T = Record<string, unknown>>(phase: string): Promise<T>;
  send(line: string): void;
  /** Exit code (or signal name). */
  readonly exited: Promise<number | string>;
  kill(): void;
}

/** Spawns the driver; killed (SIGKILL) after `timeoutMs`, or by `kill()`. */
function startDriver(args: string[], timeoutMs: number): Driver {
  const child: ChildProcess = spawn(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', join(here, 'leak-driver.ts'), ...args],
    { cwd: repositoryRoot, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-8000);
  });
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const timer = setTimeout(kill, timeoutMs);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(code ?? signal ?? 'unknown');
    });
  });
  const messages: Array<Record<string, unknown>> = [];
  let notify: (() => void) | undefined;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      messages.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      messages.push({ phase: 'garbage', line });
    }
    notify?.();
  });
  let exitedWith: number | string | undefined;
  void exited.then((code) => {
    exitedWith = code;
    notify?.();
  });
  return {
    async next<T>(phase: string): Promise<T> {
      for (;;) {
        const index = messages.findIndex((message) => message.phase === phase);
        if (index !== -1) return messages.splice(index, 1)[0] as T;
        if (exitedWith !== undefined) {
          throw new Error(`leak driver exited (${exitedWith}) before phase ${phase}; stderr:\n${stderr}`);
        }
        await new Promise<void>((resolve) => {
          notify = resolve;
        });
        notify = undefined;
      }
    },
    send(line) {
      child.stdin?.write(`${line}\n`);
    },
    exited,
    kill,
  };
}

const sum = (values: Iterable<number>) => [...values].reduce((total, value) => total + value, 0);

// --- the test --------------------------------------------------------------------------------

describe('no leaks under faults', () => {
  it(
    `${calls.toLocaleString('en-US')} calls with ~30% faults of every kind leave no heap, socket, timer or listener behind`,
    async () => {
      const servers = await Promise.all([11, 22, 33].map((seed) => startFaultServer(seed)));
      onTestFinished(async () => {
        await Promise.all(servers.map((server) => server.close()));
      });
      const refused = `http://127.0.0.1:${await closedPort()}`;
      const driver = startDriver(
        [
          '--instances',
          [...servers.map((server) => server.url), refused].join(','),
          '--calls',
          String(calls),
          '--concurrency',
          String(concurrency),
          '--attempt-timeout',
          String(attemptTimeoutMs),
          '--max-seconds',
          String(Math.ceil(driverTimeoutMs / 1000) + 5),
        ],
        driverTimeoutMs,
      );
      onTestFinished(driver.kill);

      // Idle, client still open: every hung or slow request was given up (its socket closed).
      await driver.next('idle');
      await waitFor('the server-side requests of hung attempts to close', () =>
        servers.every((server) => server.pending() === 0),
      );
      const idleServerSockets = sum(servers.map((server) => server.openSockets()));
      driver.send('continue');

      const result = await driver.next<DriverResult>('result');
      // The driver still lives: sockets closed now were closed by `client.close()`, not by exit.
      await waitFor('the server-side sockets to close after client.close()', () =>
        servers.every((server) => server.openSockets() === 0),
      );
      driver.send('exit');
      expect(await driver.exited).toBe(0);

      const { before, baseline, afterCalls, afterClose, peaks } = result;
      const outcomes: Record<string, number> = {};
      for (const byOutcome of Object.values(result.outcomes)) {
        for (const [outcome, count] of Object.entries(byOutcome)) outcomes[outcome] = (outcomes[outcome] ?? 0) + count;
      }
      const serverCounts = Object.fromEntries(
        faults.map((fault) => [fault, sum(servers.map((server) => server.counts[fault]))]),
      ) as Record<Fault, number>;
      const serverRequests = sum(Object.values(serverCounts));
      const report = () =>
        console.log(JSON.stringify({ ...result, outcomesTotal: outcomes, serverCounts, idleServerSockets }, null, 1));
      // The measurements, when asked for, and always when an assertion below fails.
      if (process.env.TELESCOPE_HARDENING_VERBOSE) report();
      else onTestFailed(report);

      // Every call settled, each with a TelescopeError or an answer, and nothing warned.
      expect(result.callsSettled).toBe(calls);
      expect(result.unexpected, result.unexpectedMessages.join('\n')).toBe(0);
      expect(result.warnings).toEqual([]);

      // The faults really happened: on the server side, every kind…
      for (const fault of faults) expect(serverCounts[fault], fault).toBeGreaterThan(0);
      const faultShare = 1 - serverCounts.ok / serverRequests;
      expect(faultShare).toBeGreaterThan(0.2);
      expect(faultShare).toBeLessThan(0.4);
      // …and on the client side: refused connections (retried, and the instance ejected),
      // hung attempts timed out, resets, 503s, bad bodies, caller aborts, spent deadlines.
      expect(result.events.retriesByCode.CONNECT_FAILED ?? 0).toBeGreaterThan(0);
      expect(result.events.ejections[refused] ?? 0).toBeGreaterThan(1);
      expect(result.events.returns).toBeGreaterThan(0);
      expect(result.events.retriesByCode.ATTEMPT_TIMEOUT ?? 0).toBeGreaterThan(0);
      expect(result.events.retriesByCode.CONNECTION_RESET ?? 0).toBeGreaterThan(0);
      expect(result.events.retriesByCode.HTTP_STATUS ?? 0).toBeGreaterThan(0);
      expect(result.events.hedges).toBeGreaterThan(0);
      expect(outcomes.INVALID_RESPONSE ?? 0).toBeGreaterThan(0);
      expect(outcomes.HTTP_STATUS ?? 0).toBeGreaterThan(0);
      expect(outcomes.CONNECTION_RESET ?? 0).toBeGreaterThan(0);
      expect(result.outcomes.abort?.ABORTED ?? 0).toBeGreaterThan(0);
      expect(result.outcomes['pre-aborted']?.ABORTED ?? 0).toBeGreaterThan(0);
      expect(result.outcomes.deadline?.DEADLINE_EXCEEDED ?? 0).toBeGreaterThan(0);
      expect(outcomes.fallback ?? 0).toBeGreaterThan(0);
      // The circuits may open for a moment, but the calls must meet the faults, not fail fast.
      expect(outcomes.CIRCUIT_OPEN ?? 0).toBeLessThan(0.2 * calls);
      // Sensible overall: most calls succeed, a real share fails.
      const failed = calls - (outcomes.ok ?? 0) - (outcomes.fallback ?? 0);
      expect(failed / calls).toBeGreaterThan(0.05);
      expect(failed / calls).toBeLessThan(0.5);
      expect(outcomes.ok ?? 0).toBeGreaterThan(calls / 2);

      // While the calls ran: bounded by the calls in flight, not by the calls made.
      expect(peaks.inFlight).toBeLessThanOrEqual(2 * concurrency);
      // Per call at most: an attempt and its hedge, the hedge timer, the fallback's race.
      expect(peaks.wheel).toBeLessThanOrEqual(4 * concurrency);
      // Per call carrying the shared signal: one listener per attempt in flight (hedge + attempt).
      expect(peaks.abortListeners).toBeLessThanOrEqual(2 * concurrency);

      // Idle after the calls: nothing pending anywhere, heap back near the baseline.
      expect(result.atSettle.listenersAtSettle).toBe(0);
      // The adaptive limit moved with the faults, and no call holds a slot or waits after the run.
      expect(result.bulkhead).toMatchObject({ mode: 'gradient2', inflight: 0, queued: 0 });
      expect(result.bulkhead.limits.max).toBeGreaterThan(result.bulkhead.limits.min);
      expect(afterCalls.wheel).toBe(0);
      expect(afterCalls.abortListeners).toBe(0);
      expect(afterCalls.resources.Timeout ?? 0).toBeLessThanOrEqual(baseline.resources.Timeout ?? 0);
      // Idle keep-alive sockets are unref'd: no busy socket is left.
      expect(afterCalls.resources.TCPSocketWrap ?? 0).toBeLessThanOrEqual(before.resources.TCPSocketWrap ?? 0);
      // At most a few idle keep-alive connections per instance remain (undici closes them after 4 s).
      expect(idleServerSockets).toBeLessThanOrEqual(3 * 2 * concurrency);
      expect(afterCalls.heapUsed).toBeLessThan(baseline.heapUsed + 8 * MiB);

      // After close(): every socket, handle and timer the client made is gone.
      expect(afterClose.undiciSockets).toBe(0);
      expect(afterClose.wheel).toBe(0);
      expect(afterClose.abortListeners).toBe(0);
      if (before.socketFds !== null) expect(afterClose.socketFds).toBeLessThanOrEqual(before.socketFds);
      for (const [kind, count] of Object.entries(afterClose.resources)) {
        expect(count, `active ${kind} after close() vs before the client existed`).toBeLessThanOrEqual(
          before.resources[kind] ?? 0,
        );
      }
      expect(afterClose.heapUsed).toBeLessThan(baseline.heapUsed + 8 * MiB);
    },
    driverTimeoutMs + 20_000,
  );
});
