/**
 * Balance layer: picks the instance for each attempt, skipping instances already tried in
 * this call while others remain.
 *
 * Order: below retry (each retry picks again), above attempt and transport.
 */
import type { Instance, Layer } from '../core/call.js';
import { ErrorCode, invalidOption, TelescopeError } from '../core/errors.js';

/** An instance as callers write it: a URL, or a URL with routing metadata. */
export type InstanceInput = string | { url: string; zone?: string; version?: string; weight?: number };

/** Parses and checks instance inputs: http(s) origins without path, query or credentials. */
export function parseInstances(inputs: readonly InstanceInput[]): Instance[] {
  if (!Array.isArray(inputs) || inputs.length === 0) {
    invalidOption('instances', 'a non-empty array of URLs', inputs);
  }
  const seen = new Set<string>();
  return inputs.map((input, index) => {
    const raw = typeof input === 'string' ? input : input?.url;
    let url: URL;
    try {
      url = new URL(String(raw));
    } catch {
      return invalidOption(`instances[${index}]`, 'an absolute http(s) URL', raw);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      invalidOption(`instances[${index}]`, 'an http: or https: URL', raw);
    }
    if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username || url.password) {
      invalidOption(`instances[${index}]`, 'an origin without path, query or credentials', raw);
    }
    if (seen.has(url.origin)) invalidOption(`instances[${index}]`, 'not a duplicate', raw);
    seen.add(url.origin);
    const weight = typeof input === 'string' ? 1 : (input.weight ?? 1);
    if (!(Number.isFinite(weight) && weight > 0))
      invalidOption(`instances[${index}].weight`, 'a positive number', weight);
    return {
      url: url.origin,
      zone: typeof input === 'string' ? undefined : input.zone,
      version: typeof input === 'string' ? undefined : input.version,
      weight,
    };
  });
}

/**
 * Round-robin over a static set, skipping tried instances while untried ones remain.
 *
 * @example
 * compose(balance(parseInstances(['http://127.0.0.1:8081'])), attempt())
 */
export function balance(instances: readonly Instance[]): Layer {
  let cursor = 0;
  return (next) => (request, context) => {
    const count = instances.length;
    let chosen: Instance | undefined;
    for (let step = 0; step < count; step++) {
      const candidate = instances[(cursor + step) % count] as Instance;
      if (context.tried === undefined || !context.tried.includes(candidate)) {
        chosen = candidate;
        cursor = (cursor + step + 1) % count;
        break;
      }
    }
    // Every instance tried: reuse the next one rather than fail.
    if (chosen === undefined) chosen = instances[cursor++ % count];
    if (chosen === undefined) {
      return Promise.reject(
        new TelescopeError(ErrorCode.INVALID_OPTION, 'no instances', {
          service: context.service,
          endpoint: context.endpoint,
          requestSent: false,
        }),
      );
    }
    context.instance = chosen;
    return next(request, context);
  };
}
