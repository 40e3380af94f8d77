import { describe, expect, it } from "vitest";

import type { Index3 } from "../labelmap/region";
import { LockedSegmentError, applyFrame, redoEdit, undoEdit } from "./apply";
import type { MaskFrame } from "./frame";

const shape: Index3 = [2, 3, 4];

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
    expect(() => applyFrame(labels, shape, frame([0, 0, 0], [1, 1, 1], [0], true), 1, new Set([1]))).toThrow(LockedSegmentError);
    expect(show(labels)).toEqual(show(original()));
    // Other segments being locked does not matter: they are never touched anyway.
    expect(applyFrame(labels, shape, frame([0, 0, 0], [1, 1, 1], [0], true), 1, new Set([2]))).not.toBeNull();
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
