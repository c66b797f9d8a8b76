/**
 * The retry-storm lab at small scale, on real processes: the canonical scenario (the whole
 * backend tier hangs) collapses the naive configuration and not telescope's; one hanging
 * backend instance costs telescope nothing; every process the lab starts is stopped, also
 * when the lab itself is interrupted.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { builtInScenario, liveTierPids, runStorm } from '../../src/storm/index.js';

/** Running (a killed process that nobody has reaped yet, a zombie, is not). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('storm lab: canonical scenario (backend tier hangs)', () => {
  const durationS = 6;
  const scenario = builtInScenario('hang-tier', durationS);

  it('naive: 2 retries and 2 s timeouts at every tier amplify ≥ 5× and the edge answers after ≥ 4 s', async () => {
    const result = await runStorm({ scenario, strategy: 'naive', rate: 40, durationS, drainS: 7 });
    expect(result.sent).toBe(240);
    expect(result.amplification).toBeGreaterThanOrEqual(5);
    expect(result.latency.p99Ms).toBeGreaterThanOrEqual(4000);
    // The middle tier kept working for callers that had given up.
    expect(result.wasted.middle).toBeGreaterThan(0);
    expect(liveTierPids()).toEqual([]);
  }, 40_000);

  it('telescope: the budget telescopes, amplification ≤ 2 and the edge answers within 2.5 s', async () => {
    const result = await runStorm({ scenario, strategy: 'telescope', rate: 40, durationS, drainS: 5 });
    expect(result.sent).toBe(240);
    expect(result.answered).toBe(240);
    expect(result.amplification).toBeLessThanOrEqual(2);
    expect(result.latency.p99Ms).toBeLessThanOrEqual(2500);
    // Deadlines drop work nobody waits for: little or none is finished for a caller that left.
    expect(result.wasted.middle).toBeLessThanOrEqual(result.received.middle * 0.05);
    expect(liveTierPids()).toEqual([]);
  }, 40_000);
});

describe('storm lab: one backend instance hangs', () => {
  it('telescope: ≥ 99% success (the retry goes to another instance)', async () => {
    const durationS = 6;
    const result = await runStorm({
      scenario: builtInScenario('hang-one', durationS),
      strategy: 'telescope',
      rate: 40,
      durationS,
      drainS: 4,
    });
    expect(result.successRate).toBeGreaterThanOrEqual(0.99);
    expect(result.latency.p99Ms).toBeLessThan(1500);
    expect(result.amplification).toBeLessThanOrEqual(2);
  }, 40_000);
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
    const tierPids = await childPids(cli.pid as number);
    expect(tierPids.length).toBe(7);
    cli.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => cli.once('exit', resolve));
    expect(code).toBe(130);
    await new Promise((r) => setTimeout(r, 500));
    expect(tierPids.filter(alive)).toEqual([]);
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

/** Tier processes among the direct children of a process (Linux /proc). */
async function childPids(parent: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      // Only the lab's tiers (tsx has a child of its own).
      if (ppid === parent && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('storm/tier')) {
        pids.push(Number(entry));
      }
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}
