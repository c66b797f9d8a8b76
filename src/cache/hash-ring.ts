/**
 * Consistent hashing (ketama's scheme): each server owns 160 × weight points on a 32-bit ring,
 * four points per MD5 digest of `host:port-i`; a key belongs to the first point at or after the
 * first four bytes (little-endian) of its MD5. Adding or removing a server moves only the keys
 * of the points it gains or loses, about 1/n of them.
 */
import { createHash } from 'node:crypto';

/** Points per server of weight 1 (ketama's 40 digests × 4). */
export const POINTS_PER_SERVER = 160;

/** A consistent-hash ring over named servers. */
export class HashRing<T extends { readonly name: string; readonly weight: number }> {
  readonly #points: Uint32Array;
  readonly #owners: T[];
  readonly servers: readonly T[];

  constructor(servers: readonly T[]) {
    this.servers = servers;
    const points: Array<{ point: number; owner: T }> = [];
    for (const server of servers) {
      const digests = Math.max(1, Math.round((POINTS_PER_SERVER / 4) * server.weight));
      for (let index = 0; index < digests; index++) {
        const digest = createHash('md5').update(`${server.name}-${index}`).digest();
        for (let part = 0; part < 4; part++) points.push({ point: digest.readUInt32LE(part * 4), owner: server });
      }
    }
    // Ties (vanishingly rare) are broken by server name so every process builds the same ring.
    points.sort((a, b) => a.point - b.point || (a.owner.name < b.owner.name ? -1 : 1));
    this.#points = Uint32Array.from(points, (entry) => entry.point);
    this.#owners = points.map((entry) => entry.owner);
  }

  /** The server that owns `key`. */
  serverFor(key: string): T {
    if (this.servers.length === 1) return this.servers[0] as T;
    const hash = createHash('md5').update(key).digest().readUInt32LE(0);
    const points = this.#points;
    let low = 0;
    let high = points.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if ((points[middle] as number) < hash) low = middle + 1;
      else high = middle;
    }
    return this.#owners[low === points.length ? 0 : low] as T;
  }
}
