import { describe, expectTypeOf, it } from 'vitest';
import {
  builtInScenario,
  type RunResult,
  type SimRunResult,
  type SimulateOptions,
  simulateStorm,
} from '../../src/storm/index.js';

describe('storm simulation types', () => {
  it('simulateStorm takes a scenario and a built-in strategy and resolves with the real result plus the simulation', () => {
    expectTypeOf(simulateStorm).parameter(0).toEqualTypeOf<SimulateOptions>();
    expectTypeOf(simulateStorm).returns.resolves.toEqualTypeOf<SimRunResult>();
    expectTypeOf<SimRunResult>().toExtend<RunResult>();
    expectTypeOf<SimulateOptions['instances']>().toEqualTypeOf<number | readonly number[] | undefined>();
    expectTypeOf(
      simulateStorm({ scenario: builtInScenario('hang-tier', 20), strategy: 'telescope', tiers: 5 }),
    ).resolves.toHaveProperty('simulation');
    // @ts-expect-error a scenario is required
    simulateStorm({ strategy: 'telescope' });
  });
});
