/**
 * A test PKI made at run time with the openssl CLI: a CA, a server certificate for 127.0.0.1
 * signed by it, and the bad certificates the TLS tests need (expired, self-signed, wrong host,
 * client certificates from this CA and from another one). EC P-256 keys keep it fast (about
 * 20 openssl runs, well under a second); made once per process and cached. No test framework
 * here: the benchmark's HTTP/2 target uses it too.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A certificate and its private key, PEM. */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

export interface TestPki {
  /** The CA that signs `server`, `expired`, `wrongHost` and `client` (PEM). */
  readonly ca: string;
  /** For 127.0.0.1 and localhost, signed by `ca`. */
  readonly server: KeyPair;
  /** Signed by `ca` for 127.0.0.1, but expired yesterday. */
  readonly expired: KeyPair;
  /** Signed by `ca`, for `other.example` only. */
  readonly wrongHost: KeyPair;
  /** Self-signed for 127.0.0.1: trusted by nobody. */
  readonly selfSigned: KeyPair;
  /** A client certificate (clientAuth) signed by `ca`. */
  readonly client: KeyPair;
  /** A client certificate signed by another CA, which the server does not trust. */
  readonly strangerClient: KeyPair;
}

let cached: TestPki | undefined;

/** The process's test PKI (made on first use). Needs `openssl` on the PATH. */
export function testPki(): TestPki {
  cached ??= makePki();
  return cached;
}

function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'telescope-pki-'));
  const path = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  try {
    const makeCa = (name: string) =>
      openssl(
        'req',
        '-x509',
        ...newKey,
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.crt`,
        '-subj',
        `/CN=${name}`,
        '-days',
        '2',
      );
    makeCa('ca');
    makeCa('stranger-ca');
    const issue = (
      name: string,
      options: { ca: string; san?: string; usage: 'serverAuth' | 'clientAuth'; days?: number; cn?: string },
    ) => {
      openssl('req', ...newKey, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${options.cn ?? name}`);
      const ext = [`extendedKeyUsage=${options.usage}`, ...(options.san ? [`subjectAltName=${options.san}`] : [])];
      writeFileSync(path(`${name}.ext`), `${ext.join('\n')}\n`);
      openssl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        `${options.ca}.crt`,
        '-CAkey',
        `${options.ca}.key`,
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        // A negative number of days puts notAfter before notBefore: an expired certificate.
        '-days',
        String(options.days ?? 2),
        '-extfile',
        `${name}.ext`,
      );
      return pair(name);
    };
    const pair = (name: string): KeyPair => ({
      cert: readFileSync(path(`${name}.crt`), 'utf8'),
      key: readFileSync(path(`${name}.key`), 'utf8'),
    });
    const localSan = 'IP:127.0.0.1,DNS:localhost';
    const server = issue('server', { ca: 'ca', san: localSan, usage: 'serverAuth', cn: '127.0.0.1' });
    const expired = issue('expired', { ca: 'ca', san: localSan, usage: 'serverAuth', days: -1 });
    const wrongHost = issue('wrong-host', { ca: 'ca', san: 'DNS:other.example', usage: 'serverAuth' });
    const client = issue('client', { ca: 'ca', usage: 'clientAuth' });
    const strangerClient = issue('stranger-client', { ca: 'stranger-ca', usage: 'clientAuth' });
    openssl(
      'req',
      '-x509',
      ...newKey,
      '-keyout',
      'self.key',
      '-out',
      'self.crt',
      '-subj',
      '/CN=127.0.0.1',
      '-days',
      '2',
      '-addext',
      `subjectAltName=${localSan}`,
    );
    return {
      ca: readFileSync(path('ca.crt'), 'utf8'),
      server,
      expired,
      wrongHost,
      selfSigned: pair('self'),
      client,
      strangerClient,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
