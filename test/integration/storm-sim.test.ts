/**
 * The retry-storm lab in simulation mode: the same scenarios in virtual time, with the
 * library's real client code on simulated instances. The canonical storm collapses naive and
 * not telescope, exactly as on real processes; the same seed gives the same numbers; the
 * command line refuses bad simulation options. (Agreement with real mode is checked in
 * storm.test.ts, next to the real runs it compares with.)
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { Deadline, sleep } from '../../src/index.js';
import { builtInScenario, type Scenario } from '../../src/storm/index.js';
import { type SimRunResult, simulateStorm, VirtualClock } from '../../src/storm/sim/index.js';

/** A result without what depends on the machine (wall time, memory). */
function machineFree(result: SimRunResult): unknown {
  const { wallS: _wall, peakRssMB: _rss, ...simulation } = result.simulation;
  return { ...result, simulation };
}

describe('storm simulation: virtual clock', () => {
  it("drives the library's timer wheel, deadlines and promise continuations in virtual time", async () => {
    const clock = new VirtualClock();
    const seen: string[] = [];
    // sleep() and Deadline.signal both go through wheelOf(clock); continuations chain promises.
    void sleep(clock, 100)
      .then(() => Promise.resolve())
      .then(() => {
        seen.push(`slept ${clock.now()}`);
        return sleep(clock, 50);
      })
      .then(() => seen.push(`slept again ${clock.now()}`));
    Deadline.after(120, clock).signal.addEventListener('abort', () => seen.push(`deadline ${clock.now()}`));
    clock.setTimeout(() => seen.push(`timer ${clock.now()}`), 0.2);
    await clock.advanceTo(99);
    expect(seen).toEqual(['timer 1']);
    await clock.advanceTo(1000);
    expect(seen).toEqual(['timer 1', 'slept 100', 'deadline 120', 'slept again 150']);
    expect(clock.now()).toBe(1000);
  });
});

describe('storm simulation: canonical scenario (backend tier hangs), small scale', () => {
  const durationS = 6;
  const scenario = builtInScenario('hang-tier', durationS);

  it('naive: amplification ≥ 5 and the edge answers after ≥ 4 s', async () => {
    const result = await simulateStorm({ scenario, strategy: 'naive', rate: 40, durationS, drainS: 7 });
    expect(result.sent).toBe(240);
    expect(result.amplification).toBeGreaterThanOrEqual(5);
    expect(result.latency.p99Ms).toBeGreaterThanOrEqual(4000);
    // The middle kept working for callers that had given up.
    expect(result.wasted.middle).toBeGreaterThan(0);
    expect(result.simulation.virtualS).toBeGreaterThan(durationS);
  });

  it('telescope: amplification ≤ 2 and the edge answers within 2.5 s', async () => {
    const result = await simulateStorm({ scenario, strategy: 'telescope', rate: 40, durationS, drainS: 5 });
    expect(result.sent).toBe(240);
    expect(result.answered).toBe(240);
    expect(result.amplification).toBeLessThanOrEqual(2);
    expect(result.latency.p99Ms).toBeLessThanOrEqual(2500);
    expect(result.fallbackRate).toBeGreaterThan(0.5);
    expect(result.wasted.middle).toBeLessThanOrEqual(result.received.middle * 0.05);
  });

  it('telescope, one backend instance hangs: ≥ 99% success (the retry goes to another instance)', async () => {
    const result = await simulateStorm({
      scenario: builtInScenario('hang-one', durationS),
      strategy: 'telescope',
      rate: 40,
      durationS,
      drainS: 4,
    });
    expect(result.successRate).toBeGreaterThanOrEqual(0.99);
    expect(result.latency.p99Ms).toBeLessThan(1500);
    expect(result.amplification).toBeLessThanOrEqual(2);
  });
});

describe('storm simulation: beyond one machine', () => {
  it('5 tiers × 20 instances at 4000 req/s: naive storms, telescope stays ≤ 2×', async () => {
    // Naive: the middle tiers shed most of the storm (503), which caps what reaches the
    // backend; the storm shows in the middle tiers' load and in the edge's latency.
    const common = {
      scenario: builtInScenario('hang-tier', 4),
      rate: 4000,
      durationS: 4,
      drainS: 8,
      tiers: 5,
      instances: 20,
    };
    const naive = await simulateStorm({ ...common, strategy: 'naive' });
    const telescope = await simulateStorm({ ...common, strategy: 'telescope' });
    expect(telescope.simulation.tiers.map((tier) => tier.name)).toEqual([
      'edge',
      'middle-1',
      'middle-2',
      'middle-3',
      'backend',
    ]);
    expect(naive.received.middle / naive.sent).toBeGreaterThan(5);
    expect(naive.amplification).toBeGreaterThan(2 * telescope.amplification);
    expect(naive.latency.p99Ms).toBeGreaterThanOrEqual(4000);
    expect(telescope.received.middle / telescope.sent).toBeLessThanOrEqual(2);
    expect(telescope.amplification).toBeLessThanOrEqual(2);
    expect(telescope.latency.p99Ms).toBeLessThanOrEqual(3000);
    expect(telescope.answered).toBe(telescope.sent);
  }, 60_000);

  it('runs every built-in scenario; the outage recovers', async () => {
    for (const name of ['down-one', 'slow-tier'] as const) {
      const result = await simulateStorm({
        scenario: builtInScenario(name, 6),
        strategy: 'telescope',
        rate: 100,
        durationS: 6,
        drainS: 4,
      });
      expect(result.successRate, name).toBeGreaterThan(0.8);
    }
    const outage = await simulateStorm({
      scenario: builtInScenario('outage-recover', 20),
      strategy: 'telescope',
      rate: 100,
      durationS: 20,
      drainS: 4,
    });
    expect(outage.recoveryS).toBeDefined();
    expect(outage.timeline.at(-1)?.edgeSuccessRate).toBeGreaterThanOrEqual(0.99);
  }, 30_000);
});

describe('storm simulation: recovery (issue 14 numbers, default options)', () => {
  it('outage-recover: telescope is back within 2 s, sends the dead tier ≤ 1× the load and ≤ 2% as probes', async () => {
    const common = { scenario: builtInScenario('outage-recover', 20), rate: 200, durationS: 20, drainS: 4 };
    const telescope = await simulateStorm({ ...common, strategy: 'telescope' });
    expect(telescope.recoveryS).toBeDefined();
    expect(telescope.recoveryS).toBeLessThanOrEqual(2);
    expect(telescope.outage).toMatchObject({ tier: 'backend', startS: 4, endS: 14, offered: 2000 });
    expect(telescope.outage!.amplification).toBeLessThanOrEqual(1);
    expect(telescope.outage!.probeShare).toBeLessThanOrEqual(0.02);
    // Naive retries a dead tier 9×: the same measure, for contrast.
    const naive = await simulateStorm({ ...common, strategy: 'naive' });
    expect(naive.outage!.amplification).toBeGreaterThan(5);
  }, 30_000);

  it('metastable: telescope is back above 99% within 2 s of the trigger’s end; naive and p-retry are measured', async () => {
    const common = { scenario: builtInScenario('metastable', 12), rate: 100, durationS: 12, drainS: 4 };
    // The trigger: 2 s of added latency from 2.4 s to 5.4 s.
    expect(common.scenario.faults.map((step) => [step.atS, step.fault])).toEqual([
      [2.4, 'slow'],
      [5.4, 'none'],
    ]);
    const telescope = await simulateStorm({ ...common, strategy: 'telescope' });
    expect(telescope.recoveryS).toBeDefined();
    expect(telescope.recoveryS).toBeLessThanOrEqual(2);
    expect(telescope.timeline.slice(8).every((point) => point.edgeSuccessRate >= 0.99)).toBe(true);
    for (const strategy of ['naive', 'p-retry']) {
      const result = await simulateStorm({ ...common, strategy });
      // recoveryS is reported either way (undefined: never back within the run).
      expect(result.scenario).toBe('metastable');
      expect(result.outage?.tier).toBe('backend');
    }
  }, 30_000);
});

describe('storm simulation: determinism', () => {
  it('the same seed gives the same result; another seed may not', async () => {
    const options = {
      scenario: builtInScenario('hang-one', 6),
      strategy: 'telescope',
      rate: 200,
      durationS: 6,
      drainS: 4,
      tiers: 4,
      instances: 4,
    };
    const first = await simulateStorm({ ...options, seed: 7 });
    const second = await simulateStorm({ ...options, seed: 7 });
    expect(machineFree(second)).toEqual(machineFree(first));
    const naive = { ...options, strategy: 'naive', scenario: builtInScenario('hang-tier', 6) };
    expect(machineFree(await simulateStorm({ ...naive, seed: 3 }))).toEqual(
      machineFree(await simulateStorm({ ...naive, seed: 3 })),
    );
  });
});

describe('storm simulation: command line', () => {
  const run = (args: string[]) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const cli = spawn(process.execPath, ['--import', 'tsx', 'src/storm/cli.ts', ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      cli.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
      });
      cli.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      cli.once('exit', (code) => resolve({ code, stdout, stderr }));
    });

  it.each([
    [['--simulate', '--tiers', '1'], '--tiers must be an integer in [2, 12]'],
    [['--simulate', '--instances', '0'], '--instances must be an integer in [1, 100000]'],
    [['--simulate', '--rate=-5'], '--rate must be a number in (0, 10000000]'],
    [['--simulate', '--seed', 'x'], '--seed must be an integer'],
    [['--tiers', '5'], '--tiers applies to --simulate only'],
    [['--simulate', '--strategies', './mine.ts'], 'cannot simulate ./mine.ts'],
  ])('%j: exit code 2 and %s', async (args, message) => {
    const { code, stderr } = await run(args);
    expect(code).toBe(2);
    expect(stderr).toContain(message);
  });

  it('--simulate --json: the same report, marked simulated, with every tier', async () => {
    const { code, stdout } = await run([
      '--simulate',
      '--json',
      '--tiers',
      '4',
      '--instances',
      '2',
      '--rate',
      '100',
      '--duration',
      '2',
      '--drain',
      '3',
      '--strategies',
      'naive,telescope',
    ]);
    expect(code).toBe(0);
    const report = JSON.parse(stdout) as { mode: string; results: SimRunResult[] };
    expect(report.mode).toBe('simulated');
    expect(report.results.map((result) => result.strategy)).toEqual(['naive', 'telescope']);
    for (const result of report.results) {
      expect(result.sent).toBe(200);
      expect(result.simulation.tiers).toHaveLength(4);
      expect(result.timeline).toHaveLength(2);
    }
  });
});

describe('storm simulation: overload (0.5× → 3× the backend tier’s capacity and back)', () => {
  // 20 virtual seconds (about 2 s of wall time): the limits need a few seconds at 3× to settle.
  const durationS = 20;
  const scenario = builtInScenario('overload', durationS);

  it('telescope with adaptive tiers: goodput at 3× ≥ 90% of the measured capacity, p99 of successes ≤ 3× unloaded', async () => {
    const result = await simulateStorm({ scenario, strategy: 'telescope', durationS, drainS: 4 });
    const overload = result.overload;
    expect(overload).toBeDefined();
    // 3 instances × 2 slots × 1 / (50 ms + 0.5 ms of CPU): about 119 answers/s.
    expect(overload?.capacityPerS).toBeGreaterThan(100);
    expect(overload?.capacityPerS).toBeLessThan(125);
    expect(overload?.goodputRatio).toBeGreaterThanOrEqual(0.9);
    // The target: at most 3×. Measured 2.19–2.50× over seeds 1–5 (docs/overload.md).
    expect(overload?.p99Ratio).toBeLessThanOrEqual(3);
    // The load really went to 3×: the edge was sent about 3 × capacity per second at the peak.
    const peak = Math.max(...result.timeline.map((point) => point.edgeRequests));
    expect(peak).toBeGreaterThan(2.8 * (overload?.capacityPerS ?? 0));
    expect(result.timeline.every((point) => Number.isFinite(point.goodput))).toBe(true);
  });

  it('naive: the backend’s queue turns the overload into seconds of latency, and goodput collapses', async () => {
    const result = await simulateStorm({ scenario, strategy: 'naive', durationS, drainS: 4 });
    expect(result.overload?.goodputRatio).toBeLessThan(0.7);
    expect(result.overload?.p99Ratio).toBeGreaterThan(10);
  });
});

describe('storm simulation: one flaky or slow backend instance, small scale', () => {
  const durationS = 8;
  const common = { rate: 40, durationS, drainS: 4 };

  it('flaky-one (10% 503s on one instance): telescope steers away from it, fewer backend attempts than naive, all succeed', async () => {
    const scenario = builtInScenario('flaky-one', durationS);
    const naive = await simulateStorm({ ...common, scenario, strategy: 'naive' });
    const telescope = await simulateStorm({ ...common, scenario, strategy: 'telescope' });
    expect(naive.successRate).toBe(1);
    expect(telescope.successRate).toBe(1);
    // naive retries every 503 it meets; telescope meets fewer of them.
    expect(naive.amplification).toBeGreaterThan(1.01);
    expect(telescope.amplification).toBeLessThan(naive.amplification);
  });

  // At the 100 calls/s. Skipped for a while: the latency average started at 0 (reading
  // a tenth of the latency 1 s in) let the slow instance win picks again within a second or
  // two of each probe: 9-13 of the ~640 calls in the fault window went to it (p99 = naive's);
  // bias-corrected, 5-7 (seeds 1-5).
  it('slow-one (one instance 5× slower): telescope p99 under half of naive (p2c-ewma leaves the slow one alone)', async () => {
    const scenario = builtInScenario('slow-one', durationS);
    const options = { rate: 100, durationS, drainS: 4 };
    const naive = await simulateStorm({ ...options, scenario, strategy: 'naive' });
    const telescope = await simulateStorm({ ...options, scenario, strategy: 'telescope' });
    expect(telescope.successRate).toBe(1);
    expect(telescope.latency.p99Ms).toBeLessThan(naive.latency.p99Ms / 2);
  });

  it('the issue’s slow-one numbers, in virtual time: one of 3 backends at 50 ms, two at 10 ms, 100 calls/s: its share ≤ 1% (≤ 10% asked), p99 ≤ 1.5× the two-fast p99', async () => {
    const slowOne: Scenario = {
      name: 'slow-one',
      description: 'one backend instance answers 5× slower for the whole run',
      faults: [{ atS: 0, tier: 'backend', instances: [0], fault: 'slow', factor: 5 }],
    };
    const twoFast: Scenario = { name: 'two-fast', description: 'two healthy backend instances', faults: [] };
    const options = { strategy: 'telescope', rate: 100, durationS, drainS: 2, backendLatencyMs: 10 };
    const three = await simulateStorm({ ...options, scenario: slowOne });
    const baseline = await simulateStorm({ ...options, scenario: twoFast, instances: [1, 3, 2] });
    const backends = three.simulation.tiers.at(-1);
    const counts = backends?.receivedByInstance ?? [];
    expect(counts).toHaveLength(3);
    // Server-side counts: each of the 3 middle instances' clients probes the slow one once.
    const share = (counts[0] ?? 0) / (backends?.received ?? 1);
    expect(share).toBeGreaterThan(0);
    expect(share).toBeLessThanOrEqual(0.01);
    expect(three.successRate).toBe(1);
    expect(baseline.latency.p99Ms).toBeGreaterThan(10);
    expect(three.latency.p99Ms).toBeLessThanOrEqual(1.5 * baseline.latency.p99Ms);
  });
});
