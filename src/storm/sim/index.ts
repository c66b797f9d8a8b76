/**
 * The storm lab's simulation mode: virtual time, simulated instances, the library's real
 * client code. See docs/storm-simulation.md.
 */
export { type SimEvent, VirtualClock } from './clock.js';
export { Exchange } from './exchange.js';
export { LatencyHistogram } from './histogram.js';
export { type SimCaller, SimInstance, type SimServe, type SimTier } from './instance.js';
export { type RawCaller, SimNetwork, SimTransport } from './network.js';
export {
  checkSimOptions,
  type SimRunResult,
  type SimulateOptions,
  simLimits,
  simTierNames,
  simulateStorm,
} from './run.js';
export { type SimCallerContext, type SimStrategy, simStrategies, simStrategy } from './strategies.js';
