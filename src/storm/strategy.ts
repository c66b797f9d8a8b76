/**
 * A storm strategy: how every tier calls the next one. The lab loads the strategy module
 * inside each tier process, so a strategy is plain code of the user's: any client, any
 * settings.
 *
 * @example
 * // my-strategy.ts: telescope-storm --strategies naive,./my-strategy.ts
 * import type { StormStrategy } from 'telescope-http/storm';
 * const strategy: StormStrategy = {
 *   name: 'mine',
 *   description: 'undici, one retry, 500 ms',
 *   createCaller({ tier, targets }) {
 *     return { async call() { ...; return { status: 200 } }, async close() {} };
 *   },
 * };
 * export default strategy;
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TierName } from './types.js';

/** The result of one call to the next tier, as the calling tier answers its own caller. */
export interface CallOutcome {
  /** Status this tier answers with: 200 when the call succeeded, else the failure's status. */
  status: number;
  /** Set when the answer is a fallback rather than the next tier's. */
  fallback?: boolean;
}

/** A tier's client for the next tier. */
export interface TierCaller {
  /** Calls the next tier for one inbound request. Must not throw: failures become statuses. */
  call(inbound: IncomingMessage): Promise<CallOutcome>;
  close(): Promise<void>;
}

export interface CallerContext {
  /** The tier this caller lives in (edge calls middle, middle calls backend). */
  tier: TierName;
  /** URLs of the next tier's instances. */
  targets: string[];
  /** Counts every attempt the caller sends (the lab measures amplification from it). */
  onAttempt(): void;
  /**
   * A failed call answers with a fallback (a topology's `fallback`).
   * @default the strategy's choice (telescope: at the edge)
   */
  fallback?: boolean;
  /** Client settings over the strategy's (a topology's `client`; telescope reads them). */
  client?: Record<string, unknown>;
}

export interface StormStrategy {
  name: string;
  /** One line for the report. */
  description: string;
  createCaller(context: CallerContext): TierCaller | Promise<TierCaller>;
  /**
   * Wraps the tier's request handler (e.g. deadline middleware). `next` runs the tier's work
   * and its call to the next tier.
   */
  serve?(request: IncomingMessage, response: ServerResponse, next: () => void, tier?: TierName): void;
  /** Whether the request is past its own deadline now (for the wasted-work count). */
  expired?(request: IncomingMessage): boolean;
}
