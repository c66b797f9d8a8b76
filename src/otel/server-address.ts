/** `server.address` and `server.port` of an instance URL (semantic conventions), or null when it does not parse. */
export function parseServer(instance: string): { address: string; port: number } | null {
  let url: URL;
  try {
    url = new URL(instance);
  } catch {
    return null;
  }
  return serverOfUrl(url);
}

/** `server.address` (IPv6 without brackets) and `server.port` (the scheme's default when absent) of a URL. */
export function serverOfUrl(url: URL): { address: string; port: number } {
  return {
    address: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
    port: url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port),
  };
}
