/**
 * Per-service results of a topology run, from per-second counts that both modes collect the
 * same way (real mode from the service processes, simulation from the simulated instances):
 * load and success over time, where the storm started and how it spread, recovery.
 */
import type { ResolvedTopology } from './topology.js';
import type { CallEdgeResult, ServiceResult, TopologyRunResult } from './types.js';

/** What one service's instances counted, summed over them (the totals `ServiceResult` reports as is). */
export interface ServiceCounts
  extends Pick<ServiceResult, 'name' | 'role' | 'instances' | 'received' | 'shed' | 'wasted' | 'peakInFlight'> {
  /** Requests received in each second from the start of the load. */
  receivedBySecond: ArrayLike<number>;
  /** Of those, answered 200 with real data, by the second they arrived. */
  okBySecond: ArrayLike<number>;
}

/** Calls from one service to another, counted by the callers. */
export type EdgeCounts = Pick<CallEdgeResult, 'from' | 'to' | 'times' | 'attempts'>;

/** A storm shows as load above this multiple of the healthy load… */
const stormLoadFactor = 1.5;
/** …or success below this. */
const stormSuccess = 0.95;
/** Recovered: success back to this (and load below `stormLoadFactor`). */
const recoveredSuccess = 0.99;

export function serviceResults(
  topology: ResolvedTopology,
  counts: readonly ServiceCounts[],
  edges: readonly EdgeCounts[],
): Pick<TopologyRunResult, 'services' | 'calls' | 'spread'> {
  const seconds = Math.ceil(topology.durationS);
  const firstFaultS = Math.min(topology.durationS, ...topology.faults.map((fault) => fault.atS));
  const recoveries = topology.faults.filter((fault) => fault.fault === 'none').map((fault) => fault.atS);
  // Recovery counts from the last 'none' step, when it comes after every other fault.
  const lastFaultS = Math.max(-1, ...topology.faults.map((fault) => fault.atS));
  const recoveredAtS = recoveries.length > 0 && Math.max(...recoveries) === lastFaultS ? lastFaultS : undefined;

  const services: ServiceResult[] = counts.map((count) => {
    const load = Array.from({ length: seconds }, (_, second) => count.receivedBySecond[second] ?? 0);
    const success = load.map((received, second) =>
      received === 0 ? 1 : Math.min(1, (count.okBySecond[second] ?? 0) / received),
    );
    // Healthy: the whole seconds before the first fault, skipping the first (it starts cold).
    const healthySeconds = load.slice(
      load.length > 2 && firstFaultS >= 2 ? 1 : 0,
      Math.max(1, Math.floor(firstFaultS)),
    );
    const healthyLoad =
      healthySeconds.length === 0 ? 0 : healthySeconds.reduce((a, b) => a + b, 0) / healthySeconds.length;
    const during = load.slice(Math.floor(firstFaultS));
    const peakLoad = during.length === 0 ? 0 : Math.max(...during);
    let stormAtS: number | undefined;
    let stormSignal: 'fault' | 'load' | 'success' | undefined;
    // A faulted service is where a storm starts, whatever its own counts show (a down one sees nothing).
    const ownFault = topology.faults.find((fault) => fault.service === count.name && fault.fault !== 'none');
    if (ownFault !== undefined && ownFault.atS < topology.durationS) {
      stormAtS = Math.floor(ownFault.atS);
      stormSignal = 'fault';
    } else if (topology.faults.length > 0) {
      for (let second = Math.floor(firstFaultS); second < seconds; second++) {
        const overloaded = healthyLoad > 0 && (load[second] as number) > stormLoadFactor * healthyLoad;
        const failing = (load[second] as number) > 0 && (success[second] as number) < stormSuccess;
        if (overloaded || failing) {
          stormAtS = second;
          stormSignal = failing ? 'success' : 'load';
          break;
        }
      }
    }
    let recoveryS: number | undefined;
    if (recoveredAtS !== undefined) {
      for (let second = Math.ceil(recoveredAtS); second < seconds; second++) {
        const calm = healthyLoad === 0 || (load[second] as number) <= stormLoadFactor * healthyLoad;
        if (calm && (success[second] as number) >= recoveredSuccess) {
          recoveryS = Math.round((second - recoveredAtS) * 10) / 10;
          break;
        }
      }
    }
    return {
      name: count.name,
      role: count.role,
      instances: count.instances,
      received: count.received,
      shed: count.shed,
      wasted: count.wasted,
      peakInFlight: count.peakInFlight,
      successRate:
        count.received === 0
          ? 1
          : Math.min(1, Array.from(count.okBySecond).reduce((a, b) => a + b, 0) / count.received),
      healthyLoad: Math.round(healthyLoad * 100) / 100,
      peakLoad,
      loadFactor: healthyLoad === 0 ? 0 : Math.round((peakLoad / healthyLoad) * 1000) / 1000,
      stormAtS,
      stormSignal,
      recoveryS,
      load,
      success: success.map((rate) => Math.round(rate * 10_000) / 10_000),
    };
  });

  const admitted = new Map(counts.map((count) => [count.name, count.received - count.shed]));
  const calls: CallEdgeResult[] = edges.map((edge) => {
    const requests = admitted.get(edge.from) ?? 0;
    const callsPerRequest = requests === 0 ? 0 : edge.attempts / requests;
    return {
      from: edge.from,
      to: edge.to,
      times: edge.times,
      attempts: edge.attempts,
      callsPerRequest: Math.round(callsPerRequest * 10_000) / 10_000,
      amplification: Math.round((callsPerRequest / edge.times) * 10_000) / 10_000,
    };
  });
  const faulted = new Set(topology.faults.filter((fault) => fault.fault !== 'none').map((fault) => fault.service));
  const depth = new Map(counts.map((count, index) => [count.name, index]));
  const rank = (name: string) => (faulted.has(name) ? -1e9 : 0) - (depth.get(name) ?? 0);
  const spread = services
    .filter((service) => service.stormAtS !== undefined)
    .map((service) => ({
      service: service.name,
      atS: service.stormAtS as number,
      signal: service.stormSignal as 'fault' | 'load' | 'success',
    }))
    // In the same second, the faulted services first, then from the callees up to the entry.
    .sort((a, b) => a.atS - b.atS || rank(a.service) - rank(b.service));
  return { services, calls, spread };
}
