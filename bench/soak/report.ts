/**
 * The soak's arithmetic and formatting, free of I/O: samples, the verdict (least-squares heap
 * slope, max-versus-median of counts), sparklines and the tables of the report.
 */

/** One measurement of the client process, taken right after a forced full GC. */
export interface Sample {
  /** Seconds since the load started (negative: before it; after the end: idle and closed). */
  t: number;
  phase: 'before-client' | 'baseline' | 'load' | 'idle' | 'closed';
  /** Whether instance 2 was hanging when the sample was taken. */
  hanging: boolean;
  heapUsed: number;
  rss: number;
  external: number;
  /** `TCPSocketWrap` entries of `process.getActiveResourcesInfo()`: sockets that keep the loop alive. */
  tcpSockets: number;
  /** File descriptors of this process that are sockets (Linux `/proc/self/fd`), ref'd or not. */
  socketFds: number | undefined;
  /** undici connections opened (diagnostics channel `undici:client:connected`) and not yet closed. */
  undiciSockets: number;
  /** `process.getActiveResourcesInfo().length`. */
  handles: number;
  /** The other kinds among them (not `TCPSocketWrap`, not `Timeout`), e.g. `PipeWrap 1, ProcessWrap 1`. */
  otherResources: string;
  /** `Timeout` entries of `process.getActiveResourcesInfo()` (ref'd timers only). */
  timeouts: number;
  /** Live `Timeout` objects on the heap (`v8.queryObjects`), ref'd, unref'd or spent. */
  timeoutObjects: number | undefined;
  /** Live `net.Socket` objects on the heap (`v8.queryObjects`). */
  socketObjects: number | undefined;
  /** `wheelOf(systemClock).size`: entries scheduled in telescope's timer wheel. */
  wheel: number;
  /** Abort listeners on the long-lived signal passed to every `search` call. */
  abortListeners: number;
  /** Calls in flight per `client.stats()` (sum of endpoints' `outstanding`). */
  outstanding: number;
  /** Indexes of the instances ejected per `client.stats()`, e.g. `1` or `1,2`; `–` for none. */
  ejected: string;
  /** Endpoints whose circuit is not closed. */
  circuitsNotClosed: number;
  /** Cumulative since the load started. */
  calls: number;
  ok: number;
  fallbacks: number;
  failures: Record<string, number>;
  unexpected: number;
  retries: number;
  budgetExhausted: number;
  ejections: number;
  connectionsOpened: number;
}

/** A count metric checked for flatness: max of the last third ≤ median of the middle third + slack. */
export interface CountMetric {
  key: keyof Sample;
  label: string;
  slack: number;
  why: string;
}

export interface Check {
  name: string;
  value: string;
  bound: string;
  pass: boolean;
}

export const median = (values: readonly number[]): number => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
};

/** Least-squares slope of `y` over `x`; NaN with fewer than two distinct x. */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2 || ys.length !== n) return Number.NaN;
  const meanX = xs.reduce((sum, x) => sum + x, 0) / n;
  const meanY = ys.reduce((sum, y) => sum + y, 0) / n;
  let covariance = 0;
  let variance = 0;
  for (let index = 0; index < n; index++) {
    const dx = (xs[index] as number) - meanX;
    covariance += dx * ((ys[index] as number) - meanY);
    variance += dx * dx;
  }
  return variance === 0 ? Number.NaN : covariance / variance;
}

/** Splits load samples into warm-up, middle and last thirds (the remainder goes to warm-up). */
export function thirds<T>(samples: readonly T[]): { warmup: T[]; middle: T[]; last: T[] } {
  const third = Math.floor(samples.length / 3);
  const warmupLength = samples.length - 2 * third;
  return {
    warmup: samples.slice(0, warmupLength),
    middle: samples.slice(warmupLength, warmupLength + third),
    last: samples.slice(warmupLength + third),
  };
}

const bars = '▁▂▃▄▅▆▇█';

/** One character per value, scaled between the series' min and max. */
export function sparkline(values: readonly number[]): string {
  const finite = values.filter((value) => Number.isFinite(value));
  if (finite.length === 0) return '';
  const min = Math.min(...finite);
  const max = Math.max(...finite);
  return values
    .map((value) => {
      if (!Number.isFinite(value)) return ' ';
      if (max === min) return bars[0];
      return bars[Math.min(bars.length - 1, Math.floor(((value - min) / (max - min)) * bars.length))];
    })
    .join('');
}

export const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const signedMb = (bytes: number) => `${bytes >= 0 ? '+' : '−'}${(Math.abs(bytes) / 2 ** 20).toFixed(2)}`;
const show = (value: number | undefined) => (value === undefined ? 'n/a' : String(value));

export interface Verdict {
  pass: boolean;
  checks: Check[];
  heapSlopeBytesPerMin: number;
  heapSlopeLastBytesPerMin: number;
  rssSlopeBytesPerMin: number;
}

export interface VerdictInput {
  load: readonly Sample[];
  idle: Sample;
  closed: Sample;
  beforeClient: Sample;
  countMetrics: readonly CountMetric[];
  maxHeapSlopeBytesPerMin: number;
}

/** The soak's verdict: every check must pass. */
export function verdict(input: VerdictInput): Verdict {
  const { middle, last } = thirds(input.load);
  const steady = [...middle, ...last];
  const minutes = (samples: readonly Sample[]) => samples.map((sample) => sample.t / 60);
  const heapSlope = slope(
    minutes(steady),
    steady.map((sample) => sample.heapUsed),
  );
  const heapSlopeLast = slope(
    minutes(last),
    last.map((sample) => sample.heapUsed),
  );
  const rssSlope = slope(
    minutes(steady),
    steady.map((sample) => sample.rss),
  );
  const checks: Check[] = [
    {
      name: 'heap after GC: least-squares slope over the middle and last thirds',
      value: `${signedMb(heapSlope)} MiB/min`,
      bound: `< ${(input.maxHeapSlopeBytesPerMin / 2 ** 20).toFixed(2)} MiB/min`,
      pass: Number.isFinite(heapSlope) && heapSlope < input.maxHeapSlopeBytesPerMin,
    },
  ];
  // Samples taken while instance 2 hangs and samples taken between hangs are two populations
  // (hung calls hold sockets and timers until their budget ends): each is compared with itself.
  const states = [
    { hanging: false, label: 'between hangs' },
    { hanging: true, label: 'during hangs' },
  ];
  for (const metric of input.countMetrics) {
    const values = (samples: readonly Sample[]) => samples.map((sample) => sample[metric.key] as number | undefined);
    if ([...values(middle), ...values(last)].some((value) => value === undefined)) continue;
    const parts: string[] = [];
    let pass = true;
    for (const state of states) {
      const middleValues = values(middle.filter((sample) => sample.hanging === state.hanging)) as number[];
      const lastValues = values(last.filter((sample) => sample.hanging === state.hanging)) as number[];
      if (middleValues.length === 0 || lastValues.length === 0) continue;
      const reference = median(middleValues);
      const peak = Math.max(...lastValues);
      parts.push(`${peak} vs ${reference} (${state.label})`);
      if (peak > reference + metric.slack) pass = false;
    }
    checks.push({
      name: `${metric.label}: max of the last third vs median of the middle third`,
      value: parts.join('; '),
      bound: `≤ median + ${metric.slack}`,
      pass,
    });
  }
  const { idle, closed, beforeClient } = input;
  checks.push(
    {
      name: 'load stopped and idle: calls in flight, timer wheel, undici sockets, abort listeners',
      value: `${idle.outstanding}, ${idle.wheel}, ${idle.undiciSockets}, ${idle.abortListeners}`,
      bound: 'all 0',
      pass: idle.outstanding === 0 && idle.wheel === 0 && idle.undiciSockets === 0 && idle.abortListeners === 0,
    },
    {
      name: 'after client.close(): active handles vs before the client existed',
      value: `${closed.handles} vs ${beforeClient.handles}`,
      bound: '≤ before',
      pass: closed.handles <= beforeClient.handles,
    },
    {
      name: 'errors that are not TelescopeErrors (bugs)',
      value: String(input.load.at(-1)?.unexpected ?? 0),
      bound: '0',
      pass: (input.load.at(-1)?.unexpected ?? 0) === 0,
    },
  );
  return {
    pass: checks.every((check) => check.pass),
    checks,
    heapSlopeBytesPerMin: heapSlope,
    heapSlopeLastBytesPerMin: heapSlopeLast,
    rssSlopeBytesPerMin: rssSlope,
  };
}

/**
 * A markdown table with padded cells, as biome formats it, so a fresh report passes
 * `biome check` as written. `right` marks the right-aligned (numeric) columns.
 */
export function markdownTable(
  header: readonly string[],
  rows: ReadonlyArray<ReadonlyArray<string | number>>,
  right: (column: number) => boolean,
): string {
  const cells = [header, ...rows].map((row) => row.map(String));
  const length = (text: string) => [...text].length;
  const widths = header.map((_, column) => Math.max(3, ...cells.map((row) => length(row[column] ?? ''))));
  const pad = (text: string, column: number) => {
    const fill = ' '.repeat((widths[column] as number) - length(text));
    return right(column) ? fill + text : text + fill;
  };
  const line = (row: readonly string[]) => `| ${row.map((cell, column) => pad(cell, column)).join(' | ')} |`;
  const rule = `| ${widths.map((width, column) => (right(column) ? `${'-'.repeat(width - 1)}:` : '-'.repeat(width))).join(' | ')} |`;
  const [head, ...body] = cells as string[][];
  return [line(head as string[]), rule, ...body.map(line)].join('\n');
}

export function checksTable(checks: readonly Check[]): string {
  return markdownTable(
    ['Check', 'Value', 'Bound', ''],
    checks.map((check) => [check.name, check.value, check.bound, check.pass ? 'pass' : '**FAIL**']),
    (column) => column === 1,
  );
}

const phaseLabel = (sample: Sample) =>
  sample.phase === 'load' ? `${sample.t}` : sample.phase === 'baseline' ? '0 (before load)' : sample.phase;

/** Resource samples, one row each (markdown). */
export function samplesTable(samples: readonly Sample[], warmupEnd: number): string {
  const header = [
    't s',
    'heap MiB',
    'rss MiB',
    'ext MiB',
    'TCPSocketWrap',
    'socket fds',
    'undici sockets',
    'handles',
    'other handles',
    'Timeout',
    'Timeout objs',
    'Socket objs',
    'wheel',
    'abort listeners',
    'in flight',
    'inst 2',
    'ejected',
    'circuits not closed',
  ];
  const rows = samples.map((sample) => {
    const mark = sample.phase === 'load' && sample.t <= warmupEnd ? ' (w)' : '';
    return [
      `${phaseLabel(sample)}${mark}`,
      mb(sample.heapUsed),
      mb(sample.rss),
      mb(sample.external),
      sample.tcpSockets,
      show(sample.socketFds),
      sample.undiciSockets,
      sample.handles,
      sample.otherResources,
      sample.timeouts,
      show(sample.timeoutObjects),
      show(sample.socketObjects),
      sample.wheel,
      sample.abortListeners,
      sample.outstanding,
      sample.hanging ? 'hang' : 'ok',
      sample.ejected,
      sample.circuitsNotClosed,
    ];
  });
  const left = new Set(['t s', 'other handles', 'inst 2']);
  return markdownTable(header, rows, (column) => !left.has(header[column] as string));
}

/** Per interval between load samples: what the callers saw (markdown). */
export function outcomesTable(samples: readonly Sample[], codes: readonly string[]): string {
  const header = [
    'interval s',
    'calls/s',
    'ok',
    'fallback',
    ...codes,
    'retries',
    'budget exhausted',
    'ejections',
    'new conns',
  ];
  const rows: Array<Array<string | number>> = [];
  for (let index = 1; index < samples.length; index++) {
    const previous = samples[index - 1] as Sample;
    const sample = samples[index] as Sample;
    const seconds = sample.t - previous.t;
    rows.push([
      `${previous.t}–${sample.t}`,
      Math.round((sample.calls - previous.calls) / seconds).toLocaleString('en-US'),
      sample.ok - previous.ok,
      sample.fallbacks - previous.fallbacks,
      ...codes.map((code) => (sample.failures[code] ?? 0) - (previous.failures[code] ?? 0)),
      sample.retries - previous.retries,
      sample.budgetExhausted - previous.budgetExhausted,
      sample.ejections - previous.ejections,
      sample.connectionsOpened - previous.connectionsOpened,
    ]);
  }
  return markdownTable(header, rows, (column) => column > 0);
}

/** Sparkline block: one line per metric over the load samples. */
export function sparklines(samples: readonly Sample[]): string {
  const series: Array<[string, (sample: Sample) => number | undefined, (value: number) => string]> = [
    ['heap MiB', (sample) => sample.heapUsed, mb],
    ['rss MiB', (sample) => sample.rss, mb],
    ['TCPSocketWrap', (sample) => sample.tcpSockets, String],
    ['socket fds', (sample) => sample.socketFds, String],
    ['undici sockets', (sample) => sample.undiciSockets, String],
    ['handles', (sample) => sample.handles, String],
    ['Timeout', (sample) => sample.timeouts, String],
    ['Timeout objs', (sample) => sample.timeoutObjects, String],
    ['Socket objs', (sample) => sample.socketObjects, String],
    ['wheel', (sample) => sample.wheel, String],
    ['abort listeners', (sample) => sample.abortListeners, String],
    ['in flight', (sample) => sample.outstanding, String],
  ];
  const lines = series.flatMap(([label, pick, format]) => {
    const values = samples.map(pick);
    if (values.some((value) => value === undefined)) return [];
    const numbers = values as number[];
    const range = `${format(Math.min(...numbers))}–${format(Math.max(...numbers))}`;
    return [`${label.padEnd(16)} ${range.padStart(13)}  ${sparkline(numbers)}`];
  });
  return lines.join('\n');
}

/** One progress line per sample, for the terminal. */
export function progressLine(sample: Sample, previous: Sample | undefined): string {
  const seconds = previous === undefined ? sample.t : sample.t - previous.t;
  const rate = previous === undefined || seconds <= 0 ? 0 : (sample.calls - previous.calls) / seconds;
  const failed = Object.values(sample.failures).reduce((sum, count) => sum + count, 0);
  return (
    `t=${String(sample.t).padStart(4)}s ${Math.round(rate).toString().padStart(6)} calls/s  ` +
    `heap ${mb(sample.heapUsed).padStart(6)} MiB  rss ${mb(sample.rss).padStart(6)} MiB  ` +
    `tcp ${String(sample.tcpSockets).padStart(3)}  fds ${show(sample.socketFds).padStart(3)}  ` +
    `undici ${String(sample.undiciSockets).padStart(3)}  handles ${String(sample.handles).padStart(3)}  ` +
    `Timeout ${sample.timeouts}  wheel ${String(sample.wheel).padStart(4)}  ` +
    `ok ${sample.ok} fb ${sample.fallbacks} failed ${failed}${sample.hanging ? '  [inst 2 hanging]' : ''}`
  );
}
