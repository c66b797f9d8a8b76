/** A worker thread of a parallel storm simulation (`parallel.ts`). */
import { parentPort, workerData } from 'node:worker_threads';
import { runFollower } from './parallel.js';

// A failure rejects, and an unhandled rejection ends the thread with an 'error' the coordinator reports.
if (parentPort !== null) void runFollower(workerData, parentPort);
