/**
 * A small safetensors reader/writer (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} (plus an
 * optional string map "__metadata__"), then the raw little-endian data. Loads in PyTorch with
 * `safetensors.torch.load_file`. Only float32 and int32 are needed here.
 */

export type SafeDtype = 'F32' | 'I32';

export interface SafeTensor {
  dtype: SafeDtype;
  shape: number[];
  data: Float32Array | Int32Array;
}

const ALIGN = 8;
/** On little-endian hosts (all that Node runs on in practice) bytes are copied as they are. */
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export function writeSafetensors(tensors: Record<string, SafeTensor>, metadata?: Record<string, string>): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const expected = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== expected) throw new RangeError(`tensor ${name}: ${t.data.length} values for shape [${t.shape}]`);
    const bytes = t.data.length * 4;
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // Pad the header with spaces so the data starts 8-byte aligned (allowed by the format).
  json += ' '.repeat((ALIGN - ((8 + Buffer.byteLength(json)) % ALIGN)) % ALIGN);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let pos = 8 + headerBytes.length;
  for (const name of names) {
    const t = tensors[name];
    if (LITTLE_ENDIAN_HOST) {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), pos);
      pos += t.data.byteLength;
      continue;
    }
    for (let i = 0; i < t.data.length; i++, pos += 4) {
      if (t.dtype === 'F32') view.setFloat32(pos, t.data[i], true);
      else view.setInt32(pos, t.data[i], true);
    }
  }
  return out;
}

export function readSafetensors(bytes: Uint8Array): { tensors: Record<string, SafeTensor>; metadata: Record<string, string> } {
  if (bytes.length < 8) throw new RangeError('not a safetensors file: shorter than 8 bytes');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > bytes.length - 8) throw new RangeError(`not a safetensors file: header length ${headerLength} exceeds the file`);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as Record<string, unknown>;
  const dataStart = 8 + headerLength;
  const tensors: Record<string, SafeTensor> = {};
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets } = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    if (dtype !== 'F32' && dtype !== 'I32') throw new RangeError(`tensor ${name}: dtype ${dtype} is not supported (F32, I32)`);
    const [begin, end] = data_offsets;
    const n = shape.reduce((a, b) => a * b, 1);
    if (end - begin !== n * 4 || dataStart + end > bytes.length) throw new RangeError(`tensor ${name}: data offsets [${begin}, ${end}] do not fit shape [${shape}]`);
    if (LITTLE_ENDIAN_HOST) {
      const copy = bytes.slice(dataStart + begin, dataStart + end).buffer; // aligned copy
      tensors[name] = { dtype, shape, data: dtype === 'F32' ? new Float32Array(copy) : new Int32Array(copy) };
      continue;
    }
    const data = dtype === 'F32' ? new Float32Array(n) : new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const at = dataStart + begin + 4 * i;
      data[i] = dtype === 'F32' ? view.getFloat32(at, true) : view.getInt32(at, true);
    }
    tensors[name] = { dtype, shape, data };
  }
  return { tensors, metadata };
}
