import { describe, expect, it } from "vitest";

import { type Index3, type Region, boundingBox } from "../labelmap/region";
import { LockedSegmentError, applyFrame, redoEdit, undoEdit } from "./apply";
import type { MaskFrame } from "./frame";

const shape: Index3 = [2, 3, 4];

function regionContains(outer: Region, inner: Region): boolean {
  return [0, 1, 2].every((axis) => outer.start[axis] <= inner.start[axis] && inner.stop[axis] <= outer.stop[axis]);
}

/** A layer from a readable picture: one string per row, slices separated. */
function layer(...rows: string[]): Uint8Array {
  return Uint8Array.from(rows.join("").split("").map(Number));
}

function frame(start: Index3, stop: Index3, mask: number[], replace: boolean): MaskFrame {
  return { request: 1, start, stop, mask: Uint8Array.from(mask), replace };
}

function show(labels: Uint8Array | Uint16Array): string[] {
  const rows: string[] = [];
  for (let row = 0; row < shape[0] * shape[1]; row++) rows.push([...labels.subarray(row * 4, row * 4 + 4)].join(""));
  return rows;
}

describe("applyFrame", () => {
  // Segment 1 is active; 2 is another segment.
  const original = () => layer("1100", "0220", "0000", "0001", "0000", "2000");

  it("writes the region only without REPLACE, and never touches other segments", () => {
    const labels = original();
    // Region: slice 0, rows 0-1, columns 1-2; the mask asks for every voxel but one.
    const edit = applyFrame(labels, shape, frame([0, 0, 1], [1, 2, 3], [0, 1, 1, 1], false), 1);
    expect(show(labels)).toEqual(["1010", "0220", "0000", "0001", "0000", "2000"]);
    expect(edit?.region).toEqual({ start: [0, 0, 1], stop: [1, 1, 3] });
    expect([...edit!.before]).toEqual([1, 0]);
    expect([...edit!.after]).toEqual([0, 1]);
  });

  it("clears the segment outside the region with REPLACE", () => {
    const labels = original();
    const edit = applyFrame(labels, shape, frame([1, 2, 0], [2, 3, 2], [1, 1], true), 1);
    expect(show(labels)).toEqual(["0000", "0220", "0000", "0000", "0000", "2100"]);
    expect(edit?.region).toEqual({ start: [0, 0, 0], stop: [2, 3, 4] });
  });

  it("clears the segment beside the region on the region's own rows", () => {
    const labels = layer("0000", "0000", "0000", "0000", "1111", "0000");
    applyFrame(labels, shape, frame([1, 1, 1], [2, 2, 3], [0, 1], true), 1);
    expect(show(labels)).toEqual(["0000", "0000", "0000", "0000", "0010", "0000"]);
  });

  it("agrees with a plain reference on random layers, with and without segmentBounds", () => {
    let state = 11;
    const random = (below: number) => {
      state = (state * 1103515245 + 12345) >>> 0;
      return (state >>> 8) % below;
    };
    const big: Index3 = [5, 6, 7];
    for (let round = 0; round < 200; round++) {
      const labels = Uint8Array.from({ length: 210 }, () => [0, 0, 0, 1, 2][random(5)]);
      const start: Index3 = [random(5), random(6), random(7)];
      const stop: Index3 = [start[0] + random(6 - start[0]), start[1] + random(7 - start[1]), start[2] + random(8 - start[2])];
      const size = (stop[0] - start[0]) * (stop[1] - start[1]) * (stop[2] - start[2]);
      const replace = random(2) === 1;
      const input = { request: 1, start, stop, mask: Uint8Array.from({ length: size }, () => random(2)), replace };
      const expected = Uint8Array.from(labels);
      let n = 0;
      for (let v = 0; v < 210; v++) {
        const [k, j, i] = [Math.floor(v / 42), Math.floor(v / 7) % 6, v % 7];
        const inside = k >= start[0] && k < stop[0] && j >= start[1] && j < stop[1] && i >= start[2] && i < stop[2];
        if (inside) {
          const wanted = input.mask[n++];
          if (wanted && expected[v] === 0) expected[v] = 1;
          if (!wanted && expected[v] === 1) expected[v] = 0;
        } else if (replace && expected[v] === 1) {
          expected[v] = 0;
        }
      }
      const plain = Uint8Array.from(labels);
      const edit = applyFrame(plain, big, input, 1);
      expect(plain).toEqual(expected);
      const bounded = Uint8Array.from(labels);
      applyFrame(bounded, big, input, 1, { segmentBounds: boundingBox(labels, big, 1) ?? undefined });
      expect(bounded).toEqual(expected);
      if (edit) {
        undoEdit(plain, big, edit);
        expect(plain).toEqual(labels);
        expect(boundingBox(expected, big, 1) === null || regionContains(edit.segmentBounds, boundingBox(expected, big, 1)!)).toBe(true);
      }
    }
  });

  it("undoes and redoes an edit", () => {
    const labels = original();
    const edit = applyFrame(labels, shape, frame([0, 0, 0], [2, 3, 4], new Array(24).fill(1), true), 1)!;
    const after = show(labels);
    expect(after).toEqual(["1111", "1221", "1111", "1111", "1111", "2111"]);
    undoEdit(labels, shape, edit);
    expect(show(labels)).toEqual(show(original()));
    redoEdit(labels, shape, edit);
    expect(show(labels)).toEqual(after);
  });

  it("returns null when nothing changes", () => {
    const labels = original();
    expect(applyFrame(labels, shape, frame([0, 0, 0], [1, 1, 2], [1, 1], false), 1)).toBeNull();
    expect(applyFrame(labels, shape, frame([0, 1, 1], [0, 1, 1], [], false), 1)).toBeNull();
  });

  it("writes nothing into a locked segment", () => {
    const labels = original();
    expect(() => applyFrame(labels, shape, frame([0, 0, 0], [1, 1, 1], [0], true), 1, { locked: new Set([1]) })).toThrow(LockedSegmentError);
    expect(show(labels)).toEqual(show(original()));
    // Other segments being locked does not matter: they are never touched anyway.
    expect(applyFrame(labels, shape, frame([0, 0, 0], [1, 1, 1], [0], true), 1, { locked: new Set([2]) })).not.toBeNull();
  });

  it("takes segment numbers above 255 in a uint16 layer, and refuses them in a uint8 one", () => {
    const labels = new Uint16Array(24);
    labels[5] = 7;
    applyFrame(labels, shape, frame([0, 1, 0], [1, 2, 4], [1, 1, 1, 1], false), 300);
    expect([...labels.subarray(4, 8)]).toEqual([300, 7, 300, 300]);
    expect(() => applyFrame(new Uint8Array(24), shape, frame([0, 0, 0], [1, 1, 1], [1], false), 300)).toThrow(RangeError);
  });

  it("refuses frames outside the volume or with a mask of the wrong size", () => {
    expect(() => applyFrame(original(), shape, frame([0, 0, 0], [3, 1, 1], [1, 1, 1], false), 1)).toThrow("inside the volume");
    expect(() => applyFrame(original(), shape, frame([0, 0, 0], [1, 1, 2], [1], false), 1)).toThrow("a mask of 1 voxels");
  });
});
