/**
 * What the target, the client children and the runner agree on: the movie fixture and the
 * messages they exchange over IPC.
 */

/** The movie the target answers for `GET /movies/:id`; about 100 bytes of JSON. */
export interface Movie {
  id: number;
  title: string;
  year: number;
  director: string;
  genres: string[];
}

/** The target's answer for `id`, serialised once per request the way a real handler would. */
export function movieJson(id: number): string {
  const movie: Movie = {
    id,
    title: 'Heat',
    year: 1995,
    director: 'Michael Mann',
    genres: ['crime', 'drama', 'thriller'],
  };
  return JSON.stringify(movie);
}

/** Throws unless `body` is the target's movie for `id`: every response of every variant is checked. */
export function checkMovie(body: unknown, id: number, variant: string): void {
  if (typeof body !== 'object' || body === null) throw new Error(`${variant}: body is not an object for id ${id}`);
  const movie = body as Partial<Movie>;
  if (movie.id !== id || movie.title !== 'Heat' || movie.year !== 1995 || !Array.isArray(movie.genres)) {
    throw new Error(`${variant}: unexpected body for id ${id}: ${JSON.stringify(body).slice(0, 200)}`);
  }
}

/** Target → runner: the servers are listening. */
export interface TargetReady {
  kind: 'ready';
  /** HTTP/1.1 origins. */
  urls: string[];
  /** h2c (HTTP/2 with prior knowledge) origins, one per instance. */
  h2cUrls: string[];
  /** h2 over TLS origins, one per instance; their certificate is signed by `ca`. */
  h2Urls: string[];
  ca: string;
}

/** How long the measured phase lasts: a fixed number of requests, or a fixed time. */
export type MeasuredPhase = { requests: number } | { seconds: number };

/** Runner → client child: what to run. Passed as one JSON argv entry. */
export interface ClientJob {
  variant: string;
  /** The origins of the variant's protocol. */
  urls: string[];
  /** CA of the h2-over-TLS origins. */
  ca: string;
  measure: MeasuredPhase;
  /** Seconds of requests before measuring (connections opened, code optimised); 0 for none. */
  warmupSeconds: number;
  concurrency: number;
  /** The target's pid, so its CPU can be told apart from other processes' (Linux). */
  targetPid?: number;
  /** When set, the measured phase is CPU-profiled and the profile written to this path. */
  profilePath?: string;
  /** Sampling interval of the profiler in microseconds. */
  profileIntervalUs?: number;
}

/** Client child → runner: one variant-round's measurements. */
export interface ClientResult {
  kind: 'result';
  variant: string;
  /** Requests completed in the measured phase. */
  requests: number;
  elapsedMs: number;
  /** User + system CPU of the whole client process during the measured phase. */
  cpuMicros: number;
  /** The system (kernel) part of `cpuMicros`: socket syscalls, mostly. */
  cpuSystemMicros: number;
  /** Main-thread GC pauses during the measured phase (part of `cpuMicros`). */
  gcMicros: number;
  /** The young-generation (scavenge) part of `gcMicros`. */
  gcMinorMicros: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  /** Peak resident set size of the client process, in bytes. */
  peakRssBytes: number;
  /**
   * CPU used during the measured phase by anything but this client and the target (other
   * processes, the hypervisor's steal), as a share of the machine; undefined where unknown.
   */
  foreignCpuShare: number | undefined;
}

/** Client child → runner: the run failed (a bad response, a library error). */
export interface ClientFailure {
  kind: 'failure';
  variant: string;
  message: string;
}

export type ClientMessage = ClientResult | ClientFailure;

/** The value at quantile `q` (0..1) of already sorted numbers, nearest-rank. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

/** Median of unsorted numbers. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}
