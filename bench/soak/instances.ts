/**
 * The soak's three instances of the movie service, in their own process so that the client
 * process's heap, sockets, handles and timers are only the client's.
 *
 * - instance 0: healthy;
 * - instance 1: `chaos({ errorRate })`, 503 for that share of its requests;
 * - instance 2: healthy, except that it hangs every request for `hangForMs` once every
 *   `hangEveryMs`, driven by this process's own timer.
 *
 * Started by `run.ts` (`fork`): reports `{ kind: 'ready', urls }` over IPC, starts the faults
 * on `{ kind: 'start', plan }`, answers `{ kind: 'counts' }` with server-side counts. Exits when
 * the runner goes away (IPC disconnect, even after a SIGKILL of the runner), on SIGINT/SIGTERM,
 * or after `--max-seconds` whatever happens.
 */
import { parseArgs } from 'node:util';
import { startInstances } from '../../src/testing/index.js';
import { type ChaosPlan, handlers, type InstancesMessage, movies, type RunnerMessage } from './service.js';

const { values } = parseArgs({ options: { 'max-seconds': { type: 'string', default: '7200' } } });
const maxSeconds = Number(values['max-seconds']);
if (!(Number.isFinite(maxSeconds) && maxSeconds > 0)) throw new Error('--max-seconds must be a positive number');

const send = (message: InstancesMessage) => {
  if (process.connected) process.send?.(message);
};

const group = await startInstances(movies, handlers, { count: 3, host: '127.0.0.1' });
const timers = new Set<ReturnType<typeof setTimeout>>();
let hangPhases = 0;
let exiting = false;

const exit = (code: number) => {
  if (exiting) return;
  exiting = true;
  for (const timer of timers) clearTimeout(timer);
  // Never wait long for a clean close: a child must not outlive its runner.
  setTimeout(() => process.exit(code), 2000).unref();
  void group.close().finally(() => process.exit(code));
};

/** One-shot timer this process keeps track of, so `exit` can clear every pending one. */
const after = (ms: number, run: () => void) => {
  const timer = setTimeout(() => {
    timers.delete(timer);
    run();
  }, ms);
  timers.add(timer);
};

function startChaos(plan: ChaosPlan): void {
  void group.instance(1).chaos({ errorRate: plan.errorRate, seed: plan.seed });
  const hangAt = (delayMs: number) =>
    after(delayMs, () => {
      hangPhases++;
      void group.instance(2).chaos({ hang: true });
      send({ kind: 'hang', hanging: true });
      after(plan.hangForMs, () => {
        void group.instance(2).chaos();
        send({ kind: 'hang', hanging: false });
      });
      hangAt(plan.hangEveryMs);
    });
  hangAt(plan.firstHangAfterMs);
}

process.on('message', (message: RunnerMessage) => {
  if (message.kind === 'start') startChaos(message.plan);
  else if (message.kind === 'counts') {
    send({
      kind: 'counts',
      hangPhases,
      instances: group.requests().map((counts, index) => ({
        url: counts.url,
        total: counts.total,
        byStatus: { ...counts.byStatus },
        faults: { ...counts.faults },
        openConnections: group.instance(index).openConnections(),
      })),
    });
  }
});
process.once('disconnect', () => exit(0));
process.once('SIGINT', () => exit(130));
process.once('SIGTERM', () => exit(143));
setTimeout(() => {
  console.error(`soak instances: --max-seconds ${maxSeconds} reached, exiting`);
  exit(1);
}, maxSeconds * 1000).unref();

if (process.send === undefined) {
  console.log(JSON.stringify({ kind: 'ready', urls: group.instances }));
  console.error('soak instances: no IPC channel (run by hand); Ctrl-C to stop. Faults start only under run.ts.');
} else {
  send({ kind: 'ready', urls: [...group.instances] });
}
