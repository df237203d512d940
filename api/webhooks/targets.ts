/**
 * Where webhooks may go. A target that resolves to loopback, private, link-local, CGNAT, multicast or
 * unspecified space is refused (unless WEBHOOK_ALLOW_PRIVATE): otherwise a user could make Momentum
 * call its own metadata service or databases (SSRF). Checked at submission, and again at delivery
 * through the socket's own DNS lookup, so a name re-pointed after submission is caught as well.
 */
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import type { LookupFunction } from 'node:net';
import dns from 'node:dns';

const blocked = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  blocked.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [
  ['::', 128],
  ['::1', 128],
  // IPv4-compatible (::a.b.c.d), NAT64 (well-known and local-use), 6to4 and Teredo embed an IPv4
  // address that a gateway may turn into a private one: refused whole.
  ['::', 96],
  ['64:ff9b::', 96],
  ['64:ff9b:1::', 48],
  ['2002::', 16],
  ['2001::', 32],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  blocked.addSubnet(net, bits, 'ipv6');
}

export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, 'ipv4');
  if (family === 6) {
    // IPv4-mapped (::ffff:10.0.0.1) is judged by its IPv4 part.
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return blocked.check(mapped[1]!, 'ipv4');
    return blocked.check(address, 'ipv6');
  }
  return true; // not an address at all: refuse
}

/** Ports a public webhook target may use (the web's own); others could reach mail, databases, admin ports. */
export const WEBHOOK_PORTS = [80, 443, 8080, 8443];

/** Why this URL may not receive webhooks, or undefined when it may. */
export async function refuseWebhookTarget(raw: string, allowPrivate: boolean): Promise<string | undefined> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'must be an absolute http(s) URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must use http or https';
  if (url.username || url.password) return 'must not carry credentials';
  if (allowPrivate) return undefined;
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  if (!WEBHOOK_PORTS.includes(port)) return `port ${port} is not allowed; webhooks go to port ${WEBHOOK_PORTS.join(', ')}`;
  const host = url.hostname.replace(/^\[|\]$/g, '');
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);
  } catch {
    return `host ${host} does not resolve`;
  }
  // The address itself is not echoed: a caller must not learn what internal names resolve to.
  const bad = addresses.find(isPrivateAddress);
  return bad ? `resolves to a loopback, private or link-local address; webhooks may only target public addresses` : undefined;
}

/** A socket `lookup` that refuses private answers: used for the delivery's own connection. */
export function publicOnlyLookup(allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const list = addresses as unknown as dns.LookupAddress[];
      const ok = allowPrivate ? list : list.filter((a) => !isPrivateAddress(a.address));
      if (!ok.length) {
        const e = Object.assign(new Error(`webhook target ${hostname} resolves only to private addresses`), { code: 'EPRIVATE' });
        return callback(e, '', 0);
      }
      if ((options as dns.LookupOptions).all) return (callback as any)(null, ok);
      return callback(null, ok[0]!.address, ok[0]!.family);
    });
  };
}
