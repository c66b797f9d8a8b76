/**
 * Response bodies: content codings (decompression, opt-in) and decoding by content type.
 *
 * Not undici's `interceptors.decompress`: it wraps every handler of the dispatcher (an extra
 * object per call even for identity bodies), limits the decoded size only as a stream error,
 * and reports an unknown coding by passing the body through. Here a buffered body is decoded in
 * one zlib call on the thread pool, bounded by `maxOutputLength` (zlib stops as soon as the
 * output passes it, so a bomb costs at most `maxResponseBytes` of work), and a coding the client
 * did not ask for is an `INVALID_RESPONSE`.
 */
import { isUtf8 } from 'node:buffer';
import type { Transform } from 'node:stream';
import zlib from 'node:zlib';

/** A coding zlib decodes, one-shot (buffered bodies) and as a stream (streamed bodies). */
interface Coding {
  readonly once: (body: Buffer, options: zlib.ZlibOptions, callback: zlib.CompressCallback) => void;
  readonly stream: () => Transform;
}

type ZstdZlib = typeof zlib & {
  zstdDecompress?: (body: Buffer, options: object, callback: zlib.CompressCallback) => void;
  createZstdDecompress?: () => Transform;
};
const zstd = zlib as ZstdZlib;

/** HTTP `deflate` is zlib-wrapped (RFC 9110 §8.4.1.2); some servers send raw deflate anyway. */
function inflateEither(body: Buffer, options: zlib.ZlibOptions, callback: zlib.CompressCallback): void {
  // A zlib header: compression method 8, and the first two bytes a multiple of 31.
  const wrapped =
    body.length >= 2 &&
    ((body[0] as number) & 0x0f) === 8 &&
    (((body[0] as number) << 8) | (body[1] as number)) % 31 === 0;
  if (wrapped) zlib.inflate(body, options, callback);
  else zlib.inflateRaw(body, options, callback);
}

const codings = new Map<string, Coding>([
  ['gzip', { once: zlib.gunzip, stream: () => zlib.createGunzip() }],
  ['x-gzip', { once: zlib.gunzip, stream: () => zlib.createGunzip() }],
  ['deflate', { once: inflateEither, stream: () => zlib.createInflate() }],
  ['br', { once: zlib.brotliDecompress, stream: () => zlib.createBrotliDecompress() }],
]);
// zstd where this Node line has it (zlib gained it in Node 23.8 and 22.15).
if (typeof zstd.zstdDecompress === 'function' && typeof zstd.createZstdDecompress === 'function') {
  const once = zstd.zstdDecompress;
  const stream = zstd.createZstdDecompress;
  codings.set('zstd', { once: (body, options, callback) => once(body, options, callback), stream: () => stream() });
}

/** The codings this Node can decode, in the order the client prefers them. */
export const supportedCodings: readonly string[] = ['gzip', 'deflate', 'br', ...(codings.has('zstd') ? ['zstd'] : [])];

/** The `accept-encoding` a client sends with `decompress: true`. */
export const acceptEncoding = supportedCodings.join(', ');

/** More codings than this in one `content-encoding` is an invalid response (undici's limit too). */
const maxCodings = 5;

/**
 * The codings of a `content-encoding` header, in the order they were applied, lower case and
 * without `identity`. Throws when one is not decodable (or `decompress` is off).
 */
export function contentCodings(header: string | string[] | undefined, decompress: boolean): string[] {
  if (header === undefined) return noCodings;
  const value = Array.isArray(header) ? header.join(',') : header;
  if (value === '' || value === 'identity') return noCodings;
  const codingsOfBody: string[] = [];
  for (const part of value.split(',')) {
    const coding = part.trim().toLowerCase();
    if (coding === '' || coding === 'identity') continue;
    if (!decompress || !codings.has(coding)) {
      const shown = JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
      throw new Error(
        decompress
          ? `content-encoding ${shown} was not requested (accept-encoding: ${acceptEncoding})`
          : `content-encoding ${shown} was not requested: the client asked for identity (set decompress: true to accept ${acceptEncoding})`,
      );
    }
    codingsOfBody.push(coding);
  }
  if (codingsOfBody.length > maxCodings) throw new Error(`more than ${maxCodings} content codings`);
  return codingsOfBody;
}
const noCodings: string[] = [];

/** Raised when the decoded body would pass the limit. */
export class DecodedTooLarge extends Error {}

/** Decodes a buffered body (codings undone last-applied first), at most `maxBytes` of output. */
export function decompressBody(body: Buffer, codingsOfBody: readonly string[], maxBytes: number): Promise<Buffer> {
  let pending = Promise.resolve(body);
  for (let index = codingsOfBody.length - 1; index >= 0; index--) {
    const coding = codings.get(codingsOfBody[index] as string) as Coding;
    pending = pending.then(
      (input) =>
        new Promise<Buffer>((resolve, reject) => {
          coding.once(input, { maxOutputLength: maxBytes }, (error, output) => {
            if (error === null) resolve(output);
            else if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
              reject(new DecodedTooLarge(`decoded body exceeds maxResponseBytes (${maxBytes})`));
            } else reject(error);
          });
        }),
    );
  }
  return pending;
}

/** A chain of decoding streams for a streamed body: write to `first`, read from `last`. */
export function decompressStreams(codingsOfBody: readonly string[]): { first: Transform; last: Transform } {
  let first: Transform | undefined;
  let last: Transform | undefined;
  for (let index = codingsOfBody.length - 1; index >= 0; index--) {
    const stage = (codings.get(codingsOfBody[index] as string) as Coding).stream();
    if (last !== undefined) {
      last.pipe(stage);
      // pipe() does not forward errors: a failing inner stage fails the chain's end.
      last.on('error', (error) => stage.destroy(error));
    }
    first ??= stage;
    last = stage;
  }
  return { first: first as Transform, last: last as Transform };
}

const jsonType = /^application\/(?:[\w.+-]+\+)?json\b/i;

/** Decodes a 2xx body by content type: JSON, text, or bytes; empty bodies are `undefined`. */
export function decodeBody(
  body: Buffer,
  contentType: string | string[] | undefined,
  method: string,
  status: number,
): unknown {
  if (body.length === 0 || method === 'HEAD' || status === 204) return undefined;
  const type = Array.isArray(contentType) ? contentType[0] : contentType;
  if (type === undefined) return body;
  if (jsonType.test(type)) {
    if (!isUtf8(body)) throw new Error('JSON body is not valid UTF-8');
    return JSON.parse(body.toString('utf8'));
  }
  if (type.startsWith('text/')) return body.toString('utf8');
  return body;
}
