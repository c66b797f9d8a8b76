/**
 * Summarises a V8 `.cpuprofile` by self time: which functions the CPU was actually in, with
 * telescope's own `src/` functions listed apart from undici, zod and node internals.
 *
 * `node --import tsx bench/overhead/profile.ts <file.cpuprofile> [--top 15] [--requests N]`
 */
import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

/** The parts of the DevTools `Profiler.Profile` this summary reads. */
export interface CpuProfile {
  nodes: Array<{
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  }>;
  /** Microseconds. */
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export type Category =
  | 'telescope src/'
  | 'zod'
  | 'undici'
  | 'other packages'
  | 'node internals'
  | 'socket write (native, incl. syscall)'
  | 'gc'
  | 'bench harness'
  | 'V8/native other';

/**
 * Native string writes to a socket: libuv tries the write() syscall synchronously inside
 * them, so their self time is mostly the kernel's loopback send, which every client pays.
 */
const socketWrites = new Set(['writeLatin1String', 'writeUtf8String', 'writeAsciiString', 'writeBuffer', 'writev']);

export interface FunctionSelfTime {
  name: string;
  /** Path relative to the repository root, or the node: URL. */
  location: string;
  category: Category;
  samples: number;
  /** Share of all non-idle samples. */
  share: number;
  /** Main-thread time spent in the function itself, from samples × the mean sampling interval. */
  selfMicros: number;
}

export interface ProfileSummary {
  /** Non-idle samples: the denominator of every share. */
  busySamples: number;
  /** Of all samples, those where the thread was idle (waiting in the event loop). */
  idleShare: number;
  categories: Array<{ category: Category; samples: number; share: number; selfMicros: number }>;
  functions: FunctionSelfTime[];
}

const repositoryRoot = fileURLToPath(new URL('../../', import.meta.url));

function categorise(url: string, functionName: string): Category {
  if (functionName === '(garbage collector)') return 'gc';
  if (url.includes('/node_modules/zod/')) return 'zod';
  // undici parses HTTP/1.1 with llhttp compiled to WebAssembly, the only wasm in these processes.
  if (url.includes('/node_modules/undici/') || url.startsWith('wasm://')) return 'undici';
  if (url.includes('/node_modules/')) return 'other packages';
  if (url.startsWith('node:')) return 'node internals';
  if (url.startsWith('file://')) {
    const path = fileURLToPath(url);
    if (path.startsWith(`${repositoryRoot}src/`)) return 'telescope src/';
    if (path.startsWith(`${repositoryRoot}bench/`)) return 'bench harness';
  }
  if (url === '' && socketWrites.has(functionName)) return 'socket write (native, incl. syscall)';
  return 'V8/native other';
}

function locate(url: string, lineNumber: number): string {
  if (url === '') return '';
  const path = url.startsWith('file://') ? relative(repositoryRoot, fileURLToPath(url)) : url;
  // The client maps file positions back to the .ts sources before saving (see client.ts).
  return `${path}:${lineNumber + 1}`;
}

/** Self time per function (all nodes of the same function merged), largest first. */
export function summariseProfile(profile: CpuProfile): ProfileSummary {
  const samplesByNode = new Map<number, number>();
  for (const nodeId of profile.samples ?? []) samplesByNode.set(nodeId, (samplesByNode.get(nodeId) ?? 0) + 1);
  const byFunction = new Map<string, FunctionSelfTime>();
  let idleSamples = 0;
  let totalSamples = 0;
  for (const node of profile.nodes) {
    const samples = samplesByNode.get(node.id) ?? 0;
    if (samples === 0) continue;
    totalSamples += samples;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') {
      idleSamples += samples;
      continue;
    }
    const name = functionName === '' ? '(anonymous)' : functionName;
    const location = locate(url, lineNumber);
    const key = `${name}@${location}`;
    const entry = byFunction.get(key);
    if (entry === undefined) {
      byFunction.set(key, {
        name,
        location,
        category: categorise(url, functionName),
        samples,
        share: 0,
        selfMicros: 0,
      });
    } else {
      entry.samples += samples;
    }
  }
  const busySamples = totalSamples - idleSamples;
  // The profiler cannot keep its nominal interval on a busy core; the real one is duration ÷ samples.
  const microsPerSample = totalSamples === 0 ? 0 : (profile.endTime - profile.startTime) / totalSamples;
  const functions = [...byFunction.values()].sort((a, b) => b.samples - a.samples);
  const categoryTotals = new Map<Category, number>();
  for (const entry of functions) {
    entry.share = entry.samples / busySamples;
    entry.selfMicros = entry.samples * microsPerSample;
    categoryTotals.set(entry.category, (categoryTotals.get(entry.category) ?? 0) + entry.samples);
  }
  const categories = [...categoryTotals.entries()]
    .map(([category, samples]) => ({
      category,
      samples,
      share: samples / busySamples,
      selfMicros: samples * microsPerSample,
    }))
    .sort((a, b) => b.samples - a.samples);
  return { busySamples, idleShare: totalSamples === 0 ? 0 : idleSamples / totalSamples, categories, functions };
}

const percent = (share: number) => `${(share * 100).toFixed(1)}%`;

/**
 * Markdown: the category split, the top functions overall, and the top telescope `src/`
 * functions. With `requests` (how many the profiled phase made), each row also gets its
 * main-thread self time per request.
 */
export function formatProfileSummary(
  summary: ProfileSummary,
  options: { top?: number; requests?: number } = {},
): string {
  const top = options.top ?? 15;
  const requests = options.requests;
  const perRequest = (micros: number) => (requests === undefined ? '' : ` ${(micros / requests).toFixed(2)} |`);
  const perRequestHeader = requests === undefined ? '' : ' µs/req |';
  const perRequestAlign = requests === undefined ? '' : ' ---: |';
  const lines: string[] = [];
  lines.push(
    `Busy samples: ${summary.busySamples} (idle ${percent(summary.idleShare)} of all samples). ` +
      'Shares are of busy samples; µs/req is main-thread self time per request.',
    '',
    `| Where | Self time |${perRequestHeader}`,
    `| --- | ---: |${perRequestAlign}`,
    ...summary.categories.map(
      (entry) => `| ${entry.category} | ${percent(entry.share)} |${perRequest(entry.selfMicros)}`,
    ),
    '',
    `Top ${top} functions by self time (all code):`,
    '',
    `| Function | Location | Category | Self |${perRequestHeader}`,
    `| --- | --- | --- | ---: |${perRequestAlign}`,
    ...summary.functions
      .slice(0, top)
      .map(
        (entry) =>
          `| \`${entry.name}\` | ${entry.location} | ${entry.category} | ${percent(entry.share)} |${perRequest(entry.selfMicros)}`,
      ),
    '',
    `Top ${top} telescope \`src/\` functions by self time:`,
    '',
    `| Function | Location | Self |${perRequestHeader}`,
    `| --- | --- | ---: |${perRequestAlign}`,
    ...summary.functions
      .filter((entry) => entry.category === 'telescope src/')
      .slice(0, top)
      .map(
        (entry) => `| \`${entry.name}\` | ${entry.location} | ${percent(entry.share)} |${perRequest(entry.selfMicros)}`,
      ),
  );
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '15' }, requests: { type: 'string' } },
  });
  const path = positionals[0];
  if (path === undefined) throw new Error('usage: profile.ts <file.cpuprofile> [--top N] [--requests N]');
  const profile = JSON.parse(await readFile(path, 'utf8')) as CpuProfile;
  const requests = values.requests === undefined ? undefined : Number(values.requests);
  console.log(formatProfileSummary(summariseProfile(profile), { top: Number(values.top), requests }));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
