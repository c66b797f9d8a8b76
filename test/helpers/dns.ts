import { createSocket, type RemoteInfo } from 'node:dgram';
import { onTestFinished } from 'vitest';

/** How the responder answers the next queries. */
export type DnsMode = 'answer' | 'servfail' | 'refused' | 'drop';

/** A tiny authoritative DNS responder over UDP on 127.0.0.1, for one test. */
export interface TestDns {
  /** `127.0.0.1:port`, for `dnsDiscovery({ servers })`. */
  readonly server: string;
  readonly port: number;
  /** A records by lower-case name; edit it to change the answers. */
  readonly records: Map<string, string[]>;
  /** Queries received, in order. */
  readonly queries: Array<{ name: string; type: number }>;
  mode: DnsMode;
  close(): Promise<void>;
}

const TYPE_A = 1;
const RCODE_NOERROR = 0;
const RCODE_SERVFAIL = 2;
const RCODE_NXDOMAIN = 3;
const RCODE_REFUSED = 5;

/** Reads the question of a query: name, type, and where the question section ends. */
function parseQuestion(query: Buffer): { name: string; type: number; end: number } | undefined {
  if (query.length < 12 || query.readUInt16BE(4) < 1) return undefined;
  const labels: string[] = [];
  let offset = 12;
  for (;;) {
    const length = query[offset];
    if (length === undefined || length > 63) return undefined; // no compression in questions
    offset++;
    if (length === 0) break;
    if (offset + length > query.length) return undefined;
    labels.push(query.toString('latin1', offset, offset + length));
    offset += length;
  }
  if (offset + 4 > query.length) return undefined;
  return { name: labels.join('.').toLowerCase(), type: query.readUInt16BE(offset), end: offset + 4 };
}

function response(query: Buffer, questionEnd: number, rcode: number, addresses: readonly string[]): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(query.readUInt16BE(0), 0); // id
  const recursionDesired = query.readUInt16BE(2) & 0x0100;
  // QR, AA, RD copied, RA, rcode
  header.writeUInt16BE(0x8000 | 0x0400 | recursionDesired | 0x0080 | rcode, 2);
  header.writeUInt16BE(1, 4); // QDCOUNT
  header.writeUInt16BE(addresses.length, 6); // ANCOUNT
  const answers = addresses.map((address) => {
    const answer = Buffer.alloc(16);
    answer.writeUInt16BE(0xc00c, 0); // name: pointer to the question's name
    answer.writeUInt16BE(TYPE_A, 2);
    answer.writeUInt16BE(1, 4); // class IN
    answer.writeUInt32BE(0, 6); // TTL 0: never cached by c-ares
    answer.writeUInt16BE(4, 10);
    address.split('.').forEach((part, index) => {
      answer[12 + index] = Number(part);
    });
    return answer;
  });
  return Buffer.concat([header, query.subarray(12, questionEnd), ...answers]);
}

/**
 * Starts the responder on 127.0.0.1:0. Answers A queries for names in `records`; other names
 * get NXDOMAIN, other types an empty NOERROR. `mode` switches to SERVFAIL, REFUSED or no
 * answer at all. Closed when the current test finishes, or earlier through `close()`.
 */
export async function startDns(records: Record<string, string[]> = {}): Promise<TestDns> {
  const socket = createSocket('udp4');
  const state: TestDns = {
    server: '',
    port: 0,
    records: new Map(Object.entries(records).map(([name, addresses]) => [name.toLowerCase(), addresses])),
    queries: [],
    mode: 'answer',
    close,
  };
  socket.on('message', (query: Buffer, remote: RemoteInfo) => {
    const question = parseQuestion(query);
    if (question === undefined) return;
    state.queries.push({ name: question.name, type: question.type });
    if (state.mode === 'drop') return;
    let reply: Buffer;
    if (state.mode === 'servfail') reply = response(query, question.end, RCODE_SERVFAIL, []);
    else if (state.mode === 'refused') reply = response(query, question.end, RCODE_REFUSED, []);
    else {
      const addresses = state.records.get(question.name);
      if (addresses === undefined) reply = response(query, question.end, RCODE_NXDOMAIN, []);
      else reply = response(query, question.end, RCODE_NOERROR, question.type === TYPE_A ? addresses : []);
    }
    socket.send(reply, remote.port, remote.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  const port = socket.address().port;
  let closed: Promise<void> | undefined;
  function close(): Promise<void> {
    closed ??= new Promise<void>((resolve) => socket.close(() => resolve()));
    return closed;
  }
  onTestFinished(close);
  return Object.assign(state, { server: `127.0.0.1:${port}`, port });
}
