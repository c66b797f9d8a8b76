/**
 * The metrics counted from client events: one entry per metric, shared by the Prometheus
 * exporter and the OpenTelemetry metrics, so both have the same metrics with the same meanings
 * and names that map onto each other (`telescope.retries` ↔ `telescope_retries_total`).
 *
 * Every event a client emits reaches the integrations on the `telescope:client:event`
 * diagnostics channel (`{ service, event, payload }`). A new stat (a new client event) becomes
 * a metric in both by adding one entry here: nothing else to wire.
 *
 * Label values must stay bounded: `service` and `endpoint` are names from the service
 * definitions; every other label takes its value from a fixed list ({@link oneOf}). Instance
 * URLs, keys, paths and ids never become labels.
 */

/** One metric counted (or set) from a client event. */
export interface EventMetric {
  /** OpenTelemetry instrument name. */
  readonly name: string;
  /** Prometheus name, after the prefix (`telescope_` by default). */
  readonly prometheus: string;
  /** `counter`: +1 per event; `gauge`: set to {@link EventMetric.value} per event. */
  readonly kind: 'counter' | 'gauge';
  /** UCUM unit of the OpenTelemetry instrument (`{retry}`, `1`). */
  readonly unit: string;
  readonly description: string;
  /** The client event (`client.on(event)`) it comes from, or the events, for a gauge several events set. */
  readonly event: string | readonly string[];
  /** Prometheus label names. */
  readonly labels: readonly string[];
  /** OpenTelemetry attribute names, in the order of `labels`. */
  readonly attributes: readonly string[];
  /** The label values (in the order of `labels`), or undefined when this event is not counted. */
  labelValues(payload: EventPayload): string[] | undefined;
  /** A gauge's value for this event. */
  value?(payload: EventPayload): number | undefined;
}

/** An event's payload as the catalog reads it: fields are checked before use. */
export type EventPayload = Readonly<Record<string, unknown>>;

/** `value` when it is one of `allowed`, else `_OTHER`: a label never takes free text. */
export function oneOf(value: unknown, allowed: readonly string[]): string {
  return typeof value === 'string' && allowed.includes(value) ? value : '_OTHER';
}

const serviceEndpoint = (payload: EventPayload): string[] | undefined =>
  typeof payload.service === 'string' && typeof payload.endpoint === 'string'
    ? [payload.service, payload.endpoint]
    : undefined;

const SE = ['service', 'endpoint'] as const;
const SE_ATTRIBUTES = ['telescope.service', 'telescope.endpoint'] as const;

/** Value of the breaker state gauge per circuit state. */
export const breakerStateValue = { closed: 0, 'half-open': 1, open: 2 } as const;

export const eventMetrics: readonly EventMetric[] = [
  {
    name: 'telescope.retries',
    prometheus: 'retries_total',
    kind: 'counter',
    unit: '{retry}',
    description: 'Retries started (an attempt after a failed one, on another instance).',
    event: 'retry',
    labels: SE,
    attributes: SE_ATTRIBUTES,
    labelValues: serviceEndpoint,
  },
  {
    name: 'telescope.hedges',
    prometheus: 'hedges_total',
    kind: 'counter',
    unit: '{hedge}',
    description: 'Hedged attempts started (a second attempt while the first is still running).',
    event: 'hedge',
    labels: SE,
    attributes: SE_ATTRIBUTES,
    labelValues: serviceEndpoint,
  },
  {
    name: 'telescope.retry_budget.exhausted',
    prometheus: 'retry_budget_exhausted_total',
    kind: 'counter',
    unit: '{retry}',
    description: 'Retries or hedges not made because the retry budget was spent.',
    event: 'budget-exhausted',
    labels: SE,
    attributes: SE_ATTRIBUTES,
    labelValues: serviceEndpoint,
  },
  {
    name: 'telescope.shed',
    prometheus: 'shed_total',
    kind: 'counter',
    unit: '{call}',
    description: 'Calls the client refused before sending them (bulkhead full, or no slot within the deadline).',
    event: 'shed',
    labels: [...SE, 'reason'],
    attributes: [...SE_ATTRIBUTES, 'telescope.shed.reason'],
    labelValues: (payload) => {
      const labels = serviceEndpoint(payload);
      return labels && [...labels, oneOf(payload.reason, ['full', 'queue-timeout'])];
    },
  },
  {
    name: 'telescope.fallbacks',
    prometheus: 'fallbacks_total',
    kind: 'counter',
    unit: '{call}',
    description: 'Failed calls a fallback answered (outcome success) or tried to and failed (outcome failure).',
    event: 'fallback',
    labels: [...SE, 'outcome'],
    attributes: [...SE_ATTRIBUTES, 'telescope.outcome'],
    labelValues: (payload) => {
      const labels = serviceEndpoint(payload);
      return labels && [...labels, payload.failed === true ? 'failure' : 'success'];
    },
  },
  {
    name: 'telescope.breaker.state',
    prometheus: 'breaker_state',
    kind: 'gauge',
    unit: '1',
    description: 'Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.',
    event: 'breaker',
    labels: SE,
    attributes: SE_ATTRIBUTES,
    labelValues: serviceEndpoint,
    value: (payload) => breakerStateValue[payload.state as keyof typeof breakerStateValue],
  },
  {
    name: 'telescope.breaker.transitions',
    prometheus: 'breaker_transitions_total',
    kind: 'counter',
    unit: '{transition}',
    description: 'Circuit breaker state changes, by the state entered.',
    event: 'breaker',
    labels: [...SE, 'state'],
    attributes: [...SE_ATTRIBUTES, 'telescope.breaker.state'],
    labelValues: (payload) => {
      const labels = serviceEndpoint(payload);
      return labels && [...labels, oneOf(payload.state, ['closed', 'half-open', 'open'])];
    },
  },
  {
    name: 'telescope.ejections',
    prometheus: 'ejections_total',
    kind: 'counter',
    unit: '{ejection}',
    description: 'Instances ejected from balancing by outlier detection, by reason.',
    event: 'eject',
    labels: ['service', 'reason'],
    attributes: ['telescope.service', 'telescope.ejection.reason'],
    labelValues: (payload) =>
      typeof payload.service === 'string'
        ? [payload.service, oneOf(payload.reason, ['consecutive-failures', 'failure-percentage', 'success-rate'])]
        : undefined,
  },
  {
    name: 'telescope.instance.returns',
    prometheus: 'instance_returns_total',
    kind: 'counter',
    unit: '{instance}',
    description:
      'Ejected instances back in rotation: the ejection ran out (expired) or health checks passed (health-check).',
    event: 'return',
    labels: ['service', 'reason'],
    attributes: ['telescope.service', 'telescope.return.reason'],
    labelValues: (payload) =>
      typeof payload.service === 'string'
        ? [payload.service, oneOf(payload.reason, ['expired', 'health-check'])]
        : undefined,
  },
  {
    name: 'telescope.instances.ejected',
    prometheus: 'instances_ejected',
    kind: 'gauge',
    unit: '{instance}',
    description: 'Instances currently ejected by outlier detection.',
    event: ['eject', 'return', 'health'],
    labels: ['service'],
    attributes: ['telescope.service'],
    labelValues: (payload) => (typeof payload.service === 'string' ? [payload.service] : undefined),
    value: (payload) => (typeof payload.ejected === 'number' ? payload.ejected : undefined),
  },
  {
    name: 'telescope.instances.unhealthy',
    prometheus: 'instances_unhealthy',
    kind: 'gauge',
    unit: '{instance}',
    description: 'Instances currently out of rotation for failing active health checks.',
    event: ['eject', 'return', 'health'],
    labels: ['service'],
    attributes: ['telescope.service'],
    labelValues: (payload) => (typeof payload.service === 'string' ? [payload.service] : undefined),
    value: (payload) => (typeof payload.unhealthy === 'number' ? payload.unhealthy : undefined),
  },
  {
    name: 'telescope.cache.lookups',
    prometheus: 'cache_lookups_total',
    kind: 'counter',
    unit: '{call}',
    description:
      'Cached calls by where the answer came from: local or remote tier (hits), service (misses), stale answers, or another call (coalesced).',
    event: 'cache',
    labels: [...SE, 'status'],
    attributes: [...SE_ATTRIBUTES, 'telescope.cache.status'],
    labelValues: (payload) => {
      const labels = serviceEndpoint(payload);
      const status =
        payload.coalesced === true
          ? 'coalesced'
          : oneOf(payload.cacheStatus, ['local', 'remote', 'service', 'stale-while-revalidate', 'stale-if-error']);
      return labels && [...labels, status];
    },
  },
  {
    name: 'telescope.concurrency.limit',
    prometheus: 'concurrency_limit',
    kind: 'gauge',
    unit: '{call}',
    description: "The client bulkhead's concurrency limit now (adaptive: the limit learned from latency and drops).",
    event: 'limit-change',
    labels: ['service'],
    attributes: ['telescope.service'],
    labelValues: (payload) =>
      payload.side === 'client' && typeof payload.name === 'string' ? [payload.name] : undefined,
    value: (payload) =>
      typeof payload.limit === 'number' && Number.isFinite(payload.limit) ? payload.limit : undefined,
  },
];

/**
 * Diagnostics channels other than `telescope:client:event` whose messages count as events of
 * the catalog (`{ channel name: event name }`): the exporters subscribe to each and hand the
 * message to the entries of that event as their payload.
 */
export const channelEvents: Readonly<Record<string, string>> = {
  'telescope:limit:change': 'limit-change',
};

/** {@link eventMetrics} by event name. */
export function eventMetricsByEvent(metrics: readonly EventMetric[] = eventMetrics): Map<string, EventMetric[]> {
  const byEvent = new Map<string, EventMetric[]>();
  for (const metric of metrics) {
    for (const event of typeof metric.event === 'string' ? [metric.event] : metric.event) {
      const list = byEvent.get(event);
      if (list === undefined) byEvent.set(event, [metric]);
      else list.push(metric);
    }
  }
  return byEvent;
}

/** Bucket upper bounds (seconds) of the call duration histograms: 1 ms to 10 s, service calls. */
export const callDurationBuckets: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/** Bucket upper bounds (seconds) the HTTP semantic conventions advise for `http.client.request.duration`. */
export const httpDurationBuckets: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
];
