/**
 * The storm lab's simulation mode: virtual time, simulated instances, the library's real
 * client code. See docs/storm-simulation.md.
 */
export { type SimEvent, VirtualClock } from './clock.js';
export { LatencyHistogram } from './histogram.js';
export {
  Exchange,
  type RawCaller,
  type SimCaller,
  SimInstance,
  SimNetwork,
  type SimServe,
  type SimTier,
  SimTransport,
} from './network.js';
export {
  checkSimOptions,
  type SimRunResult,
  type SimulateOptions,
  simLimits,
  simTierNames,
  simulateStorm,
} from './run.js';
export { type SimCallerContext, type SimStrategy, simStrategies, simStrategy } from './strategies.js';
