/**
 * The balancer's routing tables: the instances to pick from (all, by zone with the rest for
 * spillover, by version), each with the prefix sums weighted sampling needs. Rebuilt when the
 * instance set changes, never per pick.
 */
import type { InstanceState } from './instance-state.js';

/** A set of instances to pick from, with what the zone preference needs to know about it. */
export interface Group {
  readonly states: InstanceState[];
  /** Prefix sums of weights, or undefined when all weights are equal. */
  readonly cumulativeWeights: number[] | undefined;
  readonly totalWeight: number;
  /** Healthy (not ejected, passing health checks) share of the weight, as of `epoch`. */
  healthyShare: number;
  epoch: number;
}

function group(states: InstanceState[]): Group {
  const first = states[0]?.instance.weight;
  const uniform = states.every((state) => state.instance.weight === first);
  let sum = 0;
  const cumulativeWeights = states.map((state) => (sum += state.instance.weight));
  return {
    states,
    cumulativeWeights: uniform ? undefined : cumulativeWeights,
    totalWeight: sum,
    healthyShare: 1,
    epoch: -1,
  };
}

/** The instances of one zone and of every other zone, for spillover. */
export interface ZoneGroups {
  readonly local: Group;
  readonly remote: Group;
}

export interface Routing {
  readonly all: Group;
  readonly byZone: Map<string, ZoneGroups>;
}

export function routing(states: InstanceState[]): Routing {
  const byZone = new Map<string, ZoneGroups>();
  for (const [zone, members] of splitBy(states, (state) => state.instance.zone)) {
    byZone.set(zone, { local: group(members), remote: group(states.filter((state) => state.instance.zone !== zone)) });
  }
  return { all: group(states), byZone };
}

export function splitBy(
  states: InstanceState[],
  key: (state: InstanceState) => string | undefined,
): Map<string, InstanceState[]> {
  const groups = new Map<string, InstanceState[]>();
  for (const state of states) {
    const name = key(state);
    if (name === undefined) continue;
    const members = groups.get(name);
    if (members === undefined) groups.set(name, [state]);
    else members.push(state);
  }
  return groups;
}
