import { describe, expect, it } from "vitest";

import { compressBytes } from "./compression";
import { NpyFormatError, formatNpy, isGzip, parseNpy, readNpyFile, writeNpyFile } from "./npy";

function npyWithHeader(header: string, data: Uint8Array): Uint8Array {
  const text = new TextEncoder().encode(header + "\n");
  const out = new Uint8Array(10 + text.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(out.buffer).setUint16(8, text.length, true);
  out.set(text, 10);
  out.set(data, 10 + text.length);
  return out;
}

describe(".npy", () => {
  it("writes a header numpy reads: 64-byte aligned, newline-terminated", () => {
    const bytes = formatNpy({ dtype: "uint16", shape: [2, 3, 4, 5], data: new Uint16Array(120) });
    const headerLength = new DataView(bytes.buffer).getUint16(8, true);
    expect((10 + headerLength) % 64).toBe(0);
    const header = new TextDecoder().decode(bytes.subarray(10, 10 + headerLength));
    expect(header).toMatch(/^\{'descr': '<u2', 'fortran_order': False, 'shape': \(2, 3, 4, 5\), \} *\n$/);
    expect(new TextDecoder().decode(formatNpy({ dtype: "uint8", shape: [5], data: new Uint8Array(5) }))).toContain("'shape': (5,)");
  });

  it("round-trips uint8 and uint16, [k, j, i] and [layer, k, j, i], gzip or not", async () => {
    const small = { dtype: "uint8" as const, shape: [2, 3, 4], data: Uint8Array.from({ length: 24 }, (_, n) => n * 10) };
    const layered = { dtype: "uint16" as const, shape: [2, 2, 3, 4], data: Uint16Array.from({ length: 48 }, (_, n) => n * 1000) };
    for (const array of [small, layered]) {
      expect(parseNpy(formatNpy(array))).toEqual(array);
      const packed = await writeNpyFile(array);
      expect(isGzip(packed)).toBe(true);
      expect(await readNpyFile(packed)).toEqual(array);
      expect(await readNpyFile(await writeNpyFile(array, { compress: false }))).toEqual(array);
    }
  });

  it("reads big-endian uint16 and other header spellings", () => {
    const array = parseNpy(npyWithHeader("{'shape': (2,), 'fortran_order': False, 'descr': '>u2'}", Uint8Array.from([1, 2, 0, 3])));
    expect(array).toEqual({ dtype: "uint16", shape: [2], data: Uint16Array.from([0x0102, 3]) });
    // A header of odd length: the data is copied to an aligned buffer.
    const odd = parseNpy(npyWithHeader("{'descr': '<u2', 'fortran_order': False, 'shape': (1, 1, 1)}", Uint8Array.from([4, 1])));
    expect([...odd.data]).toEqual([260]);
  });

  it("refuses what is not a C-order uint8/uint16 .npy", async () => {
    const cases: [string, Uint8Array][] = [
      ["not a NumPy", new TextEncoder().encode("hello")],
      ["uint8 or uint16, not <f4", npyWithHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", new Uint8Array(4))],
      ["Fortran order", npyWithHeader("{'descr': '|u1', 'fortran_order': True, 'shape': (1,), }", new Uint8Array(1))],
      ["cut short", npyWithHeader("{'descr': '|u1', 'fortran_order': False, 'shape': (4, 4), }", new Uint8Array(15))],
    ];
    for (const [message, bytes] of cases) expect(() => parseNpy(bytes), message).toThrow(new RegExp(message));
    expect(() => parseNpy(new TextEncoder().encode("hello"))).toThrow(NpyFormatError);
    const bomb = await compressBytes(formatNpy({ dtype: "uint8", shape: [1 << 20], data: new Uint8Array(1 << 20) }), "gzip");
    await expect(readNpyFile(bomb, 1000)).rejects.toThrow("more than 1000 bytes");
  });
});
