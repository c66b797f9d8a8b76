/**
 * Storm-lab topology files: a mistake is refused before anything starts with INVALID_OPTION
 * naming the JSON path of the bad field; defaults are filled in; the load schedule offers
 * what it says; the shipped files are the built-in scenarios and the examples parse.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isTelescopeError } from '../../src/index.js';
import {
  builtInScenario,
  builtInScenarios,
  checkTopology,
  type StormTopology,
  topologyFromFile,
  topologyFromScenario,
} from '../../src/storm/index.js';
import { LoadProfile } from '../../src/storm/load.js';

const valid = (): StormTopology => ({
  name: 'shop',
  services: {
    edge: { instances: 1, calls: [{ service: 'catalog' }, { service: 'cart' }] },
    catalog: { instances: 2, calls: [{ service: 'config' }] },
    cart: { instances: 2, calls: [{ service: 'config', times: 2, mode: 'parallel' }] },
    config: { instances: 2 },
  },
  load: [{ atS: 0, rate: 100 }],
  durationS: 10,
  faults: [{ atS: 2, service: 'config', instances: [1], fault: 'hang' }],
});

/** The INVALID_OPTION message `checkTopology` throws for `topology`. */
function rejection(topology: unknown): string {
  try {
    checkTopology(topology);
  } catch (error) {
    expect(isTelescopeError(error) && error.code === 'INVALID_OPTION', String(error)).toBe(true);
    return (error as Error).message;
  }
  throw new Error('accepted');
}

describe('storm topology: checking', () => {
  it('fills in defaults and orders services from the entry, callers first', () => {
    const topology = checkTopology(valid());
    expect(topology.entry).toBe('edge');
    expect(topology.services.map((service) => service.name)).toEqual(['edge', 'cart', 'catalog', 'config']);
    const [edge, , , config] = topology.services;
    expect(edge?.role).toBe('edge');
    expect(edge?.capacity).toEqual({ maxConcurrent: 4096, maxQueue: 0, workMs: 0.5 });
    expect(config?.role).toBe('backend');
    expect(config?.capacity).toEqual({ maxConcurrent: 64, maxQueue: 64, workMs: 0.5 });
    expect(config?.latencyMs).toBe(5);
    expect(edge?.latencyMs).toBe(0);
    expect(topology.drainS).toBe(8);
    expect(topology.services[1]?.calls[0]).toMatchObject({ service: 'config', times: 2, mode: 'parallel' });
  });

  it.each([
    [
      'a cycle',
      (t: StormTopology) => {
        t.services.config = { instances: 1, calls: [{ service: 'catalog' }] };
      },
      'services.config.calls[0].service must be a call that closes no cycle (catalog → config → catalog)',
    ],
    [
      'a call to an unknown service',
      (t: StormTopology) => {
        t.services.cart = { instances: 1, calls: [{ service: 'payments' }] };
      },
      'services.cart.calls[0].service must be one of the services (edge, catalog, cart, config), got "payments"',
    ],
    [
      'a negative capacity',
      (t: StormTopology) => {
        t.services.catalog = { instances: 2, capacity: { maxConcurrent: -4 }, calls: [{ service: 'config' }] };
      },
      'services.catalog.capacity.maxConcurrent must be an integer in [1, 1000000], got -4',
    ],
    [
      'a negative queue',
      (t: StormTopology) => {
        t.services.config = { instances: 2, capacity: { maxQueue: -1 } };
      },
      'services.config.capacity.maxQueue must be an integer in [0, 1000000], got -1',
    ],
    [
      'a fault on an instance that does not exist',
      (t: StormTopology) => {
        t.faults = [{ atS: 1, service: 'config', instances: [0, 2], fault: 'down' }];
      },
      'faults[0].instances[1] must be an integer in [0, 1], got 2',
    ],
    [
      'a fault on an unknown service',
      (t: StormTopology) => {
        t.faults = [{ atS: 1, service: 'db', fault: 'down' }];
      },
      'faults[0].service must be one of the services',
    ],
    [
      'a fault without its value',
      (t: StormTopology) => {
        t.faults = [{ atS: 1, service: 'config', fault: 'errors' }];
      },
      'faults[0].errorRate must be a number in (0, 1], got undefined',
    ],
    [
      'a value that belongs to another fault',
      (t: StormTopology) => {
        t.faults = [{ atS: 1, service: 'config', fault: 'hang', factor: 3 }];
      },
      'faults[0].factor must be absent for fault hang, got 3',
    ],
    [
      'a misspelt field',
      (t: StormTopology) => {
        (t.services.config as unknown as Record<string, unknown>).instance = 2;
      },
      'services.config.instance must be one of the known fields',
    ],
    [
      'unknown client settings',
      (t: StormTopology) => {
        t.services.catalog = {
          instances: 2,
          calls: [{ service: 'config', client: { instances: ['http://x'] } as unknown as Record<string, never> }],
        };
      },
      'services.catalog.calls[0].client.instances must be one of the known fields',
    ],
    [
      'a load that does not start at 0',
      (t: StormTopology) => {
        t.load = [{ atS: 1, rate: 10 }];
      },
      'load[0].atS must be 0 (the load starts with the run), got 1',
    ],
    [
      'load steps out of order',
      (t: StormTopology) => {
        t.load = [
          { atS: 0, rate: 10 },
          { atS: 5, rate: 20, rampS: 2 },
          { atS: 6, rate: 5 },
        ];
      },
      'load[2].atS must be after the previous step (7), got 6',
    ],
    [
      'a service nobody reaches',
      (t: StormTopology) => {
        t.services.orphan = { instances: 1 };
        t.entry = 'edge';
      },
      'services.orphan must be reachable from the entry (edge)',
    ],
    [
      'zones that do not match the instances',
      (t: StormTopology) => {
        t.services.config = { instances: 2, zone: ['a'] };
      },
      'services.config.zone must be one zone per instance (2), got "1 zones"',
    ],
  ])('%s: INVALID_OPTION naming the field', (_case, spoil, message) => {
    const topology = valid();
    spoil(topology);
    expect(rejection(topology)).toContain(message);
  });

  it('no single root: asks for the entry', () => {
    const topology = valid();
    topology.services.other = { instances: 1, calls: [{ service: 'config' }] };
    expect(rejection(topology)).toContain('entry must be set when the graph has no single service that nobody calls');
  });

  it('a file: errors name the file and the path; bad JSON is said so', () => {
    expect(() => topologyFromFile('/nonexistent/topology.json')).toThrow(/cannot read the topology/);
    expect(() => topologyFromFile(join(import.meta.dirname, 'storm-topology.test.ts'))).toThrow(/not JSON/);
  });
});

describe('storm topology: load schedule', () => {
  it('steps and ramps offer what they say, and request i leaves when i were offered', () => {
    const profile = new LoadProfile(
      [
        { atS: 0, rate: 100, rampS: 0 },
        { atS: 2, rate: 300, rampS: 2 },
        { atS: 6, rate: 0, rampS: 0 },
      ],
      8,
    );
    // 2 s at 100, a 2 s ramp to 300 (average 200), 2 s at 300, then nothing.
    expect(profile.total).toBe(200 + 400 + 600);
    expect(profile.offeredBy(1000)).toBeCloseTo(100);
    expect(profile.offeredBy(3000)).toBeCloseTo(200 + 100 + 50);
    expect(profile.timeOf(0)).toBe(0);
    expect(profile.timeOf(150)).toBeCloseTo(1500);
    expect(profile.timeOf(350)).toBeCloseTo(3000, 6);
    expect(profile.timeOf(1200)).toBeCloseTo(6000, 6);
    expect(profile.timeOf(1201)).toBe(Number.POSITIVE_INFINITY);
    expect(LoadProfile.constant(40, 6).total).toBe(240);
  });
});

describe('storm topology: shipped files', () => {
  const root = join(import.meta.dirname, '..', '..');

  it('topologies/ holds every built-in scenario as `npm run storm:topologies` writes it', () => {
    for (const name of builtInScenarios) {
      const shipped = JSON.parse(readFileSync(join(root, 'topologies', `${name}.json`), 'utf8')) as unknown;
      expect(shipped, `${name}: run npm run storm:topologies`).toEqual(
        JSON.parse(JSON.stringify(topologyFromScenario(builtInScenario(name, 20)))),
      );
      expect(checkTopology(shipped).services.map((service) => service.name)).toEqual(['edge', 'middle', 'backend']);
    }
  });

  it('every example topology is valid', () => {
    const dir = join(root, 'examples', 'storm-topologies');
    const files = readdirSync(dir).filter((file) => file.endsWith('.json'));
    expect(files.length).toBeGreaterThanOrEqual(2);
    for (const file of files) expect(() => topologyFromFile(join(dir, file)), file).not.toThrow();
  });
});
