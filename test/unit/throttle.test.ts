/**
 * Client-side adaptive throttling on its own (src/throttle): the SRE book's rejection
 * probability over a window of per-second buckets on a manual clock, and its bad options.
 */
import { describe, expect, it } from 'vitest';
import { ErrorCode, Throttle, throttleDefaults } from '../../src/index.js';
import { throttleSettings } from '../../src/throttle/index.js';

const make = (options: Parameters<typeof throttleSettings>[0] = {}) => new Throttle(throttleSettings(options));
/** A random source that never rejects (draws 1 - ε) or always does (draws 0). */
const never = () => 0.999_999;
const always = () => 0;

/** Sends `requests` requests at `now`, the first `accepts` of them accepted, the rest refused. */
function play(throttle: Throttle, now: number, requests: number, accepts: number): void {
  for (let index = 0; index < requests; index++) {
    expect(throttle.admit(now, never)).toBe(true);
    if (index < accepts) throttle.accepted();
    else throttle.refused();
  }
}

describe('throttle: the rejection probability', () => {
  it('is max(0, (requests − k·accepts) / (requests + 1)) over the window', () => {
    const throttle = make({ k: 2, minRequests: 0 });
    play(throttle, 0, 100, 100);
    expect(throttle.rejectProbability(0)).toBe(0);
    // 100 more, none accepted: 200 requests, 100 accepts → (200 − 200) / 201 = 0.
    play(throttle, 0, 100, 0);
    expect(throttle.rejectProbability(0)).toBe(0);
    // 100 more failures: (300 − 200) / 301.
    play(throttle, 0, 100, 0);
    expect(throttle.rejectProbability(0)).toBeCloseTo(100 / 301, 12);
    // k = 1.5 is more aggressive for the same counts.
    const aggressive = make({ k: 1.5, minRequests: 0 });
    play(aggressive, 0, 300, 100);
    expect(aggressive.rejectProbability(0)).toBeCloseTo(150 / 301, 12);
  });

  it('healthy traffic (every request accepted) is never throttled, whatever the volume', () => {
    const throttle = make();
    let rejected = 0;
    for (let second = 0; second < 300; second++) {
      for (let call = 0; call < 50; call++) {
        if (!throttle.admit(second * 1000 + call, always)) rejected++;
        else throttle.accepted();
      }
    }
    expect(rejected).toBe(0);
  });

  it('a dependency that can take 20 of 200 requests a second is sent about k × 20 = 40, not 0 and not 200', () => {
    const throttle = make({ k: 2 });
    let seed = 1;
    const random = () => {
      seed = (seed * 16_807) % 2_147_483_647;
      return seed / 2_147_483_647;
    };
    const sentPerSecond: number[] = [];
    for (let second = 0; second < 300; second++) {
      let sent = 0;
      let accepted = 0;
      for (let call = 0; call < 200; call++) {
        if (!throttle.admit(second * 1000 + call * 5, random)) continue;
        sent++;
        // Overloaded: it accepts its capacity and rejects the rest (503, 429).
        if (accepted < 20) {
          accepted++;
          throttle.accepted();
        } else {
          throttle.refused();
        }
      }
      sentPerSecond.push(sent);
    }
    // Once the 2-minute window holds only the overload, about k × capacity goes out each second.
    const late = sentPerSecond.slice(150);
    const mean = late.reduce((sum, sent) => sum + sent, 0) / late.length;
    expect(mean).toBeGreaterThan(35);
    expect(mean).toBeLessThan(45);
    expect(Math.min(...late)).toBeGreaterThan(20);
  });

  it('a dependency that accepts nothing gets a trickle that shrinks as the window fills, never 0 in the first minute', () => {
    const throttle = make({ k: 2, windowMs: 60_000 });
    let seed = 7;
    const random = () => {
      seed = (seed * 16_807) % 2_147_483_647;
      return seed / 2_147_483_647;
    };
    const sentPerSecond: number[] = [];
    for (let second = 0; second < 60; second++) {
      let sent = 0;
      for (let call = 0; call < 200; call++) {
        if (!throttle.admit(second * 1000 + call * 5, random)) continue;
        sent++;
        throttle.refused();
      }
      sentPerSecond.push(sent);
    }
    // The probability is requests / (requests + 1): about one request per (1 / elapsed) seconds gets through.
    expect(sentPerSecond[0]).toBeGreaterThanOrEqual(20);
    expect(sentPerSecond.slice(1).reduce((sum, sent) => sum + sent, 0)).toBeGreaterThan(0);
    expect(sentPerSecond.slice(1).reduce((sum, sent) => sum + sent, 0)).toBeLessThan(20);
  });

  it('needs minRequests in the window before it throttles at all', () => {
    const throttle = make({ minRequests: 20 });
    play(throttle, 0, 19, 0);
    expect(throttle.rejectProbability(0)).toBe(0);
    play(throttle, 0, 1, 0);
    expect(throttle.rejectProbability(0)).toBeCloseTo(20 / 21, 12);
    // A rejected request counts as a request at once.
    expect(throttle.admit(0, always)).toBe(false);
    expect(throttle.requestCount).toBe(21);
  });

  it('counts a request when it ends: 1,000 calls in flight at once to a fresh client are not throttled', () => {
    const throttle = make();
    for (let call = 0; call < 1000; call++) expect(throttle.admit(0, always)).toBe(true);
    expect(throttle.requestCount).toBe(0);
    for (let call = 0; call < 1000; call++) throttle.accepted();
    expect(throttle.rejectProbability(0)).toBe(0);
  });

  it('draws no random number while the probability is 0', () => {
    const throttle = make();
    let draws = 0;
    const counting = () => {
      draws++;
      return 0.5;
    };
    for (let call = 0; call < 1000; call++) {
      throttle.admit(call, counting);
      throttle.accepted();
    }
    expect(draws).toBe(0);
  });

  it('forgets what leaves the window, one bucket a second', () => {
    const throttle = make({ windowMs: 10_000, minRequests: 0 });
    play(throttle, 0, 100, 0);
    expect(throttle.requestCount).toBe(100);
    expect(throttle.rejectProbability(9_999)).toBeCloseTo(100 / 101, 12);
    // Ten buckets of one second: the first leaves when the 11th second starts.
    expect(throttle.rejectProbability(10_000)).toBe(0);
    expect(throttle.requestCount).toBe(0);
    // A long idle stretch clears everything (and costs at most one pass over the ring).
    play(throttle, 20_000, 50, 0);
    expect(throttle.rejectProbability(1e12)).toBe(0);
  });

  it('reset() empties the window', () => {
    const throttle = make({ minRequests: 0 });
    play(throttle, 0, 10, 3);
    throttle.reset();
    expect(throttle.requestCount).toBe(0);
    expect(throttle.acceptCount).toBe(0);
    expect(throttle.rejectProbability(0)).toBe(0);
  });
});

describe('throttle: options', () => {
  it('defaults to the SRE book: k = 2 over 2 minutes', () => {
    expect(throttleDefaults).toEqual({ k: 2, windowMs: 120_000, minRequests: 20 });
  });

  it.each([
    [{ k: 0.5 }, 'throttle.k', '≥ 1'],
    [{ k: Number.NaN }, 'throttle.k', '≥ 1'],
    [{ k: Number.POSITIVE_INFINITY }, 'throttle.k', '≥ 1'],
    [{ windowMs: 999 }, 'throttle.windowMs', '[1000, 3600000]'],
    [{ windowMs: 4_000_000 }, 'throttle.windowMs', '[1000, 3600000]'],
    [{ minRequests: -1 }, 'throttle.minRequests', '≥ 0'],
    [{ minRequests: 1.5 }, 'throttle.minRequests', '≥ 0'],
  ])('%o → INVALID_OPTION naming %s and %s', (options, name, range) => {
    const error = (() => {
      try {
        throttleSettings(options);
      } catch (caught) {
        return caught as { code: string; message: string };
      }
      throw new Error('accepted');
    })();
    expect(error.code).toBe(ErrorCode.INVALID_OPTION);
    expect(error.message).toContain(name);
    expect(error.message).toContain(range);
  });
});
