import { describe, expect, it } from 'vitest';
import { TimerWheel, type WheelEntry } from '../../src/index.js';
import { manualClock } from '../helpers/clock.js';

function entry(log: string[], name: string): WheelEntry {
  return {
    wheelSlot: -1,
    wheelPrev: null,
    wheelNext: null,
    onTimer: () => log.push(name),
  };
}

describe('TimerWheel', () => {
  it('fires entries in time order, never early, at most one resolution late', () => {
    const clock = manualClock(0);
    const wheel = new TimerWheel(clock, 5);
    const log: string[] = [];
    wheel.schedule(entry(log, 'b'), 100);
    wheel.schedule(entry(log, 'a'), 50);
    wheel.schedule(entry(log, 'c'), 101);
    clock.advance(49);
    expect(log).toEqual([]);
    clock.advance(1);
    expect(log).toEqual(['a']);
    clock.advance(50);
    expect(log).toEqual(['a', 'b']);
    // 101 rounds up to the 105 slot: late by less than the resolution, never early.
    clock.advance(4);
    expect(log).toEqual(['a', 'b']);
    clock.advance(1);
    expect(log).toEqual(['a', 'b', 'c']);
    expect(wheel.size).toBe(0);
  });

  it('uses one native timer however many entries are scheduled', () => {
    const clock = manualClock(0);
    const wheel = new TimerWheel(clock, 5);
    const log: string[] = [];
    for (let index = 0; index < 1000; index++) wheel.schedule(entry(log, String(index)), 1000 + index);
    expect(clock.pending()).toBe(1);
    expect(wheel.size).toBe(1000);
    clock.advance(2000);
    expect(log).toHaveLength(1000);
    expect(clock.pending()).toBe(0);
  });

  it('cancel removes an entry from anywhere in its slot; cancelled entries never fire', () => {
    const clock = manualClock(0);
    const wheel = new TimerWheel(clock, 10);
    const log: string[] = [];
    const entries = ['a', 'b', 'c', 'd'].map((name) => entry(log, name));
    for (const item of entries) wheel.schedule(item, 20);
    wheel.cancel(entries[0]!);
    wheel.cancel(entries[2]!);
    wheel.cancel(entries[2]!); // twice is harmless
    expect(wheel.size).toBe(2);
    clock.advance(20);
    expect(log.sort()).toEqual(['b', 'd']);
  });

  it('re-arms for an earlier entry and skips slots emptied by cancel', () => {
    const clock = manualClock(0);
    const wheel = new TimerWheel(clock, 5);
    const log: string[] = [];
    const late = entry(log, 'late');
    wheel.schedule(late, 500);
    wheel.schedule(entry(log, 'early'), 10);
    clock.advance(10);
    expect(log).toEqual(['early']);
    wheel.cancel(late);
    expect(wheel.size).toBe(0);
    // The armed timer fires once for the emptied slot, does nothing, and is not re-armed.
    clock.advance(490);
    expect(log).toEqual(['early']);
    expect(clock.pending()).toBe(0);
  });

  it('rescheduling an entry moves it', () => {
    const clock = manualClock(0);
    const wheel = new TimerWheel(clock, 5);
    const log: string[] = [];
    const moving = entry(log, 'x');
    wheel.schedule(moving, 10);
    wheel.schedule(moving, 100);
    clock.advance(50);
    expect(log).toEqual([]);
    clock.advance(50);
    expect(log).toEqual(['x']);
  });

  it('a throwing entry does not stop the others', async () => {
    const clock = manualClock(0);
    const wheel = new TimerWheel(clock, 5);
    const log: string[] = [];
    const thrown: unknown[] = [];
    const listener = (error: unknown) => thrown.push(error);
    process.on('uncaughtException', listener);
    try {
      wheel.schedule(
        {
          wheelSlot: -1,
          wheelPrev: null,
          wheelNext: null,
          onTimer: () => {
            throw new Error('boom');
          },
        },
        10,
      );
      wheel.schedule(entry(log, 'ok'), 10);
      clock.advance(10);
      expect(log).toEqual(['ok']);
      await new Promise((resolve) => setImmediate(resolve));
      expect(thrown).toHaveLength(1);
    } finally {
      process.off('uncaughtException', listener);
    }
  });
});
