/**
 * Driving a simulated network as real mode drives its processes: the warm-up, the backend
 * tier's measured capacity, and virtual time through the load and the drain.
 */

import type { VirtualClock } from './clock.js';
import type { SimInstance } from './instance.js';
import type { RawCaller, SimNetwork } from './network.js';

/** The load generator's end of its connections: counts answers. */
export class Load implements RawCaller {
  sent = 0;
  answered = 0;
  settled = 0;
  onResponse(): void {
    this.answered++;
    this.settled++;
  }
  onFailure(): void {
    this.settled++;
  }
}

/** Real mode's warm-up: 10 callers, 5 requests each one after another (closed loop). */
export async function warmUp(clock: VirtualClock, network: SimNetwork, edges: readonly SimInstance[]): Promise<void> {
  let open = 0;
  const worker = (index: number) => {
    let round = 0;
    const caller: RawCaller = {
      onResponse: () => next(),
      onFailure: () => next(),
    };
    const next = () => {
      if (round === 5) {
        open--;
        return;
      }
      const edge = edges[(index + round) % edges.length] as SimInstance;
      round++;
      network.send(edge.url, undefined, null, caller, null);
    };
    open++;
    next();
  };
  for (let index = 0; index < 10; index++) worker(index);
  const limit = clock.now() + 5000;
  while (open > 0 && clock.now() < limit) await clock.advanceTo(clock.now() + 50);
}

/**
 * The backend tier's capacity: a closed loop straight to its instances (twice as many callers
 * as they have slots, each sending again as soon as it is answered) for 2 virtual seconds;
 * successful answers per second over the last 1.5 s.
 */
export async function measureCapacity(
  clock: VirtualClock,
  network: SimNetwork,
  backends: readonly SimInstance[],
): Promise<number> {
  let ok = 0;
  let counting = false;
  let running = true;
  const callers = backends.reduce((n, backend) => n + 2 * backend.tier.capacity.maxConcurrent, 0);
  for (let index = 0; index < callers; index++) {
    const target = backends[index % backends.length] as SimInstance;
    const caller: RawCaller = {
      onResponse: (_exchange, status) => {
        if (counting && status === 200) ok++;
        // A refused request would come back at once; a short pause keeps the loop bounded.
        if (running) clock.setTimeout(send, status === 200 ? 0 : 1);
      },
      onFailure: () => {
        if (running) clock.setTimeout(send, 1);
      },
    };
    const send = () => {
      network.send(target.url, undefined, null, caller, null);
    };
    send();
  }
  const start = clock.now();
  await clock.advanceTo(start + 500);
  counting = true;
  await clock.advanceTo(start + 2000);
  counting = false;
  running = false;
  // Let the loop's last answers come back before the run starts.
  await clock.advanceTo(clock.now() + 500);
  for (const backend of backends) backend.counters.received = 0;
  return ok / 1.5;
}

/**
 * Runs virtual time through the load, reporting progress every second, then drains: until every
 * request is answered or `drainS` has passed, looking every 250 ms as real mode does.
 */
export async function runLoadAndDrain(
  clock: VirtualClock,
  epoch: number,
  durationS: number,
  drainS: number,
  load: Load,
  progress: (elapsedS: number) => void,
): Promise<void> {
  const loadEnd = epoch + durationS * 1000;
  for (let second = 1; epoch + second * 1000 <= loadEnd; second++) {
    await clock.advanceTo(epoch + second * 1000);
    progress(second);
  }
  await clock.advanceTo(loadEnd);
  // Drain: wait for answers, bounded, looking every 250 ms as real mode does.
  const drainEnd = loadEnd + drainS * 1000;
  let reported = Math.floor(durationS);
  while (load.sent - load.settled > 0 && clock.now() < drainEnd) {
    await clock.advanceTo(Math.min(drainEnd, clock.now() + 250));
    const elapsedS = Math.floor((clock.now() - epoch) / 1000);
    if (elapsedS > reported) {
      reported = elapsedS;
      progress(elapsedS);
    }
  }
}
