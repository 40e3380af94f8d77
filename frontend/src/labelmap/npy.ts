// NumPy .npy files (format versions 1–3) of uint8 and uint16, C order: the labelmap format of the REST API
// (docs/segmentations.md), optionally gzip-compressed.

import { compressBytes, decompressBytes } from "./compression";

export type LabelDtype = "uint8" | "uint16";

export interface NpyArray {
  dtype: LabelDtype;
  shape: number[];
  /** C order, native (little-endian) values. */
  data: Uint8Array | Uint16Array;
}

export class NpyFormatError extends Error {}

const NPY_MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const GZIP_MAGIC = [0x1f, 0x8b];
const HEADER_ALIGN = 64; // as numpy writes it, so the data starts aligned

function startsWith(bytes: Uint8Array, prefix: number[]): boolean {
  return prefix.every((byte, n) => bytes[n] === byte);
}

export function isGzip(bytes: Uint8Array): boolean {
  return startsWith(bytes, GZIP_MAGIC);
}

function field(header: string, name: string): string {
  const match = header.match(new RegExp(`['"]${name}['"]\\s*:\\s*([^,}]*\\([^)]*\\)|[^,}]+)`));
  if (!match) throw new NpyFormatError(`the .npy header has no '${name}'`);
  return match[1].trim();
}

/** An .npy file's array; NpyFormatError for anything but uint8/uint16 in C order. */
export function parseNpy(bytes: Uint8Array): NpyArray {
  if (!startsWith(bytes, NPY_MAGIC)) throw new NpyFormatError("not a NumPy .npy file");
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerStart: number;
  let headerLength: number;
  if (major === 1) {
    headerStart = 10;
    headerLength = view.getUint16(8, true);
  } else if (major === 2 || major === 3) {
    headerStart = 12;
    headerLength = view.getUint32(8, true);
  } else {
    throw new NpyFormatError(`.npy format version ${major} is not known`);
  }
  const dataStart = headerStart + headerLength;
  if (dataStart > bytes.length) throw new NpyFormatError("the .npy file is cut short in its header");
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(headerStart, dataStart));

  const descr = field(header, "descr").replace(/['"]/g, "");
  if (field(header, "fortran_order") !== "False") {
    throw new NpyFormatError("the .npy array is in Fortran order; C order is needed");
  }
  const shapeText = field(header, "shape");
  if (!/^\([\d\s,]*\)$/.test(shapeText)) throw new NpyFormatError(`the .npy shape ${shapeText} is not read`);
  const shape = shapeText.slice(1, -1).split(",").map((part) => part.trim()).filter(Boolean).map(Number);

  const count = shape.reduce((product, size) => product * size, 1);
  let dtype: LabelDtype;
  let bigEndian = false;
  if (/^[|<>=]?u1$/.test(descr)) dtype = "uint8";
  else if (/^[<=]u2$/.test(descr)) dtype = "uint16";
  else if (descr === ">u2") [dtype, bigEndian] = ["uint16", true];
  else throw new NpyFormatError(`a labelmap is uint8 or uint16, not ${descr}`);

  const itemBytes = dtype === "uint8" ? 1 : 2;
  if (bytes.length - dataStart < count * itemBytes) {
    throw new NpyFormatError(`the .npy data is cut short: ${count} values of ${itemBytes} bytes are needed`);
  }
  // A copy, which owns an aligned buffer whatever the header length was (and whatever ``slice`` means for a
  // Uint8Array subclass such as Node's Buffer, where it makes a view).
  const raw = new Uint8Array(bytes.subarray(dataStart, dataStart + count * itemBytes));
  if (dtype === "uint8") return { dtype, shape, data: raw };
  if (bigEndian) {
    for (let n = 0; n < raw.length; n += 2) [raw[n], raw[n + 1]] = [raw[n + 1], raw[n]];
  }
  return { dtype, shape, data: new Uint16Array(raw.buffer, 0, count) };
}

/** The .npy file (format 1.0, little-endian, C order) of an array. */
export function formatNpy(array: NpyArray): Uint8Array {
  const count = array.shape.reduce((product, size) => product * size, 1);
  if (array.data.length !== count) {
    throw new RangeError(`${array.data.length} values for the shape [${array.shape}]`);
  }
  const expected = array.dtype === "uint8" ? Uint8Array : Uint16Array;
  if (!(array.data instanceof expected)) {
    throw new TypeError(`the data of a ${array.dtype} array is a ${array.data.constructor.name}`);
  }
  const shape = array.shape.length === 1 ? `(${array.shape[0]},)` : `(${array.shape.join(", ")})`;
  const descr = array.dtype === "uint8" ? "|u1" : "<u2";
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  const unpadded = 10 + header.length + 1; // magic, version, length, header, newline
  header += " ".repeat((HEADER_ALIGN - (unpadded % HEADER_ALIGN)) % HEADER_ALIGN) + "\n";
  const headerBytes = new TextEncoder().encode(header);
  const body = new Uint8Array(array.data.buffer, array.data.byteOffset, array.data.byteLength);
  const out = new Uint8Array(10 + headerBytes.length + body.length);
  out.set(NPY_MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, headerBytes.length, true);
  out.set(headerBytes, 10);
  out.set(body, 10 + headerBytes.length);
  if (array.dtype === "uint16" && new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new Error("a big-endian platform: .npy writing assumes little-endian typed arrays");
  }
  return out;
}

/** A labelmap file's array, gzip-compressed or not; ``maxBytes`` bounds the inflated size. */
export async function readNpyFile(data: ArrayBuffer | Uint8Array, maxBytes = Infinity): Promise<NpyArray> {
  let bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (isGzip(bytes)) bytes = await decompressBytes(bytes, "gzip", maxBytes);
  return parseNpy(bytes);
}

/** A labelmap file: .npy, gzip-compressed unless ``compress`` is false. */
export async function writeNpyFile(array: NpyArray, { compress = true } = {}): Promise<Uint8Array> {
  const bytes = formatNpy(array);
  return compress ? compressBytes(bytes, "gzip") : bytes;
}
