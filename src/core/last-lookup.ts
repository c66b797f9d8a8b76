/**
 * A lookup by name that keeps its last answer. A client's calls mostly go to one endpoint at a
 * time, and when a process holds many clients (the storm simulator's fleet holds 2,000) a
 * Map's table is a cold cache line or two per call; the same name again reads this object's
 * fields instead. The lookup must answer the same for a name until {@link forget}.
 */
export class LastLookup<V> {
  readonly #lookup: (name: string) => V;
  /** The name of the kept answer; undefined when none is kept. */
  #name: string | undefined = undefined;
  #value: V | undefined = undefined;

  constructor(lookup: (name: string) => V) {
    this.#lookup = lookup;
  }

  get(name: string): V {
    if (name !== this.#name) {
      this.#value = this.#lookup(name);
      this.#name = name;
    }
    return this.#value as V;
  }

  /** Drops the kept answer (the lookup's answers changed). */
  forget(): void {
    this.#name = undefined;
    this.#value = undefined;
  }
}
