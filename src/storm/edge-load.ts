/**
 * The load generator of a real-mode run: requests to the edge instances, round robin, sent
 * open loop (each leaves when the schedule says, whatever the answers do). Counts what was
 * sent, per second of the run, and what was answered.
 */
import { setMaxListeners } from 'node:events';
import { Pool } from 'undici';

export class EdgeLoad {
  /** Requests sent so far. */
  sent = 0;
  /** Requests answered (any status) so far. */
  answered = 0;
  /** Requests sent in each second since `epochMs`. */
  readonly sentBySecond: number[] = [];
  readonly #pools: Pool[];
  readonly #epochMs: number;
  readonly #open = new Set<Promise<void>>();
  // One signal ends every request still open when the run closes the load.
  readonly #abort = new AbortController();

  /** `timeoutMs` bounds each request's headers; bodies are short and unbounded. */
  constructor(edgeUrls: readonly string[], epochMs: number, timeoutMs: number) {
    this.#pools = edgeUrls.map(
      (url) => new Pool(url, { connections: null, headersTimeout: timeoutMs, bodyTimeout: 0 }),
    );
    this.#epochMs = epochMs;
    setMaxListeners(0, this.#abort.signal);
  }

  /** Requests sent and not yet answered. */
  get open(): number {
    return this.#open.size;
  }

  /** Sends one request to the next edge instance. */
  fire(): void {
    const pool = this.#pools[this.sent % this.#pools.length] as Pool;
    this.sent++;
    const second = Math.floor((Date.now() - this.#epochMs) / 1000);
    this.sentBySecond[second] = (this.sentBySecond[second] ?? 0) + 1;
    const pending = pool
      .request({ path: '/work', method: 'GET', signal: this.#abort.signal })
      .then(async (response) => {
        await response.body.dump();
        this.answered++;
      })
      .catch(() => undefined);
    this.#open.add(pending);
    void pending.finally(() => this.#open.delete(pending));
  }

  /** Waits (polling every 250 ms) until every request is answered or `untilMs` (performance.now()) passes. */
  async drain(untilMs: number, onPoll?: () => void): Promise<void> {
    while (this.#open.size > 0 && performance.now() < untilMs) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      onPoll?.();
    }
  }

  /** Aborts what is still open and closes the connections. */
  async close(): Promise<void> {
    this.#abort.abort();
    await Promise.all(this.#pools.map((pool) => pool.destroy()));
  }
}
