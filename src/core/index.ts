export {
  type Call,
  CallContext,
  compose,
  type IncomingResponse,
  type Instance,
  type Layer,
  type Logger,
  type OneShotBody,
  type OutgoingRequest,
  type RouteHints,
} from './call.js';
export { type Clock, sleep, systemClock, type TimerHandle, TimerWheel, type WheelEntry, wheelOf } from './clock.js';
export { type Cancellation, Deadline } from './deadline.js';
export {
  BODY_EXCERPT_BYTES,
  ClassifiedFailureError,
  ErrorCode,
  formatIssues,
  HttpStatusError,
  invalidOption,
  isTelescopeError,
  type ResponseClass,
  TelescopeError,
  type TelescopeErrorOptions,
  ValidationError,
  type ValidationIssue,
} from './errors.js';
export { isStandardSchema, type StandardSchemaV1 } from './standard-schema.js';
