/**
 * TLS options of the transport: what `https://` instances are verified against and which
 * certificate this client presents (mTLS). Verification is always on unless the option whose
 * name says so turns it off.
 */
import { invalidOption } from '../core/errors.js';

/** PEM text or its bytes. */
export type Pem = string | Uint8Array;

/** `tls` option of `createClient`: applies to `https://` instances. */
export interface TlsOptions {
  /** CA certificates that sign the instances' certificates (PEM); replaces Node's default roots. @default Node's root CAs */
  ca?: Pem | readonly Pem[];
  /** This client's certificate chain for mTLS (PEM); needs `key`. @default undefined */
  cert?: Pem | readonly Pem[];
  /** Private key of `cert` (PEM). @default undefined */
  key?: Pem;
  /** Passphrase of an encrypted `key`. @default undefined */
  passphrase?: string;
  /** Name checked against the instance's certificate and sent as SNI, when instances are addressed by IP. @default the instance's host name */
  servername?: string;
  /** Oldest TLS version accepted. @default 'TLSv1.2' */
  minVersion?: 'TLSv1.2' | 'TLSv1.3';
  /**
   * Skips verification of the instance's certificate (expiry, issuer, host name): anyone on
   * the path can then read and change the traffic. For local experiments only. @default false
   */
  insecureSkipVerify?: boolean;
}

/** The options undici's connector passes to `tls.connect`. */
export interface TlsConnectOptions {
  ca?: Pem | Pem[];
  cert?: Pem | Pem[];
  key?: Pem;
  passphrase?: string;
  servername?: string;
  minVersion: 'TLSv1.2' | 'TLSv1.3';
  rejectUnauthorized: boolean;
}

/** Validates the `tls` option and turns it into `tls.connect` options. */
export function tlsConnectOptions(options: TlsOptions | undefined): TlsConnectOptions {
  if (options === undefined) return { minVersion: 'TLSv1.2', rejectUnauthorized: true };
  if (typeof options !== 'object' || options === null) invalidOption('tls', 'an object', options);
  const result: TlsConnectOptions = { minVersion: 'TLSv1.2', rejectUnauthorized: true };
  const ca = pemList('tls.ca', options.ca);
  if (ca !== undefined) result.ca = ca;
  const cert = pemList('tls.cert', options.cert);
  if (cert !== undefined) result.cert = cert;
  if (options.key !== undefined) {
    if (!isPem(options.key)) invalidOption('tls.key', 'a PEM string or Buffer', options.key);
    result.key = options.key;
  }
  if ((result.cert === undefined) !== (result.key === undefined)) {
    invalidOption(
      'tls.cert and tls.key',
      'given together (mTLS needs both)',
      result.cert === undefined ? 'key only' : 'cert only',
    );
  }
  if (options.passphrase !== undefined) {
    if (typeof options.passphrase !== 'string') invalidOption('tls.passphrase', 'a string', typeof options.passphrase);
    result.passphrase = options.passphrase;
  }
  if (options.servername !== undefined) {
    if (typeof options.servername !== 'string' || !/^[A-Za-z0-9.-]{1,253}$/.test(options.servername)) {
      invalidOption('tls.servername', 'a DNS host name', options.servername);
    }
    result.servername = options.servername;
  }
  if (options.minVersion !== undefined) {
    if (options.minVersion !== 'TLSv1.2' && options.minVersion !== 'TLSv1.3') {
      invalidOption('tls.minVersion', "'TLSv1.2' or 'TLSv1.3'", options.minVersion);
    }
    result.minVersion = options.minVersion;
  }
  if (options.insecureSkipVerify !== undefined && typeof options.insecureSkipVerify !== 'boolean') {
    invalidOption('tls.insecureSkipVerify', 'a boolean', options.insecureSkipVerify);
  }
  result.rejectUnauthorized = options.insecureSkipVerify !== true;
  return result;
}

function isPem(value: unknown): value is Pem {
  return (typeof value === 'string' && value.includes('-----BEGIN ')) || value instanceof Uint8Array;
}

function pemList(name: string, value: Pem | readonly Pem[] | undefined): Pem | Pem[] | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value)) {
    if (value.length === 0 || !value.every(isPem))
      invalidOption(name, 'PEM strings or Buffers', 'an array of other values');
    return [...value];
  }
  if (!isPem(value)) invalidOption(name, 'a PEM string or Buffer (or an array of them)', value);
  return value as Pem;
}
