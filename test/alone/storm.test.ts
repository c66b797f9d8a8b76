/**
 * The retry-storm lab at small scale, on real processes: the canonical scenario (the whole
 * backend tier hangs) collapses the naive configuration and not telescope's; one hanging
 * backend instance costs telescope nothing; every process the lab starts is stopped, also
 * when the lab itself is interrupted. Each real run is also simulated with the same
 * parameters (milliseconds of virtual time) and the two must agree within the tolerance
 * below (docs/storm-simulation.md).
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { builtInScenario, liveTierPids, type RunOptions, type RunResult, runStorm } from '../../src/storm/index.js';
import { simulateStorm } from '../../src/storm/sim/index.js';
import { processAlive, stormTierPids } from '../helpers/process-resources.js';

/**
 * Simulation vs real mode, same scenario and parameters. Measured on a 2-core machine over
 * three real runs of each case: amplification within 2%, p99 within 4%, success within 0.5
 * points. The tolerance leaves room for a loaded CI machine.
 */
const agreement = {
  /** Amplification: within ±20% of the real value, or ±0.25 when that is larger. */
  amplification: { relative: 0.2, absolute: 0.25 },
  /** Edge p99 latency: within ±20%. */
  p99: { relative: 0.2 },
  /** Edge success rate: within ±5 points. */
  successPoints: 0.05,
} as const;

/**
 * `p99SlackMs` widens the p99 tolerance where p99 is bimodal: of 240 calls it is the third
 * slowest, so when about 1% of calls pay an attempt timeout, one call more or less moves it
 * between the fast answers and the timeout.
 */
async function expectSimulationAgrees(real: RunResult, options: RunOptions, p99SlackMs = 0): Promise<void> {
  const { onProgress: _onProgress, ...same } = options;
  const sim = await simulateStorm(same);
  const context = (metric: string) => `${real.strategy} ${real.scenario} ${metric}: real vs simulated`;
  expect(sim.sent, context('sent')).toBe(real.sent);
  const ampTolerance = Math.max(
    agreement.amplification.relative * real.amplification,
    agreement.amplification.absolute,
  );
  expect(
    Math.abs(sim.amplification - real.amplification),
    context(`amplification ${real.amplification} vs ${sim.amplification}`),
  ).toBeLessThanOrEqual(ampTolerance);
  expect(
    Math.abs(sim.latency.p99Ms - real.latency.p99Ms),
    context(`p99 ${real.latency.p99Ms} vs ${sim.latency.p99Ms}`),
  ).toBeLessThanOrEqual(Math.max(agreement.p99.relative * real.latency.p99Ms, p99SlackMs));
  expect(
    Math.abs(sim.successRate - real.successRate),
    context(`success ${real.successRate} vs ${sim.successRate}`),
  ).toBeLessThanOrEqual(agreement.successPoints);
}

describe('storm lab: canonical scenario (backend tier hangs)', () => {
  const durationS = 6;
  const scenario = builtInScenario('hang-tier', durationS);

  it('naive: 2 retries and 2 s timeouts at every tier amplify ≥ 5× and the edge answers after ≥ 4 s', async () => {
    const options = { scenario, strategy: 'naive', rate: 40, durationS, drainS: 7 };
    const result = await runStorm(options);
    expect(result.sent).toBe(240);
    expect(result.amplification).toBeGreaterThanOrEqual(5);
    expect(result.latency.p99Ms).toBeGreaterThanOrEqual(4000);
    // The middle tier kept working for callers that had given up.
    expect(result.wasted.middle).toBeGreaterThan(0);
    expect(liveTierPids()).toEqual([]);
    await expectSimulationAgrees(result, options);
  }, 40_000);

  it('telescope: the budget telescopes, amplification ≤ 2 and the edge answers within 2.5 s', async () => {
    const options = { scenario, strategy: 'telescope', rate: 40, durationS, drainS: 5 };
    const result = await runStorm(options);
    expect(result.sent).toBe(240);
    expect(result.answered).toBe(240);
    expect(result.amplification).toBeLessThanOrEqual(2);
    expect(result.latency.p99Ms).toBeLessThanOrEqual(2500);
    // Deadlines drop work nobody waits for: little or none is finished for a caller that left.
    expect(result.wasted.middle).toBeLessThanOrEqual(result.received.middle * 0.05);
    expect(liveTierPids()).toEqual([]);
    // Bimodal p99 with the adaptive tiers: the third slowest of 240 calls either waited out one
    // middle budget (simulated: 1,372 ms) or an edge attempt and part of its retry (real runs:
    // 1,815–1,817 ms in two of three).
    await expectSimulationAgrees(result, options, 500);
  }, 40_000);
});

describe('storm lab: one backend instance hangs', () => {
  it('telescope: ≥ 99% success (the retry goes to another instance)', async () => {
    const durationS = 6;
    const options = {
      scenario: builtInScenario('hang-one', durationS),
      strategy: 'telescope',
      rate: 40,
      durationS,
      drainS: 4,
    };
    const result = await runStorm(options);
    expect(result.successRate).toBeGreaterThanOrEqual(0.99);
    expect(result.latency.p99Ms).toBeLessThan(1500);
    expect(result.amplification).toBeLessThanOrEqual(2);
    // The calls that meet the hung instance before it is avoided pay the middle tier's attempt
    // timeout (450 ms): about 1% of them, right at p99.
    await expectSimulationAgrees(result, options, 500);
  }, 40_000);
});

describe('storm lab: overload (0.5× → 3× the backend tier’s capacity and back)', () => {
  it('reports the measured capacity and goodput per second; telescope with adaptive tiers keeps goodput near capacity and the p99 under 0.9 s', async () => {
    const durationS = 10;
    // The lab's default: concurrencyLimit on the middle and backend tiers, the adaptive bulkhead.
    const result = await runStorm({
      scenario: builtInScenario('overload', durationS),
      strategy: 'telescope',
      durationS,
      drainS: 4,
    });
    const overload = result.overload;
    // 3 instances × 2 slots × 1 / (50 ms + 0.5 ms of CPU): at most about 119 answers/s.
    expect(overload?.capacityPerS).toBeGreaterThan(60);
    expect(overload?.capacityPerS).toBeLessThan(125);
    expect(result.timeline.length).toBe(durationS);
    expect(result.timeline.some((point) => point.goodput > 0)).toBe(true);
    // Loose on a shared machine: the numbers of record come from `npm run storm` (docs/overload.md).
    expect(overload?.goodputRatio).toBeGreaterThanOrEqual(0.75);
    // A middle instance's 503 (its limit) is retried at once on another instance: waiting for
    // its Retry-After of 1 s made the p99 at 3× 11–16× the unloaded one (1.1–1.2 s).
    expect(overload?.peakP99Ms).toBeLessThan(900);
    expect(liveTierPids()).toEqual([]);
  }, 60_000);
});

describe('storm lab: one backend instance answers 503 to 10% of requests', () => {
  it('telescope: ≥ 99.5% success with at most 1.4% extra backend attempts (naive: 1.7–2.0%)', async () => {
    // 800 calls, so that a few retries a loaded machine adds (slow attempts) do not decide it:
    // at 40/s for 6 s naive's 4 extra attempts and telescope's 1–5 overlapped. Measured under
    // six CPU hogs on 2 cores: telescope 1.0075–1.0088, naive 1.0175–1.0200.
    const durationS = 8;
    const options = {
      scenario: builtInScenario('flaky-one', durationS),
      strategy: 'telescope',
      rate: 100,
      durationS,
      drainS: 3,
    };
    const result = await runStorm(options);
    // The retry goes to another instance: without it, 10% of a third of the calls would fail.
    expect(result.successRate).toBeGreaterThanOrEqual(0.995);
    // The flaky instance is steered away from and ejected: without that, about 2% extra.
    expect(result.amplification).toBeLessThanOrEqual(1.014);
    expect(liveTierPids()).toEqual([]);
  }, 40_000);
});

describe('storm lab: recovery (real processes)', () => {
  it('telescope, outage-recover: back within 2 s of the backend’s recovery; the dead tier gets ≤ 1× the load, mostly nothing', async () => {
    const durationS = 12;
    const options = {
      scenario: builtInScenario('outage-recover', durationS),
      strategy: 'telescope',
      rate: 40,
      durationS,
      drainS: 4,
    };
    const result = await runStorm(options);
    // Down from 2.4 s to 8.4 s.
    expect(result.outage).toMatchObject({ tier: 'backend', startS: 2, endS: 9 });
    expect(result.recoveryS).toBeDefined();
    expect(result.recoveryS).toBeLessThanOrEqual(2);
    expect(result.outage!.amplification).toBeLessThanOrEqual(1);
    // At 40 requests/s the 20 failures each middle circuit needs to open take longer than the
    // window's first second, so they dominate this share (≤ 2% at 200 requests/s: see the
    // simulation test); what is left is a probe a second per circuit.
    expect(result.outage!.probeShare).toBeLessThanOrEqual(0.5);
    expect(liveTierPids()).toEqual([]);
  }, 60_000);
});

describe('storm lab: cleanup', () => {
  it('an interrupted lab leaves no tier process behind', async () => {
    const cli = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/storm/cli.ts', '--strategies', 'naive', '--rate', '20', '--duration', '30', '--json'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    cli.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    // Wait until load is flowing (the tiers are up), then interrupt.
    const deadline = Date.now() + 20_000;
    while (!/naive: \d+s sent/.test(stderr) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(stderr).toMatch(/naive: \d+s sent/);
    const tierPids = stormTierPids(cli.pid as number);
    expect(tierPids.length).toBe(7);
    cli.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => cli.once('exit', resolve));
    expect(code).toBe(130);
    await new Promise((r) => setTimeout(r, 500));
    expect(tierPids.filter(processAlive)).toEqual([]);
  }, 40_000);

  it('rejects bad arguments with a clear message and exit code 2', async () => {
    const cli = spawn(process.execPath, ['--import', 'tsx', 'src/storm/cli.ts', '--rate', 'lots'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    cli.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => cli.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('--rate must be a number');
  }, 20_000);
});
