/**
 * A topology on real processes: one tier process per service instance on 127.0.0.1 (the
 * chain lab's, running the service's calls), open-loop load on the schedule at the entry,
 * faults on schedule, and per-service counts polled from the processes every second.
 */

import { cpus, totalmem } from 'node:os';
import { createClient } from '../client/index.js';
import { EdgeLoad } from './edge-load.js';
import { type EdgeCounts, type ServiceCounts, serviceResults } from './graph-results.js';
import { entryOutcome, entrySecond, poll, startTier, stopTiers, type TierProcess, warmUp } from './lab.js';
import { LoadProfile } from './load.js';
import { telescopeClientOptions } from './strategies/telescope.js';
import { type ResolvedTopology, topologyInstances } from './topology.js';
import type { EdgeSample, RunProgress, TierCounters, TopologyRunResult, ToTier } from './types.js';

/**
 * Processes a real-mode topology may start on this machine: 16 per CPU, and no more than
 * 128 MiB of memory each (a tier process uses 50–80 MiB).
 */
export function topologyProcessLimit(): number {
  return Math.max(1, Math.min(16 * cpus().length, Math.floor(totalmem() / 2 ** 27), 512));
}

/**
 * Checks every call's telescope client settings by building the client they describe
 * (`createClient` checks its options; nothing is sent). Errors name the JSON path.
 */
export async function checkTopologyClients(topology: ResolvedTopology): Promise<void> {
  for (const service of topology.services) {
    for (const [index, call] of service.calls.entries()) {
      if (call.client === undefined) continue;
      const { service: definition, options } = telescopeClientOptions(service.role === 'edge' ? 'edge' : 'middle');
      try {
        const client = createClient(definition, {
          ...options,
          ...(call.client as object),
          instances: ['http://127.0.0.1:9'],
        });
        await client.close();
      } catch (error) {
        throw new Error(`services.${service.name}.calls[${index}].client: ${(error as Error).message}`);
      }
    }
  }
}

export interface RunTopologyOptions {
  topology: ResolvedTopology;
  /** Strategy of every call that names none: a built-in name or a module path. */
  strategy: string;
  /** Processes the run may start. @default topologyProcessLimit() */
  maxProcesses?: number;
  onProgress?: (progress: RunProgress) => void;
}

/** Runs a topology with one default strategy on real processes. */
export async function runTopology(options: RunTopologyOptions): Promise<TopologyRunResult> {
  const { topology, strategy } = options;
  const limit = options.maxProcesses ?? topologyProcessLimit();
  const needed = topologyInstances(topology);
  if (needed > limit) {
    throw new RangeError(`services: ${needed} instances need ${needed} processes, more than the ${limit} allowed`);
  }
  const { durationS, drainS } = topology;
  const profile = new LoadProfile(topology.load, durationS);
  const processes = new Map<string, TierProcess[]>();
  const all: TierProcess[] = [];
  try {
    // Callees first, so every caller gets its targets before the load starts.
    for (const [order, service] of [...topology.services].reverse().entries()) {
      const started = await Promise.all(
        Array.from({ length: service.instances }, (_, index) =>
          startTier({
            tier: service.role,
            index,
            strategy,
            capacity: { maxConcurrent: service.capacity.maxConcurrent, maxQueue: service.capacity.maxQueue },
            workMs: service.capacity.workMs,
            latencyMs: service.latencyMs,
            seed: 1000 * (order + 1) + index,
            service: {
              name: service.name,
              callMode: service.callMode,
              calls: service.calls.map((call) => ({
                strategy: call.strategy ?? strategy,
                times: call.times,
                mode: call.mode,
                ...(call.fallback === undefined ? {} : { fallback: call.fallback }),
                ...(call.client === undefined ? {} : { client: call.client as Record<string, unknown> }),
              })),
            },
          }),
        ),
      );
      processes.set(service.name, started);
      all.push(...started);
    }
    for (const service of topology.services) {
      for (const [call, spec] of service.calls.entries()) {
        const urls = (processes.get(spec.service) ?? []).map((target) => target.url);
        for (const instance of processes.get(service.name) ?? []) {
          instance.child.send({ type: 'targets', urls, call } satisfies ToTier);
        }
      }
    }
    const entry = processes.get(topology.entry) ?? [];
    await warmUp(entry.map((instance) => instance.url));
    const epochMs = Date.now();
    for (const instance of all) instance.child.send({ type: 'start-clock', epochMs } satisfies ToTier);

    const faultTimers = topology.faults.map((step) =>
      setTimeout(() => {
        for (const instance of processes.get(step.service) ?? []) {
          if (step.instances === undefined || step.instances.includes(instance.index)) {
            const { atS: _at, service: _service, instances: _instances, ...fault } = step;
            instance.child.send({ type: 'fault', ...fault } satisfies ToTier);
          }
        }
      }, step.atS * 1000),
    );

    // Open-loop load on the schedule: request i leaves when the schedule has offered it.
    const load = new EdgeLoad(
      entry.map((instance) => instance.url),
      epochMs,
      (durationS + drainS) * 1000,
    );
    const samples: EdgeSample[] = [];
    const collect = async () => {
      const polled = await Promise.all(all.map(async (instance) => ({ instance, ...(await poll(instance)) })));
      for (const each of polled) samples.push(...each.samples);
      return polled;
    };
    const startedAt = performance.now();
    const totalS = durationS + drainS;
    const total = profile.total;
    await new Promise<void>((resolve) => {
      let second = 0;
      const tick = setInterval(() => {
        const elapsedMs = performance.now() - startedAt;
        while (load.sent < total && profile.timeOf(load.sent) <= elapsedMs) load.fire();
        if (load.sent >= total || elapsedMs >= durationS * 1000) {
          clearInterval(tick);
          resolve();
        }
        if (elapsedMs >= (second + 1) * 1000) {
          second++;
          void collect().catch(() => undefined);
          options.onProgress?.({ strategy, elapsedS: second, totalS, sent: load.sent, answered: load.answered });
        }
      }, 5);
    });
    const drainEnd = performance.now() + drainS * 1000;
    await load.drain(drainEnd);
    for (const timer of faultTimers) clearTimeout(timer);
    const final = await collect();
    await load.close();
    const { sent, answered, sentBySecond } = load;

    const seconds = Math.ceil(durationS + drainS) + 2;
    const countsOf = (name: string) =>
      final.filter((each) => processes.get(name)?.includes(each.instance)).map((each) => each.counters);
    const bySecond = (list: TierCounters[], pick: (counters: TierCounters) => number[] | undefined) =>
      Array.from({ length: seconds }, (_, second) =>
        list.reduce((n, counters) => n + (pick(counters)?.[second] ?? 0), 0),
      );
    const counts: ServiceCounts[] = topology.services.map((service) => {
      const list = countsOf(service.name);
      return {
        name: service.name,
        role: service.role,
        instances: service.instances,
        received: list.reduce((n, c) => n + c.received, 0),
        shed: list.reduce((n, c) => n + c.shed, 0),
        wasted: list.reduce((n, c) => n + c.wasted, 0),
        peakInFlight: Math.max(0, ...list.map((c) => c.peakInFlight)),
        receivedBySecond: bySecond(list, (c) => c.receivedBySecond),
        okBySecond: bySecond(list, (c) => c.okBySecond),
      };
    });
    const edges: EdgeCounts[] = topology.services.flatMap((service) =>
      service.calls.map((call, index) => ({
        from: service.name,
        to: call.service,
        times: call.times,
        attempts: countsOf(service.name).reduce((n, c) => n + (c.attemptsByCall?.[index] ?? 0), 0),
      })),
    );

    const entryCounts = counts[0] as ServiceCounts;
    const worstMs = (durationS + drainS) * 1000;
    const leaves = counts.filter((c) => c.role === 'backend');
    const timeline: TopologyRunResult['timeline'] = [];
    for (let second = 0; second < Math.ceil(durationS); second++) {
      const entryThen = entryCounts.receivedBySecond[second] ?? 0;
      const leavesThen = leaves.reduce((n, c) => n + (c.receivedBySecond[second] ?? 0), 0);
      timeline.push({
        ...entrySecond(second, sentBySecond, samples, worstMs),
        amplification: entryThen === 0 ? 0 : leavesThen / entryThen,
      });
    }
    const admitted = entryCounts.received - entryCounts.shed;
    const statuses = countsOf(topology.entry).map((c) => c.statuses);
    return {
      strategy,
      topology: topology.name,
      mode: 'real',
      durationS,
      ...entryOutcome(sent, answered, samples, statuses, worstMs),
      amplification: admitted === 0 ? 0 : leaves.reduce((n, c) => n + c.received, 0) / admitted,
      timeline,
      ...serviceResults(topology, counts, edges),
    };
  } finally {
    await stopTiers(all);
  }
}
