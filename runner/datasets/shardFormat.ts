/**
 * The shard file: one self-describing binary blob per shard, little endian.
 *
 *   offset 0   magic "MMSH"
 *          4   u32 format version (1)
 *          8   u32 count
 *         12   u32 height
 *         16   u32 width
 *         20   u32 channels (1 or 3)
 *         24   8 bytes reserved (zero)
 *         32   int32 labels[count]            (-1 when unlabeled)
 *   32+4·count uint8 pixels[count·h·w·c]      (HWC, row-major, example after example)
 *
 * Labels come before the pixels so that both sit at aligned offsets: the loader views them in place
 * (an Int32Array needs 4-byte alignment) instead of copying.
 */
export const SHARD_MAGIC = 'MMSH';
export const SHARD_VERSION = 1;
export const SHARD_HEADER_BYTES = 32;

export interface ShardHeader {
  count: number;
  height: number;
  width: number;
  channels: 1 | 3;
}

export interface DecodedShard extends ShardHeader {
  labels: Int32Array;
  pixels: Uint8Array;
}

export function shardByteLength(h: ShardHeader): number {
  return SHARD_HEADER_BYTES + 4 * h.count + h.count * h.height * h.width * h.channels;
}

/** Allocates a shard buffer with its header written; fill `labels` and `pixels` of the result. */
export function allocateShard(h: ShardHeader): { bytes: Buffer; labels: Int32Array; pixels: Uint8Array } {
  const bytes = Buffer.alloc(shardByteLength(h));
  bytes.write(SHARD_MAGIC, 0, 'latin1');
  bytes.writeUInt32LE(SHARD_VERSION, 4);
  bytes.writeUInt32LE(h.count, 8);
  bytes.writeUInt32LE(h.height, 12);
  bytes.writeUInt32LE(h.width, 16);
  bytes.writeUInt32LE(h.channels, 20);
  return { bytes, ...viewsOf(bytes, h) };
}

/** Reads a shard's header and returns views over its labels and pixels (no copy). */
export function decodeShard(bytes: Uint8Array): DecodedShard {
  if (bytes.byteLength < SHARD_HEADER_BYTES) throw new Error(`shard too short (${bytes.byteLength} bytes)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  if (magic !== SHARD_MAGIC) throw new Error(`not a shard (magic ${JSON.stringify(magic)})`);
  const version = view.getUint32(4, true);
  if (version !== SHARD_VERSION) throw new Error(`shard format version ${version} is not supported`);
  const channels = view.getUint32(20, true);
  if (channels !== 1 && channels !== 3) throw new Error(`shard has ${channels} channels`);
  const h: ShardHeader = { count: view.getUint32(8, true), height: view.getUint32(12, true), width: view.getUint32(16, true), channels };
  if (shardByteLength(h) !== bytes.byteLength) {
    throw new Error(`shard holds ${bytes.byteLength} bytes, its header says ${shardByteLength(h)}`);
  }
  return { ...h, ...viewsOf(bytes, h) };
}

function viewsOf(bytes: Uint8Array, h: ShardHeader): { labels: Int32Array; pixels: Uint8Array } {
  let labels: Int32Array;
  const labelsStart = bytes.byteOffset + SHARD_HEADER_BYTES;
  if (labelsStart % 4 === 0) {
    labels = new Int32Array(bytes.buffer, labelsStart, h.count);
  } else {
    // A Buffer from a pool may start unaligned: copy the (small) labels rather than fail.
    labels = new Int32Array(h.count);
    const view = new DataView(bytes.buffer, labelsStart, 4 * h.count);
    for (let i = 0; i < h.count; i++) labels[i] = view.getInt32(4 * i, true);
  }
  const pixels = bytes.subarray(SHARD_HEADER_BYTES + 4 * h.count);
  return { labels, pixels };
}
