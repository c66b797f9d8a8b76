/**
 * Shapes shared by the lab, its tier processes and strategy modules. Everything here
 * crosses a process boundary as JSON.
 */

export type TierName = 'edge' | 'middle' | 'backend';

/** What a tier instance does with excess requests. */
export interface TierCapacity {
  /** Requests processed at once by one instance. */
  maxConcurrent: number;
  /** Requests waiting for a slot; beyond it, 503 at once. */
  maxQueue: number;
}

export interface Topology {
  edge: number;
  middle: number;
  backend: number;
}

/** A fault injected on a schedule. */
export interface FaultStep {
  /** Seconds from the start of the load. */
  atS: number;
  tier: TierName;
  /** Instance indexes; all instances of the tier when absent. */
  instances?: number[];
  /**
   * hang: accept and never answer; down: connection refused; slow: latency × factor; fail:
   * answer 503 to a `rate` share of requests (evenly spread); none: healthy.
   */
  fault: 'hang' | 'down' | 'slow' | 'fail' | 'none';
  factor?: number;
  /** fail: the share of requests answered 503, in (0, 1]. @default 0.1 */
  rate?: number;
}

export interface Scenario {
  name: string;
  description: string;
  topology?: Partial<Topology>;
  faults: FaultStep[];
  /** Seconds of load. */
  durationS?: number;
  /** Edge requests per second. */
  rate?: number;
}

/** Counters a tier instance keeps (server side). */
export interface TierCounters {
  tier: TierName;
  index: number;
  received: number;
  /** Answers by status. */
  statuses: Record<string, number>;
  /** Rejected for capacity (503 without work). */
  shed: number;
  /** Work finished after the caller had given up (socket closed) or past its deadline. */
  wasted: number;
  inFlight: number;
  peakInFlight: number;
  /** Calls this instance made to the next tier (attempts, retries included). */
  downstreamAttempts: number;
}

/** One edge answer, for latency and success over time. */
export interface EdgeSample {
  /** Milliseconds since the load started (arrival). */
  atMs: number;
  latencyMs: number;
  ok: boolean;
}

/** Messages from the lab to a tier process. */
export type ToTier =
  | { type: 'fault'; fault: FaultStep['fault']; factor?: number; rate?: number }
  | { type: 'targets'; urls: string[] }
  | { type: 'poll'; id: number }
  | { type: 'start-clock'; epochMs: number }
  | { type: 'stop' };

/** Messages from a tier process to the lab. */
export type FromTier =
  | { type: 'ready'; port: number }
  | { type: 'counters'; id: number; counters: TierCounters; samples: EdgeSample[]; downstreamTimes: number[] }
  | { type: 'error'; message: string };

/** Configuration a tier process starts with. */
export interface TierConfig {
  tier: TierName;
  index: number;
  /** Built-in strategy name or a module path/URL exporting a StormStrategy as default. */
  strategy: string;
  capacity: TierCapacity;
  /** CPU milliseconds of work per request (busy loop), so overload is real. */
  workMs: number;
  /** Extra latency of a backend answer in milliseconds (before faults). */
  latencyMs: number;
  seed: number;
}

/** One tier of a simulated run. */
export interface SimulationTier {
  /** `edge`, `middle` (or `middle-1` … `middle-k`), `backend`. */
  name: string;
  instances: number;
  received: number;
  shed: number;
  wasted: number;
  /** The most requests one instance of the tier held at once. */
  peakInFlight: number;
  /** Calls the tier's instances made to the next tier (attempts, retries included). */
  downstreamAttempts: number;
}

/** What a simulated run was and what it cost (absent from real-mode results). */
export interface SimulationInfo {
  simulated: true;
  tiers: SimulationTier[];
  seed: number;
  /** Virtual seconds simulated from the start of the load (load and drain). */
  virtualS: number;
  /** Wall-clock seconds the simulation took (setup included). */
  wallS: number;
  /** Simulator events run (server steps, timers). */
  events: number;
  /** Times the driver yielded to let promise continuations settle. */
  yields: number;
  /** Peak resident set size of the process so far, in MiB. */
  peakRssMB: number;
}
