import { describe, expectTypeOf, it } from 'vitest';
import { z } from 'zod';
import {
  type CallOptions,
  type ClientOptions,
  createClient,
  defineService,
  endpoint,
  type RawBody,
  type ResponseOf,
  type StreamResponse,
  type TlsOptions,
} from '../../src/index.js';

const files = defineService({
  name: 'files',
  endpoints: {
    download: endpoint({
      method: 'GET',
      path: '/files/:id',
      params: z.object({ id: z.string() }),
      responseType: 'stream',
    }),
    upload: endpoint({ method: 'PUT', path: '/files/:id', params: z.object({ id: z.string() }), body: 'raw' }),
    meta: endpoint({ method: 'GET', path: '/meta', response: z.object({ size: z.number() }) }),
  },
});
const client = createClient(files, {
  instances: ['https://127.0.0.1:1'],
  tls: { ca: 'PEM', cert: Buffer.from('PEM'), key: 'PEM', servername: 'files.internal', minVersion: 'TLSv1.3' },
  http2: true,
  decompress: true,
});

describe('transport types', () => {
  it('a stream endpoint resolves to a StreamResponse with a web ReadableStream body', () => {
    expectTypeOf(client.download({ id: 'a' })).resolves.toEqualTypeOf<StreamResponse>();
    expectTypeOf<StreamResponse['body']>().toEqualTypeOf<ReadableStream<Uint8Array>>();
    expectTypeOf<ResponseOf<typeof files.endpoints.download>>().toEqualTypeOf<StreamResponse>();
    expectTypeOf(client.meta()).resolves.toEqualTypeOf<{ size: number }>();
  });

  it('a raw body endpoint takes a RawBody', () => {
    expectTypeOf(client.upload).parameters.toEqualTypeOf<
      [params: { id: string }, body: RawBody, options?: CallOptions]
    >();
    expectTypeOf<RawBody>().toEqualTypeOf<string | Uint8Array | URLSearchParams | ReadableStream<Uint8Array>>();
    // @ts-expect-error a raw body is not an object to serialize
    client.upload({ id: 'a' }, { name: 'x' });
  });

  it('tls, http2 and decompress options', () => {
    expectTypeOf<ClientOptions['tls']>().toEqualTypeOf<TlsOptions | undefined>();
    expectTypeOf<TlsOptions['minVersion']>().toEqualTypeOf<'TLSv1.2' | 'TLSv1.3' | undefined>();
    expectTypeOf<TlsOptions['insecureSkipVerify']>().toEqualTypeOf<boolean | undefined>();
    expectTypeOf<ClientOptions['http2']>().toEqualTypeOf<boolean | undefined>();
    expectTypeOf<ClientOptions['decompress']>().toEqualTypeOf<boolean | undefined>();
    // @ts-expect-error TLS 1.1 is not offered
    createClient(files, { instances: [], tls: { minVersion: 'TLSv1.1' } });
  });
});
