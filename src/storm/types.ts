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
  /** Per-tier admission that differs from the lab's default (e.g. a backend that is the bottleneck). */
  capacity?: Partial<Record<TierName, TierCapacity>>;
  /** Backend answer latency in milliseconds when healthy (before faults). */
  backendLatencyMs?: number;
  /**
   * Offered load as multiples of the backend tier's capacity, measured before the run,
   * linear between steps (the edge rate then follows it; `rate` does not apply).
   */
  load?: LoadStep[];
}

/** A point of a load profile: from `atS` on, `factor` × the backend tier's measured capacity. */
export interface LoadStep {
  atS: number;
  factor: number;
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
  /** Topology runs: requests received in each second since the clock started. */
  receivedBySecond?: number[];
  /** Topology runs: of those, answered 200 with real data, by the second they arrived. */
  okBySecond?: number[];
  /** Topology runs: attempts sent per call of the service (in the order of its calls). */
  attemptsByCall?: number[];
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
  | {
      type: 'fault';
      fault: FaultStep['fault'] | 'latency' | 'errors' | 'capacity';
      factor?: number;
      /** fail: the share of requests answered 503. */
      rate?: number;
      addedMs?: number;
      errorRate?: number;
      capacityFraction?: number;
    }
  /** The instances of the next tier, or of the service the service's call `call` calls. */
  | { type: 'targets'; urls: string[]; call?: number }
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
  /** Milliseconds a request spends in the instance after its CPU work, before its calls or answer. */
  latencyMs: number;
  seed: number;
  /** Topology runs: the service's calls (absent: the chain lab's one call to the next tier). */
  service?: TierServiceConfig;
}

/** A topology service's calls, as its processes run them. */
export interface TierServiceConfig {
  name: string;
  calls: Array<{
    /** Strategy of this call: a built-in name or module path. */
    strategy: string;
    times: number;
    mode: 'sequence' | 'parallel';
    fallback?: boolean;
    client?: Record<string, unknown>;
  }>;
  callMode: 'sequence' | 'parallel';
}

/** One tier of a simulated run. */
export interface SimulationTier {
  /** `edge`, `middle` (or `middle-1` … `middle-k`), `backend`. */
  name: string;
  instances: number;
  received: number;
  /** Requests each instance received, by index (tiers of at most 100 instances). */
  receivedByInstance?: number[];
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
  /** Threads the services were simulated on (`workers`); absent: one. */
  workers?: number;
  /** Events each thread ran, the calling thread first (with `workers`): how evenly the services were split. */
  eventsPerWorker?: number[];
  /** Milliseconds each request, answer and close took on the network; absent: none. */
  networkMs?: number;
}

/** One service of a topology run, from its instances' own counts. */
export interface ServiceResult {
  name: string;
  /** `edge` (the entry), `middle` or `backend` (calls nothing). */
  role: TierName;
  instances: number;
  /** Requests that reached the service (every attempt of every caller). */
  received: number;
  /** Rejected for capacity (503 without work). */
  shed: number;
  /** Work finished after the caller had given up or past the request's deadline. */
  wasted: number;
  /** The most requests one instance held at once. */
  peakInFlight: number;
  /** Requests answered 200 with real data (not a fallback), over requests received. */
  successRate: number;
  /** Requests per second before the first fault (the whole load when there is none). */
  healthyLoad: number;
  /** The highest requests per second from the first fault on. */
  peakLoad: number;
  /** `peakLoad / healthyLoad`: how much the storm multiplied the service's load. */
  loadFactor: number;
  /**
   * Second the storm reached the service: when a fault of its own started, or the first
   * second from the first fault on with its load above 1.5× healthy or its success below 95%;
   * absent when it never did.
   */
  stormAtS: number | undefined;
  /** What showed the storm first: the service's own `fault`, its `load` or its `success`. */
  stormSignal: 'fault' | 'load' | 'success' | undefined;
  /**
   * Seconds from the end of the last fault until the service's success is back to 99% and its
   * load below 1.5× healthy; absent when no fault ends or it never recovered within the load.
   */
  recoveryS: number | undefined;
  /** Requests received in each second of the load. */
  load: number[];
  /** Success of the requests received in each second (answered 200, real data). */
  success: number[];
}

/** One edge of the graph: the calls one service makes to another. */
export interface CallEdgeResult {
  from: string;
  to: string;
  /** Calls per request in the topology (`times`). */
  times: number;
  /** Attempts sent on the edge (retries and hedges included). */
  attempts: number;
  /** Attempts per request the caller admitted. */
  callsPerRequest: number;
  /** `callsPerRequest / times`: 1 means no retries, 3 means every call was tried three times. */
  amplification: number;
}

/** A run's progress, reported about once a second while the load runs and drains. */
export interface RunProgress {
  strategy: string;
  /** Seconds since the load started. */
  elapsedS: number;
  /** Seconds of load and drain in all. */
  totalS: number;
  /** Requests the load generator has sent so far. */
  sent: number;
  /** Entry answers so far. */
  answered: number;
}

/** What the entry (the edge tier) answered over a run, from the load generator's side. */
export interface EntryOutcome {
  strategy: string;
  durationS: number;
  /** Requests the load generator sent to the entry. */
  sent: number;
  /** Entry answers (any status) before the drain ended. */
  answered: number;
  /** Entry answers with real data (200, not a fallback), over requests sent. */
  successRate: number;
  /** Entry answers that were fallbacks, over requests sent. */
  fallbackRate: number;
  /** Latency of every request sent; one never answered within the drain counts as the whole run and drain. */
  latency: { p50Ms: number; p99Ms: number; maxMs: number };
}

/** One second of the entry, by the second requests were sent (a request never answered fails in its second). */
export interface EntrySecond {
  second: number;
  edgeRequests: number;
  edgeSuccessRate: number;
  edgeP99Ms: number;
  /** Requests at the services that call nothing (backend requests) per entry request in this second. */
  amplification: number;
}

/** A topology run, real or simulated: the entry's numbers, each service's and each edge's. */
export interface TopologyRunResult extends EntryOutcome {
  topology: string;
  mode: 'real' | 'simulated';
  /** Requests at the services that call nothing (every attempt) per request the entry admitted. */
  amplification: number;
  /** The entry, second by second. */
  timeline: EntrySecond[];
  services: ServiceResult[];
  calls: CallEdgeResult[];
  /** Services in the order the storm reached them (see `ServiceResult.stormAtS`). */
  spread: Array<{ service: string; atS: number; signal: 'fault' | 'load' | 'success' }>;
  /** Simulated runs: what was simulated and what it cost. */
  simulation?: Omit<SimulationInfo, 'tiers'>;
}
