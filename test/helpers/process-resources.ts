/**
 * What a process holds open, for leak checks (test/hardening, the integration tests) and the
 * soak benchmark: Node's active resources by kind, the sockets among its file descriptors, and
 * the connections undici opened and has not closed.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { Socket } from 'node:net';

/** Node's active resources of one kind (`TCPSocketWrap`, `Timeout`, ...) in this process. */
export function activeCount(kind: string): number {
  let count = 0;
  for (const name of process.getActiveResourcesInfo()) if (name === kind) count++;
  return count;
}

/** Node's active resources in this process, counted by kind. */
export function activeResources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const kind of process.getActiveResourcesInfo()) counts[kind] = (counts[kind] ?? 0) + 1;
  return counts;
}

/** Sockets among this process's file descriptors (Linux); undefined elsewhere. */
export function socketFds(): number | undefined {
  let entries: string[];
  try {
    entries = readdirSync('/proc/self/fd');
  } catch {
    return undefined;
  }
  let count = 0;
  for (const fd of entries) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:')) count++;
    } catch {
      // closed between readdir and readlink (readdir's own descriptor)
    }
  }
  return count;
}

/** Counts every connection undici opens in this process, ref'd or not, until its socket closes. */
export interface UndiciSockets {
  /** Open now. */
  readonly open: number;
  /** Opened since the start or the last `resetOpened()`. */
  readonly opened: number;
  resetOpened(): void;
}

export function trackUndiciSockets(): UndiciSockets {
  let open = 0;
  let opened = 0;
  diagnosticsChannel.subscribe('undici:client:connected', (message) => {
    const socket = (message as { socket?: Socket }).socket;
    if (socket === undefined) return;
    open++;
    opened++;
    socket.once('close', () => open--);
  });
  return {
    get open() {
      return open;
    },
    get opened() {
      return opened;
    },
    resetOpened() {
      opened = 0;
    },
  };
}

/** Whether process `pid` is running (Linux): a killed process nobody has reaped yet, a zombie, is not. */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * The storm lab's tier and service processes among the direct children of process `parent`
 * (Linux /proc); only those (tsx has a child of its own).
 */
export function stormTierPids(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent && readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('storm/tier')) {
        pids.push(Number(entry));
      }
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}
