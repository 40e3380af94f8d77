// Agreement with the Python side, byte for byte: tests/test_frontend_units.py writes frames and labelmaps with
// webapp.interactive.protocol and webapp.segmentations.labelmap_io into ANNOVOX_FRONTEND_FIXTURES, runs this
// suite, and reads back what is written here into ANNOVOX_FRONTEND_OUTPUT. Skipped when run on its own.

import { describe, expect, it } from "vitest";

import { Labelmap } from "../labelmap/labelmap";
import { type LabelDtype, readNpyFile, writeNpyFile } from "../labelmap/npy";
import type { Index3 } from "../labelmap/region";
import { decodeFrame, encodeFrame } from "./frame";

interface FrameCase {
  name: string;
  request: number;
  start: Index3;
  stop: Index3;
  replace: boolean;
  mask: string; // "0"/"1" per voxel, C order
}

interface LabelmapCase {
  name: string;
  file: string;
  dtype: LabelDtype;
  shape: number[];
  values: number[];
}

interface Fs {
  readFile(path: string): Promise<Uint8Array>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
  mkdir(path: string, options: { recursive: boolean }): Promise<unknown>;
}

const env = (globalThis as unknown as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const fixtures = env.ANNOVOX_FRONTEND_FIXTURES;
const output = env.ANNOVOX_FRONTEND_OUTPUT;

async function fs(): Promise<Fs> {
  const name = "node:fs/promises"; // a variable: the browser build's type check knows no Node modules
  return (await import(/* @vite-ignore */ name)) as Fs;
}

/** A file's bytes as the browser has them: a plain Uint8Array, not Node's Buffer. */
async function readBytes(path: string): Promise<Uint8Array> {
  return new Uint8Array(await (await fs()).readFile(path));
}

async function readJSON<T>(file: string): Promise<T> {
  return JSON.parse(new TextDecoder().decode(await readBytes(`${fixtures}/${file}`))) as T;
}

const maskOf = (text: string) => Uint8Array.from(text, (c) => (c === "1" ? 1 : 0));

describe.skipIf(!fixtures || !output)("agreement with the Python codecs", () => {
  it("decodes the frames webapp.interactive.protocol encodes, and encodes them the same way", async () => {
    const files = await fs();
    await files.mkdir(output!, { recursive: true });
    const cases = await readJSON<FrameCase[]>("frames.json");
    expect(cases.length).toBeGreaterThan(0);
    for (const expected of cases) {
      const bytes = await readBytes(`${fixtures}/${expected.name}.avxm`);
      const frame = await decodeFrame(bytes, expected.stop);
      expect(frame.request, expected.name).toBe(expected.request);
      expect(frame.start, expected.name).toEqual(expected.start);
      expect(frame.stop, expected.name).toEqual(expected.stop);
      expect(frame.replace, expected.name).toBe(expected.replace);
      expect(frame.mask, expected.name).toEqual(maskOf(expected.mask));
      const encoded = await encodeFrame(frame);
      // The header is identical; the zlib streams may differ in their compression level only.
      expect(encoded.subarray(0, 36), expected.name).toEqual(bytes.subarray(0, 36));
      await files.writeFile(`${output}/${expected.name}.avxm`, encoded);
    }
  });

  it("reads the labelmaps webapp.segmentations.labelmap_io writes, and writes what it reads", async () => {
    const files = await fs();
    await files.mkdir(output!, { recursive: true });
    for (const expected of await readJSON<LabelmapCase[]>("labelmaps.json")) {
      const array = await readNpyFile(await readBytes(`${fixtures}/${expected.file}`));
      expect(array.dtype, expected.name).toBe(expected.dtype);
      expect(array.shape, expected.name).toEqual(expected.shape);
      expect([...array.data], expected.name).toEqual(expected.values);
      const labelmap = Labelmap.fromNpy(array);
      await files.writeFile(`${output}/${expected.name}.npy.gz`, await writeNpyFile(labelmap.toNpy()));
      await files.writeFile(`${output}/${expected.name}.npy`, await writeNpyFile(array, { compress: false }));
    }
  });
});
