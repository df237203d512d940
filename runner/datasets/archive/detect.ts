/** What a blob of bytes is, judged by its magic bytes (never by its file name). */
export type ContainerKind = 'gzip' | 'zip' | 'tar' | 'idx' | 'unknown';

export function sniffContainer(head: Uint8Array): ContainerKind {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  // Local file header, or the end-of-central-directory record of an empty zip.
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && ((head[2] === 3 && head[3] === 4) || (head[2] === 5 && head[3] === 6))) {
    return 'zip';
  }
  if (isTarHeader(head)) return 'tar';
  if (idxHeaderOf(head)) return 'idx';
  return 'unknown';
}

/** POSIX ustar and GNU tar both write "ustar" at offset 257; the header checksum confirms it. */
function isTarHeader(head: Uint8Array): boolean {
  if (head.length < 512) return false;
  const magic = String.fromCharCode(...head.subarray(257, 262));
  if (magic !== 'ustar') return false;
  const stored = parseInt(String.fromCharCode(...head.subarray(148, 156)).replace(/\0.*$/, '').trim(), 8);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : head[i];
  return stored === sum;
}

export interface IdxHeader {
  /** Dimensions: [count] for labels, [count, rows, cols] for images. */
  dims: number[];
  headerBytes: number;
}

/** IDX: two zero bytes, type 0x08 (unsigned byte), then the number of dimensions (1 or 3 here). */
export function idxHeaderOf(head: Uint8Array): IdxHeader | null {
  if (head.length < 8 || head[0] !== 0 || head[1] !== 0 || head[2] !== 0x08) return null;
  const ndim = head[3];
  if (ndim < 1 || ndim > 4 || head.length < 4 + 4 * ndim) return null;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(view.getUint32(4 + 4 * i, false));
  return { dims, headerBytes: 4 + 4 * ndim };
}

export function hexHead(head: Uint8Array, n = 8): string {
  return [...head.subarray(0, n)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}
