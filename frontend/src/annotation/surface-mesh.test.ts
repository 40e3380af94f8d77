import { describe, expect, it } from "vitest";

import { Labelmap } from "../labelmap/labelmap";
import { type Geometry, voxelToWorld } from "../viewer/geometry";
import { cropMask, surfaceMesh } from "./surface-mesh";

// A sagittal-like grid: i along −y, j along −z, k along +x, anisotropic voxels.
const geometry: Geometry = {
  dimensions: [8, 7, 6],
  spacing: [0.5, 0.8, 2],
  origin: [10, -20, 30],
  direction: [0, -1, 0, 0, 0, -1, 1, 0, 0],
};

describe("a segment's surface mesh", () => {
  it("wraps the segment's voxels in LPS, closed at the volume's edge, with outward unit normals", () => {
    const labelmap = new Labelmap([6, 7, 8]);
    for (let k = 0; k < 3; k++) for (let j = 2; j < 5; j++) for (let i = 5; i < 8; i++) labelmap.set(0, k, j, i, 4);
    labelmap.set(0, 5, 6, 0, 2); // another segment: not part of the surface
    const mesh = surfaceMesh(cropMask(labelmap, 4)!, geometry);
    expect(mesh.points.length).toBeGreaterThan(0);
    expect(mesh.polys.length % 4).toBe(0); // triangles: [3, a, b, c] each

    // Every vertex lies within half a voxel of the voxels' centres, on each axis of the grid.
    const low = voxelToWorld(geometry, [-0.5, 1.5, 4.5]);
    const high = voxelToWorld(geometry, [2.5, 4.5, 7.5]);
    const centre = voxelToWorld(geometry, [1, 3, 6]);
    for (let p = 0; p < mesh.points.length; p += 3) {
      for (let c = 0; c < 3; c++) {
        const [a, b] = [Math.min(low[c], high[c]), Math.max(low[c], high[c])];
        expect(mesh.points[p + c]).toBeGreaterThanOrEqual(a - 1e-4);
        expect(mesh.points[p + c]).toBeLessThanOrEqual(b + 1e-4);
      }
    }
    // The surface closes at k = 0 (the volume's edge): some vertices lie on the plane k = -0.5.
    const edge = voxelToWorld(geometry, [-0.5, 3, 6])[0];
    const onEdge = [...Array(mesh.points.length / 3).keys()].filter((n) => Math.abs(mesh.points[3 * n] - edge) < 1e-4);
    expect(onEdge.length).toBeGreaterThan(0);

    let outward = 0;
    for (let p = 0; p < mesh.normals!.length; p += 3) {
      const n = mesh.normals!.subarray(p, p + 3);
      expect(Math.hypot(n[0], n[1], n[2])).toBeCloseTo(1, 4);
      const away = [0, 1, 2].map((c) => mesh.points[p + c] - centre[c]);
      if (n[0] * away[0] + n[1] * away[1] + n[2] * away[2] > 0) outward++;
    }
    expect(outward).toBe(mesh.normals!.length / 3);
  });

  it("has no mask to give for a segment without voxels", () => {
    expect(cropMask(new Labelmap([6, 7, 8]), 1)).toBeNull();
  });

  it("crops the same mask when told a region that holds the segment, and none for a region without it", () => {
    const labelmap = new Labelmap([6, 7, 8]);
    for (let j = 1; j < 4; j++) for (let i = 2; i < 6; i++) labelmap.set(0, 3, j, i, 5);
    const whole = cropMask(labelmap, 5)!;
    expect(whole.start).toEqual([2, 0, 1]);
    expect(whole.dims).toEqual([3, 5, 6]);
    expect(cropMask(labelmap, 5, { start: [2, 0, 0], stop: [5, 5, 8] })).toEqual(whole);
    expect(cropMask(labelmap, 5, { start: [0, 0, 0], stop: [3, 7, 8] })).toBeNull();
  });
});
