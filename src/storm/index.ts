/**
 * `telescope/storm`: the retry-storm lab as a library. Real multi-tier topologies on
 * loopback, faults on schedule, open-loop load, and the servers' own counts.
 */
export {
  defaultCapacity,
  killAllTiers,
  liveTierPids,
  type RunOptions,
  type RunResult,
  runStorm,
  type TimePoint,
} from './lab.js';
export { htmlReport, markdownTable } from './report.js';
export { type BuiltInScenario, builtInScenario, builtInScenarios, scenarioFromFile } from './scenarios.js';
export { builtInStrategies, loadStrategy } from './strategies/index.js';
export type { CallerContext, CallOutcome, StormStrategy, TierCaller } from './strategy.js';
export type { FaultStep, Scenario, TierCapacity, TierName, Topology } from './types.js';
