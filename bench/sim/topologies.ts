/**
 * The simulator's benchmark topologies: a fleet-scale chain (every request crosses every
 * tier) and a 20-service graph with fan-out and a shared dependency.
 */
import type { StormTopology, TopologyService } from '../../src/storm/index.js';

/** edge → middle-1 … middle-(tiers−2) → backend, `instances` each, no fault. */
export function fleetChain(options: {
  tiers: number;
  instances: number;
  rate: number;
  durationS: number;
}): StormTopology {
  const names = ['edge', ...Array.from({ length: options.tiers - 2 }, (_, i) => `middle-${i + 1}`), 'backend'];
  const services: Record<string, TopologyService> = {};
  for (const [index, name] of names.entries()) {
    const next = names[index + 1];
    services[name] = {
      instances: options.instances,
      ...(next === undefined ? {} : { calls: [{ service: next }] }),
    };
  }
  return {
    name: `chain-${options.tiers}x${options.instances}`,
    description: `${options.tiers} tiers × ${options.instances} instances, every request crosses every tier`,
    services,
    load: [{ atS: 0, rate: options.rate }],
    durationS: options.durationS,
    drainS: 2,
  };
}

/**
 * 20 services: an edge fans out in parallel to 6 domain services, each calls 2 of 12 leaf
 * services in sequence, and every domain service reads a shared config store first.
 */
export function twentyServices(options: { instances: number; rate: number; durationS: number }): StormTopology {
  const domains = ['catalog', 'cart', 'search', 'reviews', 'pricing', 'inventory'];
  const leaves = Array.from({ length: 12 }, (_, i) => `store-${i + 1}`);
  const services: Record<string, TopologyService> = {
    edge: {
      instances: options.instances,
      callMode: 'parallel',
      calls: domains.map((service) => ({ service })),
    },
    config: { instances: options.instances, latencyMs: 2 },
  };
  for (const [index, name] of domains.entries()) {
    services[name] = {
      instances: options.instances,
      calls: [
        { service: 'config' },
        { service: leaves[2 * index] as string },
        { service: leaves[2 * index + 1] as string, times: 2, mode: 'parallel' },
      ],
    };
  }
  for (const name of leaves) services[name] = { instances: options.instances };
  return {
    name: 'twenty-services',
    description: 'edge → 6 domain services in parallel → a shared config store and 12 stores',
    services,
    load: [{ atS: 0, rate: options.rate }],
    durationS: options.durationS,
    drainS: 2,
  };
}
