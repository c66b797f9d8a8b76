/**
 * `telescope-http/testing`: fakes, real loopback instances and faults for services declared with
 * `defineService`.
 *
 * - `fakeService(def, handlers)`: a service implemented by typed handlers, on a loopback port,
 *   validating requests and responses with the definition's schemas;
 * - `startInstances(def, handlers, { count })`: a group of real instances with server-side
 *   counts, stop/start, and per-instance chaos;
 * - `chaos(server, opts)` / `instance.chaos(opts)` / `chaosProxy(url, opts)`: hangs, latency,
 *   errors, resets, slow bodies and refused connections on real sockets;
 * - `useFake` / `useInstances` / `closeAll`: cleanup for test runners.
 *
 * @module telescope-http/testing
 */
export {
  type Chaos,
  type ChaosOptions,
  type ChaosProxy,
  chaos,
  chaosProxy,
  type FaultCounts,
} from './chaos.js';
export { type FakeCall, type FakeService, type FakeServiceOptions, fakeService } from './fake.js';
export { type Cleanup, type CleanupOptions, useFake, useInstances } from './hooks.js';
export { type HttpErrorOptions, HttpErrorResponse, httpError, isHttpErrorResponse } from './http-error.js';
export { type InstanceGroup, type StartInstancesOptions, startInstances, type TestInstance } from './instances.js';
export { seededRandom } from './random.js';
export { closeAll, openResources } from './registry.js';
export type {
  EndpointHandler,
  HandlerBody,
  HandlerContext,
  HandlerInput,
  HandlerResult,
  ServiceHandlers,
} from './router.js';
export type { RequestCounts } from './server.js';
