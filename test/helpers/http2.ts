/**
 * node:http2 test servers on 127.0.0.1: h2c (prior knowledge) or TLS with ALPN, driven at the
 * stream level so that a test can refuse a stream, reset it mid-body or send GOAWAY. Sessions
 * are counted (how many connections the client made) and all closed with the test.
 */
import {
  createSecureServer,
  createServer,
  type Http2Server,
  type Http2Session,
  type IncomingHttpHeaders,
  type SecureServerOptions,
  type ServerHttp2Stream,
  type Settings,
} from 'node:http2';
import type { Server as NetServer } from 'node:net';
import { onTestFinished } from 'vitest';
import { type Listening, listenOnLoopback } from './server.js';

export type StreamHandler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, body: Buffer) => void;

export interface Http2TestServer extends Listening {
  /** Streams whose request reached the handler (body read), in order. */
  readonly streams: Array<{ method: string; path: string; body: string }>;
  /** Sessions (connections) opened so far. */
  readonly sessionsOpened: () => number;
  /** Sessions open now. */
  readonly openSessions: () => number;
  /** How each closed stream ended: its RST_STREAM code (0 for a normal end). */
  readonly resets: number[];
}

/** An h2c server (`tls` absent) or an h2 server over TLS (HTTP/1.1 allowed with `allowHttp1`). */
export async function startHttp2Server(
  handler: StreamHandler,
  options: { tls?: SecureServerOptions; allowHttp1?: boolean; settings?: Settings } = {},
): Promise<Http2TestServer> {
  const streams: Http2TestServer['streams'] = [];
  const resets: number[] = [];
  const sessions = new Set<Http2Session>();
  let opened = 0;
  const server: Http2Server =
    options.tls === undefined
      ? createServer({ settings: options.settings ?? {} })
      : createSecureServer({
          ...options.tls,
          allowHTTP1: options.allowHttp1 ?? false,
          settings: options.settings ?? {},
        });
  server.on('session', (session) => {
    opened++;
    sessions.add(session);
    session.on('error', () => {});
    session.once('close', () => sessions.delete(session));
  });
  server.on('stream', (stream, headers) => {
    // Resets are what several tests are about: keep them off the process's error output.
    stream.on('error', () => {});
    stream.once('close', () => resets.push(stream.rstCode ?? -1));
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      // A request the client reset part-way is not handled (Node ends the readable side on a reset).
      if (stream.rstCode !== undefined && stream.rstCode !== 0) return;
      const body = Buffer.concat(chunks);
      streams.push({
        method: String(headers[':method']),
        path: String(headers[':path']),
        body: body.toString('utf8'),
      });
      handler(stream, headers, body);
    });
  });
  const listening = await listenOnLoopback(server as unknown as NetServer);
  const close = () => {
    for (const session of sessions) session.destroy();
    return listening.close();
  };
  onTestFinished(close);
  return {
    ...listening,
    close,
    url: `${options.tls === undefined ? 'http' : 'https'}://127.0.0.1:${listening.port}`,
    streams,
    sessionsOpened: () => opened,
    resets,
    openSessions: () => sessions.size,
  };
}

/** Answers 200 with a JSON body. */
export function respondJson(stream: ServerHttp2Stream, value: unknown): void {
  if (stream.destroyed) return;
  stream.respond({ ':status': 200, 'content-type': 'application/json' });
  stream.end(JSON.stringify(value));
}
