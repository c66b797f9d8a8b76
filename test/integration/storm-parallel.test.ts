/**
 * The storm simulator on several threads (`workers`) and with network time (`networkMs`):
 * a run spread over worker threads gives the one-thread run's numbers at the same network
 * time, whatever crosses between them (requests, answers, closes, resets of an instance
 * going down, refusals); the same seed and workers give the same numbers; network time adds
 * its hops to the latency; bad options are refused before anything starts, and no thread
 * outlives a run.
 */
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import {
  builtInScenario,
  checkTopology,
  type ResolvedTopology,
  type StormTopology,
  simulateTopology,
  type TopologyRunResult,
  topologyFromScenario,
} from '../../src/storm/index.js';
import { partitionServices } from '../../src/storm/sim/parallel.js';
import { activeResources } from '../helpers/process-resources.js';

const root = join(import.meta.dirname, '..', '..');

/** edge → a → b → c → backend, every service with its own instances; `faults` as given. */
function chain(faults: StormTopology['faults'] = [], rate = 200): ResolvedTopology {
  const names = ['edge', 'a', 'b', 'c', 'backend'];
  const services: StormTopology['services'] = {};
  for (const [index, name] of names.entries()) {
    const next = names[index + 1];
    services[name] = { instances: 4, ...(next === undefined ? {} : { calls: [{ service: next }] }) };
  }
  return checkTopology({
    name: 'five',
    services,
    load: [{ atS: 0, rate }],
    durationS: 4,
    drainS: 4,
    faults,
  });
}

/** The numbers of a run, without what depends on the machine or the thread count. */
function numbers(result: TopologyRunResult): unknown {
  return {
    sent: result.sent,
    answered: result.answered,
    successRate: result.successRate,
    fallbackRate: result.fallbackRate,
    latency: result.latency,
    amplification: result.amplification,
    timeline: result.timeline,
    services: result.services,
    calls: result.calls,
    spread: result.spread,
  };
}

/**
 * Nothing held open beyond what was before: workers, ports, timers, handles. File-system
 * requests are the test runner's own (the simulator touches no file) and come and go.
 */
function expectNoMoreThan(before: Record<string, number>): void {
  for (const [kind, count] of Object.entries(activeResources())) {
    if (kind.startsWith('FSReq') || kind === 'CloseReq') continue;
    expect(count, kind).toBeLessThanOrEqual(before[kind] ?? 0);
  }
}

/** The process's OS threads (Linux). */
function threads(): number {
  return readdirSync('/proc/self/task').length;
}

/**
 * Threads now, with libuv's thread pool started (a worker's first file access starts it for the
 * whole process, and it stays: not a thread the run leaves behind).
 */
async function threadsBefore(): Promise<number> {
  await stat(import.meta.filename);
  return threads();
}

/** Waits (up to 5 s) for ended worker threads to leave the process, then checks none is left. */
async function expectThreadsBackTo(before: number): Promise<void> {
  for (let waited = 0; threads() > before && waited < 5000; waited += 50) await sleep(50);
  expect(threads()).toBeLessThanOrEqual(before);
}

describe('storm simulation on worker threads', () => {
  it('splits the services into runs of about equal work, the entry on the calling thread', () => {
    // 5-tier chain: 4 callers (1 + 1.5 each) and the backend (1).
    expect(partitionServices(chain(), 2)).toEqual([0, 0, 1, 1, 1]);
    expect(partitionServices(chain(), 5)).toEqual([0, 1, 2, 3, 4]);
    // The store, called 6 times per entry request, weighs about what its two callers do.
    const fanOut = checkTopology({
      name: 'fan-out',
      services: {
        edge: { instances: 2, calls: [{ service: 'mid', times: 3 }] },
        mid: { instances: 2, calls: [{ service: 'store', times: 2 }] },
        store: { instances: 2 },
      },
      load: [{ atS: 0, rate: 10 }],
      durationS: 1,
    });
    expect(partitionServices(fanOut, 2)).toEqual([0, 0, 1]);
  });

  it.each([
    ['telescope', 'hang', 2],
    ['telescope', 'down', 3],
    ['naive', 'down', 2],
  ] as const)(
    '%s, %s on a follower: the numbers of one thread at the same network time (%i workers)',
    async (strategy, fault, workers) => {
      // The fault hits a service another thread simulates: resets, refusals, closes and answers cross.
      const topology = chain([
        { atS: 1, service: 'c', fault, instances: [0, 1] },
        { atS: 2.5, service: 'c', fault: 'none', instances: [0, 1] },
      ]);
      const before = await threadsBefore();
      const one = await simulateTopology({ topology, strategy, networkMs: 1 });
      const many = await simulateTopology({ topology, strategy, workers });
      expect(many.simulation?.workers).toBe(workers);
      // Every thread simulated its share: a run on one thread would report one count.
      const perWorker = many.simulation?.eventsPerWorker ?? [];
      expect(perWorker).toHaveLength(workers);
      const events = many.simulation?.events ?? 0;
      for (const count of perWorker) expect(count).toBeGreaterThan(events * 0.1);
      expect(perWorker.reduce((sum, count) => sum + count, 0)).toBe(events);
      expect(one.simulation?.eventsPerWorker).toBeUndefined();
      expect(many.simulation?.networkMs).toBe(1);
      expect(one.simulation?.networkMs).toBe(1);
      // The fault did something: failures reached the edge or were retried around.
      const toC = one.calls.find((call) => call.to === 'c');
      expect(one.successRate < 1 || (toC?.amplification ?? 0) > 1).toBe(true);
      if (strategy === 'telescope' && workers === 2) {
        expect(numbers(many)).toEqual(numbers(one));
      } else if (strategy === 'telescope') {
        // Events at the same instant may run in another order on three threads: a latency
        // sample can move within the instant's grain, the counts cannot.
        const latencies = (result: TopologyRunResult) => [
          result.latency.p50Ms,
          result.latency.p99Ms,
          ...result.timeline.map((second) => second.edgeP99Ms),
        ];
        const counts = (result: TopologyRunResult) => ({
          ...(numbers(result) as object),
          latency: undefined,
          timeline: result.timeline.map((second) => ({ ...second, edgeP99Ms: undefined })),
        });
        expect(counts(many)).toEqual(counts(one));
        for (const [index, ms] of latencies(many).entries())
          expect(Math.abs(ms - (latencies(one)[index] as number))).toBeLessThanOrEqual(1);
      } else {
        // Simultaneous events are ordered by arrival at each thread, so a storm's details differ.
        expect(many.sent).toBe(one.sent);
        expect(Math.abs(many.successRate - one.successRate)).toBeLessThan(0.02);
        expect(many.amplification).toBeGreaterThan(one.amplification * 0.9);
        expect(many.amplification).toBeLessThan(one.amplification * 1.1);
      }
      // Every worker thread has ended.
      await expectThreadsBackTo(before);
    },
    60_000,
  );

  it('gives the same numbers for the same seed and workers', async () => {
    const scenario = builtInScenario('hang-tier', 6);
    const topology = checkTopology(topologyFromScenario(scenario, { rate: 100, durationS: 6, drainS: 4 }));
    const first = await simulateTopology({ topology, strategy: 'naive', seed: 3, workers: 2 });
    const second = await simulateTopology({ topology, strategy: 'naive', seed: 3, workers: 2 });
    expect(numbers(second)).toEqual(numbers(first));
    expect(second.simulation?.events).toBe(first.simulation?.events);
  }, 60_000);

  it('adds networkMs to every hop, each way', async () => {
    const topology = chain();
    const instant = await simulateTopology({ topology, strategy: 'telescope' });
    const slow = await simulateTopology({ topology, strategy: 'telescope', networkMs: 2 });
    expect(instant.simulation?.networkMs).toBeUndefined();
    expect(slow.successRate).toBe(1);
    // The edge measures from arrival to answer: 4 hops below it, there and back, 2 ms each.
    expect(slow.latency.p50Ms - instant.latency.p50Ms).toBeCloseTo(16, 0);
    // Below a millisecond too (events at exact times, not on a timer's 1 ms floor).
    const fast = await simulateTopology({ topology, strategy: 'telescope', networkMs: 0.25 });
    expect(fast.latency.p50Ms - instant.latency.p50Ms).toBeCloseTo(2, 0);
  }, 60_000);

  it('refuses bad options before any thread starts', async () => {
    const topology = chain();
    const before = await threadsBefore();
    const resources = activeResources();
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ workers: 0 }, /workers must be an integer from 1 to 64, got 0/],
      [{ workers: 1.5 }, /workers must be an integer from 1 to 64, got 1.5/],
      [{ workers: 65 }, /workers must be an integer from 1 to 64, got 65/],
      [{ workers: 6 }, /workers \(6\) must not exceed the topology's services \(5\)/],
      [{ networkMs: -1 }, /networkMs must be a number of milliseconds from 0 to 1000, got -1/],
      [{ networkMs: Number.NaN }, /networkMs must be a number of milliseconds from 0 to 1000, got NaN/],
      [{ workers: 2, networkMs: 0.5 }, /workers > 1 needs networkMs ≥ grainMs > 0/],
      [{ workers: 2, grainMs: 0 }, /workers > 1 needs networkMs ≥ grainMs > 0/],
      [{ workers: 2, strategy: 'nope' }, /nope/],
    ];
    for (const [options, message] of cases) {
      await expect(simulateTopology({ topology, strategy: 'telescope', ...options })).rejects.toThrow(message);
    }
    expect(threads()).toBe(before);
    expectNoMoreThan(resources);
  });

  it("a worker thread's failure fails the run with its error, and leaves no thread behind", async () => {
    // The bad client settings belong to a call only the third thread builds a client for.
    const topology = checkTopology({
      name: 'bad-client',
      services: {
        edge: { instances: 1, calls: [{ service: 'mid' }] },
        mid: { instances: 1, calls: [{ service: 'db', client: { attemptTimeoutMs: -5 } }] },
        db: { instances: 1 },
      },
      load: [{ atS: 0, rate: 10 }],
      durationS: 2,
    });
    expect(partitionServices(topology, 3)).toEqual([0, 1, 2]);
    const before = await threadsBefore();
    const resources = activeResources();
    await expect(simulateTopology({ topology, strategy: 'telescope', workers: 3 })).rejects.toThrow(
      'attemptTimeoutMs must be a positive number, got -5',
    );
    await expectThreadsBackTo(before);
    expectNoMoreThan(resources);
  }, 60_000);

  it('command line: --workers and --network-ms belong to --topology with --simulate', async () => {
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/storm/cli.ts'), ...args], {
          cwd: root,
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (chunk) => {
          stderr += chunk;
        });
        child.on('exit', (code) => resolve({ code, stderr }));
      });
    const noSimulate = await run(['--topology', 'hang-one', '--workers', '2']);
    expect(noSimulate.code).toBe(2);
    expect(noSimulate.stderr).toContain('--workers applies to --simulate only');
    const chainLab = await run(['--scenario', 'hang-one', '--simulate', '--network-ms', '1']);
    expect(chainLab.code).toBe(2);
    expect(chainLab.stderr).toContain('--network-ms applies to --topology with --simulate only');
    const tooMany = await run(['--topology', 'hang-one', '--simulate', '--workers', '9']);
    expect(tooMany.code).toBe(2);
    expect(tooMany.stderr).toContain("workers (9) must not exceed the topology's services (3)");
    const short = await run([
      '--topology',
      'hang-one',
      '--simulate',
      '--workers',
      '2',
      '--network-ms',
      '0.5',
      '--strategies',
      'telescope',
    ]);
    expect(short.code).toBe(2);
    expect(short.stderr).toContain('workers > 1 needs networkMs ≥ grainMs > 0');
  }, 60_000);
});
