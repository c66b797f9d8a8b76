/**
 * A lookup by key that keeps its last answer. A client's calls mostly go to one endpoint at a
 * time, and when a process holds many clients (the storm simulator's fleet holds 2,000) a
 * Map's table is a cold cache line or two per call; the same key again reads this object's
 * fields instead. The lookup must answer the same for a key until {@link forget}.
 */
export class LastLookup<K, V> {
  readonly #lookup: (key: K) => V;
  #filled = false;
  #key: K | undefined = undefined;
  #value: V | undefined = undefined;

  constructor(lookup: (key: K) => V) {
    this.#lookup = lookup;
  }

  get(key: K): V {
    if (!this.#filled || key !== this.#key) {
      this.#value = this.#lookup(key);
      this.#key = key;
      this.#filled = true;
    }
    return this.#value as V;
  }

  /** Drops the kept answer (the lookup's answers changed). */
  forget(): void {
    this.#filled = false;
    this.#key = undefined;
    this.#value = undefined;
  }
}
