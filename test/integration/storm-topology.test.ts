/**
 * Storm-lab topologies, run: the chain lab as a topology gives the chain lab's numbers; the
 * shared-dependency graph shows naive clients multiplying the dependency's load when it
 * slows and telescope's settings keeping it within 1.1× of healthy; call plans (sequence,
 * parallel, times) and faults act as the file says; the command line refuses bad input
 * naming the field before anything starts, and an interrupted real run stops every process.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  type BuiltInScenario,
  builtInScenario,
  checkTopology,
  type ResolvedTopology,
  type StormTopology,
  simulateTopology,
  topologyFromFile,
  topologyFromScenario,
} from '../../src/storm/index.js';
import { simulateStorm } from '../../src/storm/sim/index.js';
import { processAlive, stormTierPids } from '../helpers/process-resources.js';

const root = join(import.meta.dirname, '..', '..');

/** The chain lab's scenario, run as a topology: every number the same as simulateStorm's. */
async function expectSameNumbersAsChain(name: BuiltInScenario, strategy: string): Promise<void> {
  const scenario = builtInScenario(name, 8);
  const chain = await simulateStorm({ scenario, strategy, rate: 50, durationS: 8, drainS: 6 });
  const graph = await simulateTopology({
    topology: checkTopology(topologyFromScenario(scenario, { rate: 50, durationS: 8, drainS: 6 })),
    strategy,
  });
  expect(graph.sent).toBe(chain.sent);
  expect(graph.successRate).toBe(chain.successRate);
  expect(graph.fallbackRate).toBe(chain.fallbackRate);
  expect(graph.latency).toEqual(chain.latency);
  expect(graph.amplification).toBe(chain.amplification);
  expect(graph.services.map((service) => service.received)).toEqual([
    chain.received.edge,
    chain.received.middle,
    chain.received.backend,
  ]);
  expect(graph.services.map((service) => service.wasted)).toEqual([
    chain.wasted.edge,
    chain.wasted.middle,
    chain.wasted.backend,
  ]);
  // The backend is where the storm starts.
  expect(graph.spread[0]?.service).toBe('backend');
}

describe('storm topology, simulated: the chain lab is a topology', () => {
  it.each([
    ['hang-tier', 'naive'],
    ['hang-tier', 'telescope'],
    ['outage-recover', 'telescope'],
    ['metastable', 'naive'],
    ['flaky-one', 'telescope'],
    ['slow-one', 'telescope'],
  ] as const)('%s, %s: the same numbers as simulateStorm', async (name, strategy) => {
    await expectSameNumbersAsChain(name, strategy);
  });

  it.each(['hang-tier', 'outage-recover'] as const)(
    '%s, telescope without the adaptive tiers (TELESCOPE_STORM_ADAPTIVE=0): the same numbers too',
    async (name) => {
      process.env.TELESCOPE_STORM_ADAPTIVE = '0';
      try {
        await expectSameNumbersAsChain(name, 'telescope');
      } finally {
        delete process.env.TELESCOPE_STORM_ADAPTIVE;
      }
    },
  );
});

describe('storm topology, simulated: a shared dependency slows (examples/storm-topologies/e-commerce.json)', () => {
  // The example at small scale: 14 s of load, the config store +1.5 s from 4 s to 10 s.
  const topology = (): ResolvedTopology => {
    const full = topologyFromFile(join(root, 'examples', 'storm-topologies', 'e-commerce.json'));
    return {
      ...full,
      durationS: 14,
      drainS: 6,
      faults: [
        { atS: 4, service: 'config', fault: 'latency', addedMs: 1500 },
        { atS: 10, service: 'config', fault: 'none' },
      ],
    };
  };

  it("naive: the config store's load multiplies; telescope: it stays ≤ 1.1× its healthy load", async () => {
    const naive = await simulateTopology({ topology: topology(), strategy: 'naive' });
    const telescope = await simulateTopology({ topology: topology(), strategy: 'telescope' });
    const config = (result: typeof naive) => result.services.find((service) => service.name === 'config');
    expect(config(naive)?.healthyLoad).toBe(300);
    expect(config(naive)?.loadFactor).toBeGreaterThanOrEqual(3);
    expect(config(telescope)?.healthyLoad).toBe(300);
    expect(config(telescope)?.loadFactor).toBeLessThanOrEqual(1.1);
    // The storm starts at the config store and reaches its callers.
    expect(naive.spread[0]?.service).toBe('config');
    expect(naive.spread.map((step) => step.service)).toContain('catalog');
    expect(telescope.successRate).toBeGreaterThan(naive.successRate);
    expect(telescope.latency.p99Ms).toBeLessThan(naive.latency.p99Ms);
    // Every call to the config store is an edge of the graph with its amplification.
    const toConfig = naive.calls.filter((edge) => edge.to === 'config');
    expect(toConfig.map((edge) => edge.from).sort()).toEqual(['cart', 'catalog', 'recommendations']);
    for (const edge of toConfig) expect(edge.amplification).toBeGreaterThan(1.5);
    expect(config(telescope)?.recoveryS).toBeDefined();
  }, 60_000);
});

describe('storm topology, simulated: calls and faults as the file says', () => {
  const base = (services: StormTopology['services'], faults: StormTopology['faults'] = []): ResolvedTopology =>
    checkTopology({ name: 't', services, load: [{ atS: 0, rate: 50 }], durationS: 4, drainS: 3, faults });

  it('times and modes: a call made 3 times costs 3 requests, in sequence or in parallel, and parallel is faster', async () => {
    const sequence = await simulateTopology({
      topology: base({
        front: { instances: 1, calls: [{ service: 'store', times: 3 }] },
        store: { instances: 2, latencyMs: 20 },
      }),
      strategy: 'telescope',
    });
    const parallel = await simulateTopology({
      topology: base({
        front: { instances: 1, calls: [{ service: 'store', times: 3, mode: 'parallel' }] },
        store: { instances: 2, latencyMs: 20 },
      }),
      strategy: 'telescope',
    });
    for (const result of [sequence, parallel]) {
      expect(result.successRate).toBe(1);
      expect(result.services[1]?.received).toBe(3 * result.sent);
      expect(result.calls[0]).toMatchObject({
        from: 'front',
        to: 'store',
        times: 3,
        callsPerRequest: 3,
        amplification: 1,
      });
    }
    expect(sequence.latency.p50Ms).toBeGreaterThanOrEqual(60);
    expect(parallel.latency.p50Ms).toBeLessThan(30);
  });

  it('a failure in a sequence stops the calls after it; errors and a capacity drop act on the instances named', async () => {
    const result = await simulateTopology({
      topology: base(
        {
          front: { instances: 1, calls: [{ service: 'auth' }, { service: 'store' }], capacity: { maxConcurrent: 100 } },
          auth: { instances: 1 },
          store: { instances: 2 },
        },
        [
          { atS: 1, service: 'auth', fault: 'errors', errorRate: 1 },
          { atS: 2, service: 'auth', fault: 'none' },
        ],
      ),
      strategy: 'naive',
    });
    const auth = result.services.find((service) => service.name === 'auth');
    const store = result.services.find((service) => service.name === 'store');
    // Naive tries auth 3 times in the failing second; the store is not called for those requests.
    expect(auth?.load[1]).toBe(150);
    expect(store?.load[1]).toBe(0);
    expect(auth?.success[1]).toBe(0);
    expect(result.successRate).toBeCloseTo(0.75, 2);
    expect(auth?.stormAtS).toBe(1);
    expect(auth?.recoveryS).toBe(0);

    const dropped = await simulateTopology({
      topology: base(
        {
          front: { instances: 1, calls: [{ service: 'store' }] },
          store: { instances: 1, latencyMs: 100, capacity: { maxConcurrent: 10, maxQueue: 0 } },
        },
        [{ atS: 1, service: 'store', instances: [0], fault: 'capacity', capacityFraction: 0.2 }],
      ),
      strategy: 'naive',
    });
    // 50 req/s × 100 ms = 5 at once: fits 10, not 2.
    expect(dropped.services[1]?.shed).toBeGreaterThan(0);
    expect(dropped.timeline[0]?.edgeSuccessRate).toBe(1);
    expect(dropped.timeline[2]?.edgeSuccessRate).toBeLessThan(0.9);
  });

  it('the same seed gives the same result', async () => {
    const topology = topologyFromFile(join(root, 'examples', 'storm-topologies', 'e-commerce.json'));
    const short = { ...topology, durationS: 3, drainS: 2, faults: [] };
    const strip = (result: Awaited<ReturnType<typeof simulateTopology>>) => ({
      ...result,
      simulation: { ...result.simulation, wallS: 0, peakRssMB: 0 },
    });
    const first = await simulateTopology({ topology: short, strategy: 'telescope', seed: 5 });
    const second = await simulateTopology({ topology: short, strategy: 'telescope', seed: 5 });
    expect(strip(second)).toEqual(strip(first));
  });
});

/** Runs the command line; resolves with its exit code and output. */
function cli(args: string[], onStart?: (child: ChildProcess) => void) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/storm/cli.ts', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    onStart?.(child);
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('storm topology: command line', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'storm-topology-'));
  const write = (name: string, topology: unknown) => {
    const path = join(scratch, name);
    writeFileSync(path, JSON.stringify(topology));
    return path;
  };
  const small: StormTopology = {
    name: 'small',
    services: { front: { instances: 1, calls: [{ service: 'back' }] }, back: { instances: 2 } },
    load: [{ atS: 0, rate: 20 }],
    durationS: 20,
  };

  it.each([
    [
      'a cycle',
      {
        ...small,
        services: {
          front: { instances: 1, calls: [{ service: 'back' }] },
          back: { instances: 1, calls: [{ service: 'front' }] },
        },
      },
      'services.back.calls[0].service must be a call that closes no cycle',
    ],
    [
      'a negative capacity',
      { ...small, services: { ...small.services, back: { instances: 2, capacity: { maxQueue: -3 } } } },
      'services.back.capacity.maxQueue must be an integer in [0, 1000000], got -3',
    ],
    [
      'a fault on an instance that does not exist',
      { ...small, faults: [{ atS: 1, service: 'back', instances: [5], fault: 'hang' }] },
      'faults[0].instances[0] must be an integer in [0, 1], got 5',
    ],
    [
      'client settings the client refuses',
      {
        ...small,
        services: {
          ...small.services,
          front: { instances: 1, calls: [{ service: 'back', client: { timeoutMs: -1 } }] },
        },
      },
      'services.front.calls[0].client: timeoutMs must be',
    ],
    [
      'more processes than the machine allows',
      { ...small, services: { ...small.services, back: { instances: 5000 } } },
      'services.back.instances: the topology needs 5001 processes in real mode',
    ],
  ])(
    '%s: exit code 2 naming the field, nothing started',
    async (_case, topology, message) => {
      const path = write('bad.json', topology);
      const { code, stderr } = await cli(['--topology', path, '--strategies', 'telescope']);
      expect(code).toBe(2);
      expect(stderr).toContain(message);
      expect(stderr).not.toContain('sent');
    },
    20_000,
  );

  it('--max-processes lowers the limit; --simulate has none', async () => {
    const path = write('five.json', { ...small, services: { ...small.services, back: { instances: 4 } } });
    const refused = await cli(['--topology', path, '--max-processes', '3']);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('more than the 3 this machine runs');
    const simulated = await cli([
      '--topology',
      path,
      '--simulate',
      '--strategies',
      'telescope',
      '--duration',
      '2',
      '--json',
    ]);
    expect(simulated.code).toBe(0);
    const report = JSON.parse(simulated.stdout) as {
      mode: string;
      results: Array<{ sent: number; services: unknown[] }>;
    };
    expect(report.mode).toBe('simulated');
    expect(report.results[0]?.sent).toBe(40);
    expect(report.results[0]?.services).toHaveLength(2);
  }, 30_000);

  it('a shipped topology by name, with an HTML report that draws the graph', async () => {
    const out = join(scratch, 'report');
    const { code, stderr } = await cli([
      '--topology',
      'hang-one',
      '--simulate',
      '--strategies',
      'naive,telescope',
      '--duration',
      '4',
      '--rate',
      '40',
      '--out',
      out,
    ]);
    expect(code, stderr).toBe(0);
    const html = readFileSync(join(out, 'hang-one.html'), 'utf8');
    expect(html).toContain('<svg');
    for (const service of ['edge ×1', 'middle ×3', 'backend ×3']) expect(html).toContain(service);
    expect(html).toContain('polyline');
    const unknown = await cli(['--topology', 'no-such-topology', '--simulate']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('no shipped topology "no-such-topology" (shipped: ');
    expect(unknown.stderr).toMatch(/shipped: [^)]*hang-tier/);
  }, 30_000);

  it('real mode: an interrupted run stops every process it started', async () => {
    const path = write('real.json', small);
    let child: ChildProcess | undefined;
    const done = cli(['--topology', path, '--strategies', 'naive'], (started) => {
      child = started;
    });
    let stderr = '';
    child?.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const deadline = Date.now() + 25_000;
    // The load is flowing once the first progress line is out (every process is up).
    while (!/naive: \d+s sent/.test(stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(stderr).toMatch(/naive: \d+s sent/);
    const pids = stormTierPids(child?.pid as number);
    expect(pids).toHaveLength(3);
    child?.kill('SIGINT');
    const { code } = await done;
    expect(code).toBe(130);
    await new Promise((r) => setTimeout(r, 500));
    expect(pids.filter(processAlive)).toEqual([]);
  }, 40_000);

  it('cleans up its scratch files', () => {
    rmSync(scratch, { recursive: true, force: true });
  });
});
