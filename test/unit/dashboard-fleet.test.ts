/**
 * Fleet mode's reading and merging of instance chips: what ejected an instance and the
 * p2c-ewma latency average cross from a process's stats.json to the merged view, checked
 * field by field (a hostile value is dropped, never passed on).
 */
import { describe, expect, it } from 'vitest';
import { mergeClients, readSnapshot } from '../../src/dashboard/fleet.js';

const snapshot = (instances: unknown[]) => ({ clients: [{ service: 'movies', endpoints: {}, instances }] });

describe('fleet instances', () => {
  it('an ejected instance keeps its reason and a p2c-ewma client its latency average; other values are dropped', () => {
    const [client] = readSnapshot(
      snapshot([
        { url: 'http://a:1', ejected: true, ejectionReason: 'failure-percentage', latencyMs: 48.5 },
        { url: 'http://b:1', ejected: true, ejectionReason: '<script>', latencyMs: 'slow' },
        { url: 'http://c:1', ejected: false, ejectionReason: 'success-rate', latencyMs: -1 },
      ]),
    );
    expect(client?.instances[0]).toMatchObject({
      ejected: true,
      ejectionReason: 'failure-percentage',
      latencyMs: 48.5,
    });
    expect(client?.instances[1]).not.toHaveProperty('ejectionReason');
    expect(client?.instances[1]).not.toHaveProperty('latencyMs');
    // Not ejected: no reason shown.
    expect(client?.instances[2]).not.toHaveProperty('ejectionReason');
    expect(client?.instances[2]).not.toHaveProperty('latencyMs');
  });

  it('merged across processes: the worst latency average and any ejection reason show', () => {
    const one = readSnapshot(snapshot([{ url: 'http://a:1', latencyMs: 10 }]));
    const two = readSnapshot(
      snapshot([{ url: 'http://a:1', ejected: true, ejectionReason: 'consecutive-failures', latencyMs: 50 }]),
    );
    const [merged] = mergeClients([one, two]);
    expect(merged?.instances).toEqual([
      {
        url: 'http://a:1',
        outstanding: 0,
        ejected: true,
        healthy: true,
        consecutiveFailures: 0,
        ejectionReason: 'consecutive-failures',
        latencyMs: 50,
      },
    ]);
  });
});
