/**
 * Strategies in simulation. `telescope` is the library itself: every simulated instance of a
 * calling tier has its own `createClient` built from the same options as real mode
 * ({@link telescopeClientOptions}), over the simulated network, on the virtual clock. The
 * others are not library code, so they are modelled as the plain loops they are in real
 * mode: `naive` exactly as src/storm/strategies/naive.ts, and p-retry / undici's RetryAgent
 * by their default retry schedules (same instance, backoff, 300 s undici timeouts).
 */
import { parseInstances } from '../../balance/index.js';
import { createClient } from '../../client/index.js';
import type { Instance } from '../../core/call.js';
import type { TimerHandle } from '../../core/clock.js';
import type { ServerLimiter } from '../../server/index.js';
import { deadlineServerDefaults } from '../../server/index.js';
import telescopeStrategy, {
  countingTransport,
  type TelescopeTierClientOptions,
  telescopeClientOptions,
  telescopeFailure,
  telescopeServerLimiter,
  telescopeServerOptions,
  telescopeSuccess,
} from '../strategies/telescope.js';
import type { TopologyClientSettings } from '../topology.js';
import type { VirtualClock } from './clock.js';
import type { Exchange } from './exchange.js';
import type { SimCaller, SimInstance, SimServe, SimTier } from './instance.js';
import { type RawCaller, SimNetwork } from './network.js';

export interface SimCallerContext {
  /** The calling tier and instance. */
  tier: SimTier;
  instance: SimInstance;
  /** The next tier's instances. */
  targets: readonly SimInstance[];
  network: SimNetwork;
  clock: VirtualClock;
  /** Seeded random source of this caller. */
  random: () => number;
  /** Counts every attempt the caller sends. */
  onAttempt(): void;
  /**
   * A failed call answers with a fallback (a topology's `fallback`).
   * @default the strategy's choice (telescope: at the edge; the others: never)
   */
  fallback?: boolean;
  /** telescope client settings over the strategy's (a topology's `client`). */
  client?: TopologyClientSettings;
}

export interface SimStrategy {
  name: string;
  description: string;
  /** How its servers admit requests by deadline (telescope's middleware), if they do. */
  serve?: SimServe;
  /** Makes an instance's concurrency limiter (telescope's `concurrencyLimit`), if it has one. */
  limiter?: (instance: SimInstance, clock: VirtualClock) => ServerLimiter | undefined;
  createCaller(context: SimCallerContext): SimCaller;
}

/** The simulated network whose servers follow `strategy`: its deadline admission and its limiter. */
export function simNetworkFor(clock: VirtualClock, strategy: SimStrategy): SimNetwork {
  const limiterOf = strategy.limiter;
  return new SimNetwork(
    clock,
    strategy.serve,
    undefined,
    limiterOf === undefined ? undefined : (instance) => limiterOf(instance, clock),
  );
}

type Done = (exchange: Exchange, status: number, fallback: boolean) => void;

/** A tier's instances, parsed once for every client that calls the tier (they share them). */
const parsedTiers = new WeakMap<readonly SimInstance[], Instance[]>();

function parsedTargets(targets: readonly SimInstance[]): Instance[] {
  let parsed = parsedTiers.get(targets);
  if (parsed === undefined) {
    parsed = parseInstances(
      targets.map((target) => (target.zone === undefined ? target.url : { url: target.url, zone: target.zone })),
    );
    parsedTiers.set(targets, parsed);
  }
  return parsed;
}

/** telescope: the real client, over the simulated transport and the virtual clock. */
const telescope: SimStrategy = {
  name: 'telescope',
  description: telescopeStrategy.description,
  serve: { ...telescopeServerOptions, headerName: deadlineServerDefaults.headerName },
  limiter: (instance, clock) => telescopeServerLimiter(instance.tier.role, clock),
  createCaller({ tier, instance, targets, network, clock, random, onAttempt, fallback, client: settings }) {
    const role = tier.role === 'edge' ? 'edge' : 'middle';
    const { options } = telescopeClientOptions(role);
    // The edge's client falls back to a degraded answer unless the topology says otherwise.
    const { service } = telescopeClientOptions((fallback ?? role === 'edge') ? 'edge' : 'middle');
    const client = createClient(service, {
      ...options,
      ...(settings as Partial<TelescopeTierClientOptions> | undefined),
      instances: parsedTargets(targets),
      ...(instance.zone === undefined ? {} : { zone: instance.zone }),
      transport: countingTransport(network.transport(), onAttempt),
      clock,
      random,
    });
    return {
      call(inbound, done) {
        // The inbound request's deadline (the middleware's, real mode's ambient one) as the call's.
        const pending = inbound.deadline === undefined ? client.work() : client.work({ deadline: inbound.deadline });
        pending.then(
          (body) => {
            const outcome = telescopeSuccess(body);
            done(inbound, outcome.status, outcome.fallback === true);
          },
          (error: unknown) => done(inbound, telescopeFailure(error).status, false),
        );
      },
      close: () => client.close(),
    };
  },
};

/** One call of a loop-style strategy: attempts over the raw network with its own timeouts. */
abstract class LoopCall implements RawCaller {
  attempts = 0;
  waiting = false;
  current: Exchange | null = null;
  timer: TimerHandle = undefined;
  readonly onTimeout = () => {
    this.timer = undefined;
    if (!this.waiting) return;
    this.waiting = false;
    this.current?.giveUp();
    this.current = null;
    this.failed('timeout', 0);
  };
  readonly retryNow = () => this.send();

  constructor(
    readonly context: SimCallerContext,
    readonly inbound: Exchange,
    readonly done: Done,
    public target: SimInstance,
    readonly timeoutMs: number,
  ) {}

  send(): void {
    this.attempts++;
    this.context.onAttempt();
    this.waiting = true;
    this.current = null;
    const exchange = this.context.network.send(this.target.url, undefined, null, this, null);
    // The answer may already have come (shed at the door): then nothing is pending.
    if (this.waiting) {
      this.current = exchange;
      this.timer = this.context.clock.setTimeout(this.onTimeout, this.timeoutMs);
    }
  }

  onResponse(exchange: Exchange, status: number): void {
    if (!this.settle(exchange)) return;
    if (status === 200) this.done(this.inbound, 200, false);
    else this.failed('status', status);
  }

  onFailure(exchange: Exchange, reason: 'refused' | 'reset'): void {
    if (!this.settle(exchange)) return;
    this.failed(reason, 0);
  }

  /** Takes the answer of the attempt in flight (during send() it is not yet `current`). */
  settle(exchange: Exchange): boolean {
    if (!this.waiting || (this.current !== null && this.current !== exchange)) return false;
    this.waiting = false;
    this.current = null;
    if (this.timer !== undefined) this.context.clock.clearTimeout(this.timer);
    this.timer = undefined;
    return true;
  }

  abstract failed(reason: 'timeout' | 'status' | 'refused' | 'reset', status: number): void;
}

/** naive: 2 retries (3 attempts), 2 s per attempt, a random instance each time (the same one too). */
class NaiveCall extends LoopCall {
  status = 502;
  override failed(reason: 'timeout' | 'status' | 'refused' | 'reset', status: number): void {
    this.status = reason === 'status' ? status : reason === 'timeout' ? 504 : 502;
    if (this.attempts >= 3) {
      this.done(this.inbound, this.status, false);
      return;
    }
    const targets = this.context.targets;
    this.target = targets[Math.floor(this.context.random() * targets.length)] as SimInstance;
    this.send();
  }
}

const naive: SimStrategy = {
  name: 'naive',
  description: '2 retries, 2 s timeout per attempt at every tier, random instance, no budget',
  createCaller(context) {
    const { targets, random } = context;
    return {
      call(inbound, done) {
        const target = targets[Math.floor(random() * targets.length)] as SimInstance;
        new NaiveCall(context, inbound, done, target, 2000).send();
      },
      close: async () => undefined,
    };
  },
};

/** undici's default headers/body timeout: the only limit on one attempt of the peer strategies. */
const UNDICI_TIMEOUT_MS = 300_000;

/** p-retry defaults: 10 retries, backoff 1 s × 2^n, no jitter, the same instance, any failure. */
class PRetryCall extends LoopCall {
  override failed(): void {
    if (this.attempts >= 11) {
      this.done(this.inbound, 502, false);
      return;
    }
    this.context.clock.setTimeout(this.retryNow, 1000 * 2 ** (this.attempts - 1));
  }
}

const pRetry: SimStrategy = {
  name: 'p-retry',
  description: 'p-retry defaults (10 retries, backoff from 1 s) over undici defaults (300 s timeouts), modelled',
  createCaller(context) {
    const { targets, random } = context;
    return {
      call(inbound, done) {
        const target = targets[Math.floor(random() * targets.length)] as SimInstance;
        new PRetryCall(context, inbound, done, target, UNDICI_TIMEOUT_MS).send();
      },
      close: async () => undefined,
    };
  },
};

const retryStatuses = new Set([500, 502, 503, 504, 429]);

/**
 * undici RetryAgent defaults: 5 retries on 500/502/503/504/429 and socket errors (refused,
 * reset), backoff 500 ms × 2^n up to 30 s, the same origin; a timeout is not retried.
 */
class UndiciRetryCall extends LoopCall {
  override failed(reason: 'timeout' | 'status' | 'refused' | 'reset', status: number): void {
    const retryable = reason === 'status' ? retryStatuses.has(status) : reason !== 'timeout';
    if (!retryable || this.attempts > 5) {
      this.done(this.inbound, reason === 'status' && status >= 400 ? status : 502, false);
      return;
    }
    this.context.clock.setTimeout(this.retryNow, Math.min(500 * 2 ** (this.attempts - 1), 30_000));
  }
}

const undiciRetry: SimStrategy = {
  name: 'undici-retry',
  description: 'undici RetryAgent defaults (5 retries, backoff from 500 ms, 300 s timeouts), modelled',
  createCaller(context) {
    const { targets, random } = context;
    return {
      call(inbound, done) {
        const target = targets[Math.floor(random() * targets.length)] as SimInstance;
        new UndiciRetryCall(context, inbound, done, target, UNDICI_TIMEOUT_MS).send();
      },
      close: async () => undefined,
    };
  },
};

/** Strategies the simulator runs, by name. */
export const simStrategies: Readonly<Record<string, SimStrategy>> = Object.freeze({
  naive,
  'p-retry': pRetry,
  'undici-retry': undiciRetry,
  telescope,
});

/** A simulated strategy by name; other names (strategy modules) are real-mode only. */
export function simStrategy(name: string): SimStrategy {
  const strategy = simStrategies[name];
  if (strategy === undefined) {
    throw new Error(
      `strategy ${JSON.stringify(name)} cannot be simulated (simulation runs ${Object.keys(simStrategies).join(', ')}; strategy modules run in real mode only)`,
    );
  }
  return strategy;
}
