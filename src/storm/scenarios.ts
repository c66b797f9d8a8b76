import { readFileSync } from 'node:fs';
import type { FaultStep, LoadStep, Scenario } from './types.js';

/** Built-in scenarios; fault times scale with the run's duration. */
export const builtInScenarios = [
  'hang-one',
  'hang-tier',
  'down-one',
  'slow-tier',
  'outage-recover',
  'overload',
  'metastable',
  'flaky-one',
  'slow-one',
] as const;
export type BuiltInScenario = (typeof builtInScenarios)[number];

/**
 * A built-in scenario for a run of `durationS` seconds. Faults start after a healthy
 * stretch (15% of the run) so every chart shows the system before, during and after.
 */
export function builtInScenario(name: BuiltInScenario, durationS: number): Scenario {
  const at = (fraction: number) => Math.round(durationS * fraction * 10) / 10;
  const faults = (steps: FaultStep[]) => steps;
  switch (name) {
    case 'hang-one':
      return {
        name,
        description: 'one backend instance accepts connections and never answers, then recovers',
        faults: faults([
          { atS: at(0.15), tier: 'backend', instances: [0], fault: 'hang' },
          { atS: at(0.75), tier: 'backend', instances: [0], fault: 'none' },
        ]),
      };
    case 'hang-tier':
      return {
        name,
        description: 'the whole backend tier hangs (the canonical retry storm)',
        faults: faults([{ atS: at(0.15), tier: 'backend', fault: 'hang' }]),
      };
    case 'down-one':
      return {
        name,
        description: 'one backend instance is down (connection refused), then comes back',
        faults: faults([
          { atS: at(0.15), tier: 'backend', instances: [0], fault: 'down' },
          { atS: at(0.75), tier: 'backend', instances: [0], fault: 'none' },
        ]),
      };
    case 'slow-tier':
      return {
        name,
        description: 'the backend tier answers 10× slower, then recovers',
        faults: faults([
          { atS: at(0.15), tier: 'backend', fault: 'slow', factor: 10 },
          { atS: at(0.75), tier: 'backend', fault: 'none' },
        ]),
      };
    case 'flaky-one':
      return {
        name,
        description: 'one backend instance answers 503 to 10% of requests, then recovers',
        faults: faults([
          { atS: at(0.15), tier: 'backend', instances: [0], fault: 'fail', rate: 0.1 },
          { atS: at(0.75), tier: 'backend', instances: [0], fault: 'none' },
        ]),
      };
    case 'slow-one':
      return {
        name,
        description: 'one backend instance answers 5× slower, then recovers',
        faults: faults([
          { atS: at(0.15), tier: 'backend', instances: [0], fault: 'slow', factor: 5 },
          { atS: at(0.75), tier: 'backend', instances: [0], fault: 'none' },
        ]),
      };
    case 'outage-recover':
      return {
        name,
        description: 'the backend tier goes down for 10 s and recovers',
        faults: faults([
          { atS: at(0.2), tier: 'backend', fault: 'down' },
          { atS: Math.round((at(0.2) + Math.min(10, durationS * 0.5)) * 10) / 10, tier: 'backend', fault: 'none' },
        ]),
      };
    case 'overload':
      return {
        name,
        description: 'offered load climbs from 0.5× to 3× the backend tier’s measured capacity, holds, and goes back',
        // The backend is the bottleneck: 2 requests at once per instance, 50 ms each (about
        // 40/s per instance), far below what the edge and middle tiers can carry.
        capacity: { backend: { maxConcurrent: 2, maxQueue: 64 } },
        backendLatencyMs: 50,
        faults: [],
        load: [
          { atS: 0, factor: 0.5 },
          { atS: at(0.2), factor: 0.5 },
          { atS: at(0.4), factor: 3 },
          { atS: at(0.7), factor: 3 },
          { atS: at(0.85), factor: 0.5 },
        ],
      };
    case 'metastable': {
      // A trigger (2 s of added latency on every backend answer) that ends: a stable system
      // is back at once; a metastable one stays down, held there by its own retries.
      const start = at(0.2);
      return {
        name,
        description: 'the backend tier answers 400× slower (2 s) for 5 s, then the trigger is removed',
        faults: faults([
          { atS: start, tier: 'backend', fault: 'slow', factor: 400 },
          { atS: Math.round((start + Math.min(5, durationS * 0.25)) * 10) / 10, tier: 'backend', fault: 'none' },
        ]),
      };
    }
  }
}

/** The load factor of `steps` at `atS` (linear between steps, flat beyond them). */
export function loadFactorAt(steps: readonly LoadStep[], atS: number): number {
  const first = steps[0];
  if (first === undefined) return 1;
  if (atS <= first.atS) return first.factor;
  for (let index = 1; index < steps.length; index++) {
    const step = steps[index] as LoadStep;
    const previous = steps[index - 1] as LoadStep;
    if (atS <= step.atS) {
      const span = step.atS - previous.atS;
      return span <= 0
        ? step.factor
        : previous.factor + ((step.factor - previous.factor) * (atS - previous.atS)) / span;
    }
  }
  return (steps[steps.length - 1] as LoadStep).factor;
}

/** Reads a scenario from a JSON file, checking its shape. */
export function scenarioFromFile(path: string): Scenario {
  const parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<Scenario>;
  if (typeof parsed.name !== 'string' || !Array.isArray(parsed.faults)) {
    throw new Error(`${path}: a scenario needs "name" and "faults" (see README "Retry-storm lab")`);
  }
  for (const [index, step] of parsed.faults.entries()) {
    const fault = step as Partial<FaultStep>;
    if (
      typeof fault.atS !== 'number' ||
      !['edge', 'middle', 'backend'].includes(String(fault.tier)) ||
      !['hang', 'down', 'slow', 'fail', 'none'].includes(String(fault.fault)) ||
      (fault.rate !== undefined && !(typeof fault.rate === 'number' && fault.rate > 0 && fault.rate <= 1))
    ) {
      throw new Error(
        `${path}: faults[${index}] needs atS (number), tier (edge|middle|backend) and fault (hang|down|slow|fail|none); rate in (0, 1]`,
      );
    }
  }
  return { description: '', ...parsed } as Scenario;
}
