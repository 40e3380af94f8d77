import { describe, expect, it } from "vitest";

import { Labelmap } from "./labelmap";

describe("Labelmap", () => {
  it("sets and finds segments, their layers and bounding boxes", () => {
    const labelmap = new Labelmap([3, 4, 5]);
    labelmap.set(0, 1, 2, 3, 4);
    labelmap.set(0, 2, 0, 1, 4);
    const second = labelmap.addLayer();
    labelmap.set(second, 0, 0, 0, 9);
    expect(labelmap.get(0, 1, 2, 3)).toBe(4);
    expect(labelmap.boundingBox(4)).toEqual({ start: [1, 0, 1], stop: [3, 3, 4] });
    expect(labelmap.boundingBox(5)).toBeNull();
    expect(labelmap.segmentLayers()).toEqual(new Map([[4, 0], [9, 1]]));
    expect(labelmap.voxelCount(4)).toBe(2);
    expect(() => labelmap.set(0, 0, 0, 0, 256)).toThrow(RangeError);
  });

  it("sets a segment's mask without touching other segments, and moves it off other layers", () => {
    const labelmap = new Labelmap([1, 2, 2], "uint16", [Uint16Array.from([0, 2, 0, 0]), Uint16Array.from([1, 0, 0, 0])]);
    labelmap.setSegmentMask(1, Uint8Array.from([0, 1, 1, 0]), 0);
    expect([...labelmap.layers[0]]).toEqual([0, 2, 1, 0]);
    expect([...labelmap.layers[1]]).toEqual([0, 0, 0, 0]);
    expect([...labelmap.segmentMask(1)]).toEqual([0, 0, 1, 0]);
  });

  it("copies a region out and back (undo)", () => {
    const labelmap = new Labelmap([2, 3, 3]);
    labelmap.layers[0].forEach((_, n, layer) => (layer[n] = n % 3));
    const region = { start: [1, 1, 1] as [number, number, number], stop: [2, 3, 3] as [number, number, number] };
    const saved = labelmap.copyRegion(0, region);
    expect([...saved]).toEqual([13, 14, 16, 17].map((n) => n % 3));
    const before = [...labelmap.layers[0]];
    labelmap.layers[0].fill(0);
    labelmap.pasteRegion(0, region, saved);
    expect([...labelmap.layers[0]]).toEqual(before.map((v, n) => ([13, 14, 16, 17].includes(n) ? v : 0)));
    expect(() => labelmap.copyRegion(0, { start: [0, 0, 0], stop: [3, 1, 1] })).toThrow("inside the volume");
  });

  it("goes to and from .npy arrays", () => {
    const labelmap = Labelmap.fromNpy({ dtype: "uint8", shape: [2, 1, 2, 2], data: Uint8Array.from([1, 0, 0, 1, 0, 2, 2, 0]) });
    expect(labelmap.shape).toEqual([1, 2, 2]);
    expect(labelmap.layers.map((layer) => [...layer])).toEqual([[1, 0, 0, 1], [0, 2, 2, 0]]);
    expect(labelmap.toNpy()).toEqual({ dtype: "uint8", shape: [2, 1, 2, 2], data: Uint8Array.from([1, 0, 0, 1, 0, 2, 2, 0]) });
    expect(Labelmap.fromNpy({ dtype: "uint8", shape: [1, 2, 2], data: new Uint8Array(4) }).layers).toHaveLength(1);
    expect(() => Labelmap.fromNpy({ dtype: "uint8", shape: [1, 2, 2], data: new Uint8Array(4) }, [1, 2, 3])).toThrow("series' grid");
  });
});
