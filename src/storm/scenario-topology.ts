/**
 * The chain lab as a topology: edge → middle → backend with the lab's capacities, work and
 * latency, the scenario's faults on the services named like the tiers. The built-in
 * scenarios ship as topology files made by this (topologies/, `npm run storm:topologies`).
 */
import { defaultCapacity } from './lab.js';
import type { StormTopology } from './topology.js';
import type { Scenario, Topology } from './types.js';

export interface ScenarioTopologyOptions {
  /** Edge requests per second. @default scenario.rate ?? 200 */
  rate?: number;
  /** Seconds of load. @default scenario.durationS ?? 20 */
  durationS?: number;
  /** @default 8 */
  drainS?: number;
  /** Instances per tier. @default edge 1, middle 3, backend 3 (or the scenario's) */
  topology?: Partial<Topology>;
  /** CPU milliseconds per request in every tier. @default 0.5 */
  workMs?: number;
  /** Backend latency when healthy. @default 5 */
  backendLatencyMs?: number;
}

export function topologyFromScenario(scenario: Scenario, options: ScenarioTopologyOptions = {}): StormTopology {
  const counts: Topology = { edge: 1, middle: 3, backend: 3, ...scenario.topology, ...options.topology };
  const workMs = options.workMs ?? 0.5;
  const capacity = (tier: keyof Topology) => ({ ...defaultCapacity[tier], workMs });
  return {
    name: scenario.name,
    description: scenario.description,
    services: {
      edge: { instances: counts.edge, capacity: capacity('edge'), calls: [{ service: 'middle' }] },
      middle: { instances: counts.middle, capacity: capacity('middle'), calls: [{ service: 'backend' }] },
      backend: { instances: counts.backend, capacity: capacity('backend'), latencyMs: options.backendLatencyMs ?? 5 },
    },
    load: [{ atS: 0, rate: options.rate ?? scenario.rate ?? 200 }],
    durationS: options.durationS ?? scenario.durationS ?? 20,
    drainS: options.drainS ?? 8,
    faults: scenario.faults.map((step) => ({
      atS: step.atS,
      service: step.tier,
      ...(step.instances === undefined ? {} : { instances: step.instances }),
      fault: step.fault,
      ...(step.factor === undefined || step.fault !== 'slow' ? {} : { factor: step.factor }),
      ...(step.fault === 'fail' ? { rate: step.rate ?? 0.1 } : {}),
    })),
  };
}
