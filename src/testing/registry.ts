/**
 * Everything the kit starts is registered here until it is closed, so `closeAll()` (one
 * `afterEach(closeAll)` in a setup file, with any test runner) can close what a test forgot.
 */

/** Something the kit started. */
export interface Closable {
  close(): Promise<void>;
}

const open = new Set<Closable>();

/** @internal */
export function track(resource: Closable): void {
  open.add(resource);
}

/** @internal */
export function untrack(resource: Closable): void {
  open.delete(resource);
}

/** Closes every fake, instance group and chaos proxy still open. */
export async function closeAll(): Promise<void> {
  const all = [...open];
  open.clear();
  await Promise.all(all.map((resource) => resource.close()));
}

/** How many fakes, instance groups and chaos proxies are open (0 after `closeAll()`). */
export function openResources(): number {
  return open.size;
}
