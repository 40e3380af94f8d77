// AVXM mask frames (docs/protocol.md "Mask frames"), byte for byte as webapp/interactive/protocol.py:
//   0 "AVXM" · 4 version 1 · 5 flags (bit 0 REPLACE) · 6 reserved u16 · 8 request u32 · 12 start k,j,i u32
//   · 24 stop k,j,i u32 · 36 zlib(numpy.packbits(mask)): C order (i fastest), most significant bit first.
// All integers little-endian.

import { compressBytes, decompressBytes, DecompressionError } from "../labelmap/compression";
import { type Index3, type Region, regionShape } from "../labelmap/region";

export const PROTOCOL_VERSION = 1;
export const FLAG_REPLACE = 1;
export const HEADER_BYTES = 36;
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
export const MAX_REQUEST_ID = 0xffffffff;
const MAGIC = [0x41, 0x56, 0x58, 0x4d]; // "AVXM"

export interface MaskFrame extends Region {
  /** The request it answers; 0 for a mask nobody asked for (after open, after a recovery). */
  request: number;
  /** One byte per voxel of the region, 0 or 1, C order of the region's shape. */
  mask: Uint8Array;
  /** Every voxel outside the region is 0 (otherwise: unchanged). */
  replace: boolean;
}

export class FrameError extends Error {
  constructor(
    readonly code: "bad_frame" | "out_of_bounds" | "too_large",
    message: string,
  ) {
    super(message);
  }
}

/** numpy.packbits(mask, bitorder="big"): eight voxels a byte, the first in the top bit, zero padded. */
export function packBits(mask: Uint8Array): Uint8Array {
  const bits = new Uint8Array((mask.length + 7) >> 3);
  const whole = mask.length >> 3;
  for (let b = 0, v = 0; b < whole; b++, v += 8) {
    bits[b] =
      (mask[v] ? 128 : 0) | (mask[v + 1] ? 64 : 0) | (mask[v + 2] ? 32 : 0) | (mask[v + 3] ? 16 : 0) |
      (mask[v + 4] ? 8 : 0) | (mask[v + 5] ? 4 : 0) | (mask[v + 6] ? 2 : 0) | (mask[v + 7] ? 1 : 0);
  }
  for (let v = whole * 8; v < mask.length; v++) {
    if (mask[v]) bits[v >> 3] |= 128 >> (v & 7);
  }
  return bits;
}

/** numpy.unpackbits(bits, count=count): one 0/1 byte per voxel. */
export function unpackBits(bits: Uint8Array, count: number): Uint8Array {
  const mask = new Uint8Array(count);
  const whole = count >> 3;
  for (let b = 0, v = 0; b < whole; b++, v += 8) {
    const byte = bits[b];
    if (byte === 0) continue; // most of a mask is background
    mask[v] = byte >> 7;
    mask[v + 1] = (byte >> 6) & 1;
    mask[v + 2] = (byte >> 5) & 1;
    mask[v + 3] = (byte >> 4) & 1;
    mask[v + 4] = (byte >> 3) & 1;
    mask[v + 5] = (byte >> 2) & 1;
    mask[v + 6] = (byte >> 1) & 1;
    mask[v + 7] = byte & 1;
  }
  for (let v = whole * 8; v < count; v++) {
    mask[v] = (bits[v >> 3] >> (7 - (v & 7))) & 1;
  }
  return mask;
}

function asBytes(data: ArrayBufferLike | ArrayBufferView): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

/** The request id in a frame's header, or null when the data is too short to hold one. */
export function frameRequest(data: ArrayBufferLike | ArrayBufferView): number | null {
  const bytes = asBytes(data);
  if (bytes.length < 12) return null;
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8, true);
}

/** A frame back into a region and its mask; FrameError for anything malformed or outside ``volumeShape``. */
export async function decodeFrame(data: ArrayBufferLike | ArrayBufferView, volumeShape?: Index3): Promise<MaskFrame> {
  const bytes = asBytes(data);
  if (bytes.length > MAX_FRAME_BYTES) {
    throw new FrameError("too_large", `a binary frame may hold at most ${MAX_FRAME_BYTES} bytes`);
  }
  if (bytes.length < HEADER_BYTES) {
    const message = `a mask frame has a ${HEADER_BYTES}-byte header, this one has ${bytes.length} bytes`;
    throw new FrameError("bad_frame", message);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = bytes[4];
  if (MAGIC.some((byte, n) => bytes[n] !== byte) || version !== PROTOCOL_VERSION) {
    throw new FrameError("bad_frame", `not a version ${PROTOCOL_VERSION} AVXM mask frame`);
  }
  const flags = bytes[5];
  const request = view.getUint32(8, true);
  const start: Index3 = [view.getUint32(12, true), view.getUint32(16, true), view.getUint32(20, true)];
  const stop: Index3 = [view.getUint32(24, true), view.getUint32(28, true), view.getUint32(32, true)];
  if (stop.some((b, axis) => b < start[axis])) {
    throw new FrameError("bad_frame", `the region [${start}]..[${stop}] is reversed`);
  }
  if (volumeShape && stop.some((b, axis) => b > volumeShape[axis])) {
    throw new FrameError("out_of_bounds", `the region ends at [${stop}], outside the volume [${volumeShape}]`);
  }
  const [dk, dj, di] = regionShape({ start, stop });
  const count = dk * dj * di;
  const expected = Math.ceil(count / 8);
  let bits: Uint8Array;
  try {
    bits = await decompressBytes(bytes.subarray(HEADER_BYTES), "deflate", expected);
  } catch (error) {
    const reason = error instanceof DecompressionError ? error.message : String(error);
    throw new FrameError("bad_frame", `the mask of request ${request}: ${reason}`);
  }
  if (bits.length !== expected) {
    throw new FrameError("bad_frame", `the mask holds ${bits.length} bytes, the region needs ${expected}`);
  }
  return { request, start, stop, mask: unpackBits(bits, count), replace: (flags & FLAG_REPLACE) !== 0 };
}

/** The bytes of a frame (as the Python encoder writes them, up to the zlib level). */
export async function encodeFrame(frame: MaskFrame): Promise<Uint8Array> {
  const { request, start, stop, mask } = frame;
  if (!Number.isInteger(request) || request < 0 || request > MAX_REQUEST_ID) {
    throw new RangeError(`a request id is an integer from 0 to ${MAX_REQUEST_ID}, not ${request}`);
  }
  for (const value of [...start, ...stop]) {
    if (!Number.isInteger(value) || value < 0 || value > MAX_REQUEST_ID) {
      throw new RangeError(`the region [${start}]..[${stop}] does not fit in uint32 indices`);
    }
  }
  if (stop.some((b, axis) => b < start[axis])) {
    throw new RangeError(`the region [${start}]..[${stop}] is reversed`);
  }
  const shape = regionShape(frame);
  if (mask.length !== shape[0] * shape[1] * shape[2]) {
    throw new RangeError(`a mask of ${mask.length} voxels for a region of shape [${shape}]`);
  }
  const compressed = await compressBytes(packBits(mask), "deflate");
  const out = new Uint8Array(HEADER_BYTES + compressed.length);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  out[4] = PROTOCOL_VERSION;
  out[5] = frame.replace ? FLAG_REPLACE : 0;
  view.setUint32(8, request, true);
  start.forEach((value, axis) => view.setUint32(12 + 4 * axis, value, true));
  stop.forEach((value, axis) => view.setUint32(24 + 4 * axis, value, true));
  out.set(compressed, HEADER_BYTES);
  return out;
}
