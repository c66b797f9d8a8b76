/**
 * `telescope-http/storm`: the retry-storm lab as a library. Real multi-tier topologies on
 * loopback, faults on schedule, open-loop load, and the servers' own counts; or the same in
 * virtual time (`simulateStorm`) for topologies beyond one machine.
 *
 * @module telescope-http/storm
 */

export { type RunTopologyOptions, runTopology, topologyProcessLimit } from './graph-lab.js';
export {
  defaultCapacity,
  killAllTiers,
  liveTierPids,
  type RunOptions,
  type RunResult,
  runStorm,
  type TimePoint,
} from './lab.js';
export {
  htmlReport,
  markdownTable,
  type StormResult,
  simulationSummary,
  simulationTierTable,
} from './report.js';
export { type ScenarioTopologyOptions, topologyFromScenario } from './scenario-topology.js';
export { type BuiltInScenario, builtInScenario, builtInScenarios, scenarioFromFile } from './scenarios.js';
export { type SimulateTopologyOptions, simulateTopology } from './sim/graph.js';
export {
  checkSimOptions,
  type SimCallerContext,
  type SimRunResult,
  type SimStrategy,
  type SimulateOptions,
  simLimits,
  simStrategies,
  simulateStorm,
  VirtualClock,
} from './sim/index.js';
export { builtInStrategies, loadStrategy } from './strategies/index.js';
export {
  degradedAnswer,
  type TelescopeTierClientOptions,
  telescopeClientOptions,
  telescopeFailure,
  telescopeServerOptions,
  telescopeSuccess,
} from './strategies/telescope.js';
export type { CallerContext, CallOutcome, StormStrategy, TierCaller } from './strategy.js';
export {
  checkTopology,
  type LoadStep,
  type ResolvedCall,
  type ResolvedService,
  type ResolvedTopology,
  type StormTopology,
  type TopologyCall,
  type TopologyCapacity,
  type TopologyClientSettings,
  type TopologyFault,
  type TopologyFaultKind,
  type TopologyService,
  topologyFaults,
  topologyFromFile,
  topologyLimits,
} from './topology.js';
export type {
  CallEdgeResult,
  EntryOutcome,
  EntrySecond,
  FaultStep,
  RunProgress,
  Scenario,
  ServiceResult,
  SimulationInfo,
  SimulationTier,
  TierCapacity,
  TierName,
  Topology,
  TopologyRunResult,
} from './types.js';
