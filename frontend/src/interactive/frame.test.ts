import { describe, expect, it } from "vitest";

import { compressBytes } from "../labelmap/compression";
import { FLAG_REPLACE, FrameError, HEADER_BYTES, type MaskFrame, decodeFrame, encodeFrame, packBits, unpackBits } from "./frame";

function randomMask(count: number, seed = 7): Uint8Array {
  const mask = new Uint8Array(count);
  let state = seed;
  for (let n = 0; n < count; n++) {
    state = (state * 1103515245 + 12345) >>> 0;
    mask[n] = state >>> 31;
  }
  return mask;
}

function header(start: number[], stop: number[], request = 5, flags = 0): Uint8Array {
  const bytes = new Uint8Array(HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  bytes.set([0x41, 0x56, 0x58, 0x4d, 1, flags]);
  view.setUint32(8, request, true);
  [...start, ...stop].forEach((value, n) => view.setUint32(12 + 4 * n, value, true));
  return bytes;
}

async function frameBytes(start: number[], stop: number[], payload: Uint8Array, zlib = true): Promise<Uint8Array> {
  const body = zlib ? await compressBytes(payload, "deflate") : payload;
  const out = new Uint8Array(HEADER_BYTES + body.length);
  out.set(header(start, stop));
  out.set(body, HEADER_BYTES);
  return out;
}

describe("bits", () => {
  it("packs most significant bit first, zero padded, like numpy.packbits", () => {
    expect([...packBits(Uint8Array.from([1, 0, 1, 1, 0, 0, 0, 0, 1]))]).toEqual([0b10110000, 0b10000000]);
    expect([...packBits(Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 1]))]).toEqual([1]);
    expect([...unpackBits(Uint8Array.from([0b10110000, 0b10000000]), 9)]).toEqual([1, 0, 1, 1, 0, 0, 0, 0, 1]);
  });

  it("round-trips any length", () => {
    for (const count of [0, 1, 7, 8, 9, 63, 1000]) {
      const mask = randomMask(count, count + 1);
      expect(unpackBits(packBits(mask), count)).toEqual(mask);
    }
  });
});

describe("frames", () => {
  it("encode the header as the protocol lays it out and decode back", async () => {
    const frame: MaskFrame = { request: 0x01020304, start: [1, 2, 3], stop: [4, 7, 10], mask: randomMask(3 * 5 * 7), replace: true };
    const bytes = await encodeFrame(frame);
    expect([...bytes.subarray(0, 12)]).toEqual([0x41, 0x56, 0x58, 0x4d, 1, FLAG_REPLACE, 0, 0, 4, 3, 2, 1]);
    const view = new DataView(bytes.buffer);
    expect([12, 16, 20, 24, 28, 32].map((at) => view.getUint32(at, true))).toEqual([1, 2, 3, 4, 7, 10]);
    expect(bytes[HEADER_BYTES] & 0x0f).toBe(8); // zlib: CM = 8 (deflate)
    expect(await decodeFrame(bytes.buffer, [10, 10, 10])).toEqual(frame);
  });

  it("decode an empty region (start = stop: nothing changed)", async () => {
    const bytes = await encodeFrame({ request: 3, start: [2, 2, 2], stop: [2, 2, 2], mask: new Uint8Array(0), replace: false });
    const frame = await decodeFrame(bytes);
    expect(frame.mask.length).toBe(0);
    expect(frame.replace).toBe(false);
  });

  it("refuse what the Python decoder refuses", async () => {
    const cases: [string, Uint8Array | Promise<Uint8Array>, [number, number, number]?][] = [
      ["header", new Uint8Array(10)],
      ["not a version 1", Uint8Array.from([...header([0, 0, 0], [1, 1, 1]).subarray(0, 4), 2, ...new Uint8Array(40)])],
      ["reversed", frameBytes([2, 0, 0], [1, 1, 1], new Uint8Array(0))],
      ["outside the volume", frameBytes([0, 0, 0], [3, 1, 1], new Uint8Array(1)), [2, 2, 2]],
      ["more than 1 bytes", frameBytes([0, 0, 0], [2, 2, 2], new Uint8Array(2))],
      ["needs 2", frameBytes([0, 0, 0], [4, 2, 2], new Uint8Array(1))],
      ["corrupt", frameBytes([0, 0, 0], [1, 1, 8], Uint8Array.from([1, 2, 3]), false)],
      ["corrupt", frameBytes([0, 0, 0], [1, 1, 8], new Uint8Array(1)).then((b) => b.subarray(0, b.length - 3))], // cut short
      ["more than 1 bytes", frameBytes([0, 0, 0], [1, 1, 8], new Uint8Array(1 << 24))], // a zip bomb
    ];
    for (const [message, data, shape] of cases) {
      const error = await decodeFrame(await data, shape).catch((e: unknown) => e);
      expect(error, message).toBeInstanceOf(FrameError);
      expect((error as Error).message, message).toContain(message);
    }
  });

  it("refuse to encode a mask that does not fill its region", async () => {
    await expect(encodeFrame({ request: 1, start: [0, 0, 0], stop: [2, 2, 2], mask: new Uint8Array(7), replace: true })).rejects.toThrow(
      "a mask of 7 voxels",
    );
    await expect(encodeFrame({ request: 2 ** 32, start: [0, 0, 0], stop: [0, 0, 0], mask: new Uint8Array(0), replace: true })).rejects.toThrow(
      RangeError,
    );
  });
});
