import { describe, expectTypeOf, it } from 'vitest';
import {
  builtInScenario,
  type CallEdgeResult,
  checkTopology,
  type EntryOutcome,
  type EntrySecond,
  type ResolvedTopology,
  type RunProgress,
  type RunResult,
  type RunTopologyOptions,
  runTopology,
  type ServiceResult,
  type SimRunResult,
  type SimulateOptions,
  type SimulateTopologyOptions,
  type StormTopology,
  simulateStorm,
  simulateTopology,
  type TopologyFault,
  type TopologyRunResult,
  topologyFromFile,
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

describe('storm topology types', () => {
  it('a topology file has a type; checking it gives the resolved topology both modes run', () => {
    const topology: StormTopology = {
      name: 'shop',
      services: {
        edge: { instances: 2, callMode: 'parallel', calls: [{ service: 'db', times: 2, mode: 'parallel' }] },
        db: { instances: 3, zone: ['a', 'b', 'a'], capacity: { maxConcurrent: 8 } },
      },
      load: [
        { atS: 0, rate: 100 },
        { atS: 5, rate: 300, rampS: 2 },
      ],
      durationS: 10,
      faults: [{ atS: 2, service: 'db', instances: [0], fault: 'errors', errorRate: 0.5 }],
    };
    expectTypeOf(checkTopology).parameter(0).toBeUnknown();
    expectTypeOf(checkTopology(topology)).toEqualTypeOf<ResolvedTopology>();
    expectTypeOf(topologyFromFile).returns.toEqualTypeOf<ResolvedTopology>();
    expectTypeOf(simulateTopology).parameter(0).toEqualTypeOf<SimulateTopologyOptions>();
    expectTypeOf(simulateTopology).returns.resolves.toEqualTypeOf<TopologyRunResult>();
    expectTypeOf<SimulateTopologyOptions['workers']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<SimulateTopologyOptions['networkMs']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<NonNullable<TopologyRunResult['simulation']>['workers']>().toEqualTypeOf<number | undefined>();
    expectTypeOf(runTopology).returns.resolves.toEqualTypeOf<TopologyRunResult>();
    expectTypeOf(runTopology).parameter(0).toEqualTypeOf<RunTopologyOptions>();
    expectTypeOf<TopologyRunResult['services'][number]>().toEqualTypeOf<ServiceResult>();
    expectTypeOf<TopologyRunResult['calls'][number]>().toEqualTypeOf<CallEdgeResult>();
    // Both runs report the entry the same way.
    expectTypeOf<TopologyRunResult>().toExtend<EntryOutcome>();
    expectTypeOf<RunResult>().toExtend<EntryOutcome>();
    expectTypeOf<TopologyRunResult['timeline'][number]>().toEqualTypeOf<EntrySecond>();
    expectTypeOf<RunResult['timeline'][number]>().toExtend<EntrySecond>();
    expectTypeOf<RunTopologyOptions['onProgress']>().toEqualTypeOf<((progress: RunProgress) => void) | undefined>();
    expectTypeOf<ServiceResult['stormSignal']>().toEqualTypeOf<'fault' | 'load' | 'success' | undefined>();
    expectTypeOf<TopologyFault['fault']>().toEqualTypeOf<
      'hang' | 'down' | 'slow' | 'latency' | 'errors' | 'fail' | 'capacity' | 'none'
    >();
    // @ts-expect-error an unknown fault
    const bad: TopologyFault = { atS: 1, service: 'db', fault: 'explode' };
    void bad;
    // @ts-expect-error a service needs its instance count
    const noInstances: StormTopology['services'][string] = { calls: [] };
    void noInstances;
  });
});
