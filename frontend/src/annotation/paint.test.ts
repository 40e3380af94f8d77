import { describe, expect, it } from "vitest";

import { LockedSegmentError, redoEdit, undoEdit } from "../interactive/apply";
import { type Index3, type Region, wholeVolume } from "../labelmap/region";
import { type Plane, type VoxelPoint, fillPolygon, paintStroke, planeOfView, thresholdRangeAt } from "./paint";

const offset = (shape: Index3, k: number, j: number, i: number) => (k * shape[1] + j) * shape[2] + i;

/** The voxels equal to ``value``, as "k,j,i" strings. */
function voxels(layer: ArrayLike<number>, shape: Index3, value: number): Set<string> {
  const found = new Set<string>();
  for (let k = 0; k < shape[0]; k++) {
    for (let j = 0; j < shape[1]; j++) {
      for (let i = 0; i < shape[2]; i++) if (layer[offset(shape, k, j, i)] === value) found.add(`${k},${j},${i}`);
    }
  }
  return found;
}

/** The voxels of a volume for which ``inside`` holds. */
function where(shape: Index3, inside: (k: number, j: number, i: number) => boolean): Set<string> {
  const found = new Set<string>();
  for (let k = 0; k < shape[0]; k++) {
    for (let j = 0; j < shape[1]; j++) for (let i = 0; i < shape[2]; i++) if (inside(k, j, i)) found.add(`${k},${j},${i}`);
  }
  return found;
}

/** Distance (mm) from p to the segment a–b, in the plane of the two axes u and v. */
function distanceToSegment(p: number[], a: VoxelPoint, b: VoxelPoint, u: number, v: number, spacing: Index3): number {
  const [px, py, ax, ay, bx, by] = [p[u], p[v], a[u], a[v], b[u], b[v]].map((x, n) => x * spacing[n % 2 ? v : u]);
  const dx = bx - ax;
  const dy = by - ay;
  const length2 = dx * dx + dy * dy;
  const t = length2 === 0 ? 0 : Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / length2));
  return Math.hypot(px - ax - t * dx, py - ay - t * dy);
}

const IN_PLANE: Record<0 | 1 | 2, [number, number]> = { 0: [1, 2], 1: [0, 2], 2: [0, 1] };

/** The point of plane (axis, slice) at row pu and column pv of the plane. */
function onPlane(axis: 0 | 1 | 2, slice: number, pu: number, pv: number): VoxelPoint {
  const [u, v] = IN_PLANE[axis];
  const p: [number, number, number] = [slice, slice, slice];
  p[u] = pu;
  p[v] = pv;
  return p;
}

/** A seeded random source of numbers in [0, 1), so failures repeat. */
function randomSource(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) >>> 0;
    return (state >>> 8) / 2 ** 24;
  };
}

describe("paintStroke", () => {
  it("paints a disc that is round in mm, so elliptic in voxels for anisotropic spacing", () => {
    // Axial plane: j spacing 1 mm, i spacing 2 mm, so the 4 mm brush reaches 4 rows but only 2 columns.
    const shape: Index3 = [3, 21, 21];
    const layer = new Uint8Array(21 * 21 * 3);
    paintStroke(layer, shape, [5, 1, 2], { axis: 0, slice: 1 }, [[1, 10, 10]], 4, 1, "paint");
    expect(voxels(layer, shape, 1)).toEqual(where(shape, (k, j, i) => k === 1 && (j - 10) ** 2 + (2 * (i - 10)) ** 2 <= 16));
    expect(voxels(layer, shape, 1).has("1,6,10")).toBe(true);
    expect(voxels(layer, shape, 1).has("1,10,12")).toBe(true);
    expect(voxels(layer, shape, 1).has("1,10,13")).toBe(false);

    // An i-slice (sagittal for an axial series): k spacing 3 mm, j 1 mm.
    const tall: Index3 = [21, 21, 3];
    const sagittal = new Uint8Array(21 * 21 * 3);
    paintStroke(sagittal, tall, [3, 1, 1], { axis: 2, slice: 2 }, [[10, 10, 2]], 6, 1, "paint");
    expect(voxels(sagittal, tall, 1)).toEqual(where(tall, (k, j, i) => i === 2 && (3 * (k - 10)) ** 2 + (j - 10) ** 2 <= 36));
  });

  it("always takes the voxel under the centre, even with a brush smaller than a voxel", () => {
    const shape: Index3 = [1, 5, 5];
    const layer = new Uint8Array(25);
    const edit = paintStroke(layer, shape, [1, 1, 1], { axis: 0, slice: 0 }, [[0, 2.4, 1.6]], 0.1, 1, "paint");
    expect(voxels(layer, shape, 1)).toEqual(new Set(["0,2,2"]));
    expect(edit?.region).toEqual({ start: [0, 2, 2], stop: [1, 3, 3] });
  });

  it("agrees with a plain distance check on random strokes, planes and spacings", () => {
    const random = randomSource(7);
    const shape: Index3 = [13, 17, 19];
    for (let round = 0; round < 60; round++) {
      const axis = Math.floor(random() * 3) as 0 | 1 | 2;
      const slice = Math.floor(random() * shape[axis]);
      const spacing: Index3 = [0.5 + random() * 2.5, 0.5 + random() * 2.5, 0.5 + random() * 2.5];
      const [u, v] = IN_PLANE[axis];
      // At least half a voxel's diagonal: then the voxels under the line lie inside the swept discs too.
      const radius = 0.5 * Math.hypot(spacing[u], spacing[v]) + random() * 6;
      const points: VoxelPoint[] = Array.from({ length: 1 + Math.floor(random() * 4) }, () =>
        // Sometimes outside the volume.
        onPlane(axis, slice, random() * (shape[u] + 6) - 3, random() * (shape[v] + 6) - 3),
      );
      const layer = new Uint8Array(13 * 17 * 19);
      paintStroke(layer, shape, spacing, { axis, slice }, points, radius, 1, "paint");
      const segments = points.length === 1 ? [[points[0], points[0]]] : points.slice(1).map((b, n) => [points[n], b]);
      const wrong: string[] = [];
      for (let k = 0; k < shape[0]; k++) {
        for (let j = 0; j < shape[1]; j++) {
          for (let i = 0; i < shape[2]; i++) {
            const p = [k, j, i];
            const distance = Math.min(...segments.map(([a, b]) => distanceToSegment(p, a, b, u, v, spacing)));
            const expected = p[axis] === slice && distance <= radius;
            if (Math.abs(distance - radius) < 1e-6) continue; // on the edge: either is right
            if (layer[offset(shape, k, j, i)] !== (expected ? 1 : 0)) wrong.push(`${p}`);
          }
        }
      }
      expect(wrong, `round ${round}`).toEqual([]);
    }
  });

  it("leaves no gaps along a fast stroke", () => {
    const shape: Index3 = [1, 40, 300];
    const spacing: Index3 = [1, 1, 1];
    const a: VoxelPoint = [0, 10, 5];
    const b: VoxelPoint = [0, 30, 290];
    const layer = new Uint8Array(40 * 300);
    paintStroke(layer, shape, spacing, { axis: 0, slice: 0 }, [a, b], 3, 1, "paint");
    expect(voxels(layer, shape, 1)).toEqual(where(shape, (k, j, i) => distanceToSegment([k, j, i], a, b, 1, 2, spacing) <= 3));

    // A brush thinner than a voxel still draws an unbroken (8-connected) line from end to end.
    const thin = new Uint8Array(40 * 300);
    paintStroke(thin, shape, spacing, { axis: 0, slice: 0 }, [[0, 0, 0], [0, 37, 20], [0, 5, 120]], 0.01, 1, "paint");
    const painted = [...voxels(thin, shape, 1)].map((key) => key.split(",").map(Number));
    for (let i = 0; i <= 120; i++) expect(painted.some(([, , pi]) => pi === i), `column ${i}`).toBe(true);
    for (let j = 0; j <= 37; j++) expect(painted.some(([, pj, pi]) => pj === j && pi <= 20), `row ${j}`).toBe(true);
    expect(thin[offset(shape, 0, 0, 0)] && thin[offset(shape, 0, 37, 20)] && thin[offset(shape, 0, 5, 120)]).toBe(1);
    for (const [, j, i] of painted) {
      const neighbours = painted.filter(([, pj, pi]) => Math.max(Math.abs(pj - j), Math.abs(pi - i)) === 1);
      expect(neighbours.length, `voxel ${j},${i}`).toBeGreaterThan(0);
    }
  });

  it("never paints over another segment", () => {
    const shape: Index3 = [1, 9, 9];
    const layer = new Uint8Array(81);
    for (let j = 0; j < 9; j++) layer[offset(shape, 0, j, 4)] = 2;
    const edit = paintStroke(layer, shape, [1, 1, 1], { axis: 0, slice: 0 }, [[0, 4, 4]], 10, 1, "paint")!;
    expect(voxels(layer, shape, 2)).toEqual(where(shape, (_k, _j, i) => i === 4));
    expect(voxels(layer, shape, 1)).toEqual(where(shape, (_k, _j, i) => i !== 4));
    for (let n = 0; n < edit.before.length; n++) {
      expect(edit.before[n] === edit.after[n] || (edit.before[n] === 0 && edit.after[n] === 1)).toBe(true);
    }
  });

  it("erases only the active segment, and only under the brush", () => {
    const shape: Index3 = [2, 9, 9];
    const layer = new Uint8Array(2 * 81);
    for (let v = 0; v < layer.length; v++) layer[v] = v % 3 === 0 ? 2 : 1;
    const original = Uint8Array.from(layer);
    paintStroke(layer, shape, [1, 1, 1], { axis: 0, slice: 1 }, [[1, 4, 0], [1, 4, 8]], 1.5, 1, "erase");
    for (let v = 0; v < layer.length; v++) {
      const [k, j] = [Math.floor(v / 81), Math.floor(v / 9) % 9];
      const under = k === 1 && Math.abs(j - 4) <= 1;
      expect(layer[v]).toBe(under && original[v] === 1 ? 0 : original[v]);
    }
  });

  it("refuses a locked segment and changes nothing", () => {
    const shape: Index3 = [1, 5, 5];
    const layer = new Uint8Array(25).fill(1, 0, 5);
    const plane: Plane = { axis: 0, slice: 0 };
    const locked = new Set([1]);
    for (const mode of ["paint", "erase"] as const) {
      expect(() => paintStroke(layer, shape, [1, 1, 1], plane, [[0, 2, 2]], 3, 1, mode, { locked })).toThrow(LockedSegmentError);
    }
    const square: VoxelPoint[] = [[0, 0, 0], [0, 0, 5], [0, 5, 5], [0, 5, 0]];
    expect(() => fillPolygon(layer, shape, plane, square, 1, "fill", { locked })).toThrow(LockedSegmentError);
    expect(() => fillPolygon(layer, shape, plane, square, 1, "erase", { locked })).toThrow(LockedSegmentError);
    expect(layer).toEqual(new Uint8Array(25).fill(1, 0, 5));
    // Another segment being locked does not matter: paint never touches it.
    expect(paintStroke(layer, shape, [1, 1, 1], plane, [[0, 2, 2]], 1, 3, "paint", { locked })).not.toBeNull();
  });

  it("paints only voxels in the threshold range; erasing ignores the range", () => {
    const shape: Index3 = [1, 11, 20];
    const image = Float32Array.from({ length: 220 }, (_, v) => (v % 20) * 10); // value = 10 i
    const layer = new Uint8Array(220);
    const plane: Plane = { axis: 0, slice: 0 };
    const options = { image, range: { lower: 50, upper: 120 } };
    paintStroke(layer, shape, [1, 1, 1], plane, [[0, 5, 2], [0, 5, 17]], 3, 1, "paint", options);
    const stroke = (j: number, i: number) => distanceToSegment([0, j, i], [0, 5, 2], [0, 5, 17], 1, 2, [1, 1, 1]) <= 3;
    expect(voxels(layer, shape, 1)).toEqual(where(shape, (_k, j, i) => stroke(j, i) && i >= 5 && i <= 12));
    layer.fill(1);
    paintStroke(layer, shape, [1, 1, 1], plane, [[0, 5, 2], [0, 5, 17]], 3, 1, "erase", options);
    expect(voxels(layer, shape, 0)).toEqual(where(shape, (_k, j, i) => stroke(j, i)));
    expect(() => paintStroke(layer, shape, [1, 1, 1], plane, [[0, 5, 2]], 3, 1, "paint", { range: options.range })).toThrow(
      "needs the image",
    );
  });

  it("returns null when nothing changes", () => {
    const shape: Index3 = [1, 5, 5];
    const layer = new Uint8Array(25);
    const plane: Plane = { axis: 0, slice: 0 };
    expect(paintStroke(layer, shape, [1, 1, 1], plane, [], 2, 1, "paint")).toBeNull();
    expect(paintStroke(layer, shape, [1, 1, 1], plane, [[0, 20, 20]], 2, 1, "paint")).toBeNull();
    expect(paintStroke(layer, shape, [1, 1, 1], plane, [[0, 2, 2]], 2, 1, "erase")).toBeNull();
    expect(paintStroke(layer, shape, [1, 1, 1], plane, [[0, 2, 2]], 2, 1, "paint")).not.toBeNull();
    expect(paintStroke(layer, shape, [1, 1, 1], plane, [[0, 2, 2]], 2, 1, "paint")).toBeNull();
  });

  it("takes segments above 255 in a uint16 layer, and refuses bad segments and planes", () => {
    const shape: Index3 = [2, 3, 3];
    const layer = new Uint16Array(18);
    paintStroke(layer, shape, [1, 1, 1], { axis: 1, slice: 2 }, [[1, 2, 1]], 0, 300, "paint");
    expect(layer[offset(shape, 1, 2, 1)]).toBe(300);
    const small = new Uint8Array(18);
    expect(() => paintStroke(small, shape, [1, 1, 1], { axis: 0, slice: 0 }, [[0, 0, 0]], 1, 300, "paint")).toThrow(RangeError);
    expect(() => paintStroke(layer, shape, [1, 1, 1], { axis: 0, slice: 2 }, [[2, 0, 0]], 1, 1, "paint")).toThrow("slice 2");
    expect(() => paintStroke(layer, shape, [1, 1, 1], { axis: 0, slice: 0 }, [[0, NaN, 0]], 1, 1, "paint")).toThrow(RangeError);
  });

  it("paints a 20 mm brush on a 512 × 512 slice in well under 10 ms", () => {
    const shape: Index3 = [3, 512, 512];
    const layer = new Uint8Array(3 * 512 * 512);
    const image = new Int16Array(layer.length).fill(40);
    const plane: Plane = { axis: 0, slice: 1 };
    // A mouse move's worth of stroke: a few points 10 voxels apart, a 57-voxel-wide brush at 0.7 mm.
    const points: VoxelPoint[] = Array.from({ length: 8 }, (_, n) => [1, 200 + 5 * n, 150 + 10 * n]);
    const run = () => {
      layer.fill(0);
      return paintStroke(layer, shape, [2, 0.7, 0.7], plane, points, 20, 1, "paint", { image, range: { lower: 0, upper: 100 } });
    };
    for (let n = 0; n < 5; n++) run(); // warm up the JIT
    const runs = 20;
    const begin = performance.now();
    for (let n = 0; n < runs; n++) run();
    const each = (performance.now() - begin) / runs;
    expect(run()?.region.stop[1]).toBeGreaterThan(260);
    expect(each).toBeLessThan(10);
  });
});

describe("fillPolygon", () => {
  // An L in (u, v), the plane's rows and columns; vertices between voxel centres, so none lies on an edge.
  const L: [number, number][] = [[0.5, 0.5], [0.5, 2.5], [3.5, 2.5], [3.5, 5.5], [5.5, 5.5], [5.5, 0.5]];
  const inL = (u: number, v: number) => (u >= 1 && u <= 5 && v >= 1 && v <= 2) || (u >= 4 && u <= 5 && v >= 3 && v <= 5);
  const shape: Index3 = [8, 9, 10];

  for (const axis of [0, 1, 2] as const) {
    it(`fills exactly the voxels inside a concave polygon on axis ${axis}`, () => {
      const [u, v] = IN_PLANE[axis];
      const slice = 3;
      const toPoint = ([pu, pv]: [number, number]) => onPlane(axis, slice, pu, pv);
      const layer = new Uint8Array(8 * 9 * 10);
      layer[offset(shape, 3, 3, 3)] = 2; // inside the L on every axis: kept
      const edit = fillPolygon(layer, shape, { axis, slice }, L.map(toPoint), 1, "fill")!;
      const expected = where(shape, (...p) => p[axis] === slice && inL(p[u], p[v]) && !(p[0] === 3 && p[1] === 3 && p[2] === 3));
      expect(voxels(layer, shape, 1)).toEqual(expected);
      expect(layer[offset(shape, 3, 3, 3)]).toBe(2);
      const start: Index3 = [0, 0, 0];
      const stop: Index3 = [0, 0, 0];
      [start[axis], stop[axis], start[u], stop[u], start[v], stop[v]] = [slice, slice + 1, 1, 6, 1, 6];
      expect(edit.region).toEqual({ start, stop });

      fillPolygon(layer, shape, { axis, slice }, L.map(toPoint).reverse(), 1, "erase");
      expect(voxels(layer, shape, 1).size).toBe(0);
      expect(layer[offset(shape, 3, 3, 3)]).toBe(2);
    });
  }

  it("takes the low edges and leaves the high ones, so corners at voxel centres take the square's area", () => {
    const small: Index3 = [1, 6, 6];
    const layer = new Uint8Array(36);
    fillPolygon(layer, small, { axis: 0, slice: 0 }, [[0, 0, 0], [0, 0, 3], [0, 3, 3], [0, 3, 0]], 1, "fill");
    expect(voxels(layer, small, 1)).toEqual(where(small, (_k, j, i) => j < 3 && i < 3));
    // The neighbour sharing the edge at i = 3 takes the rest of those rows and nothing twice.
    const edit = fillPolygon(layer, small, { axis: 0, slice: 0 }, [[0, 0, 3], [0, 0, 6], [0, 3, 6], [0, 3, 3]], 2, "fill");
    expect(voxels(layer, small, 2)).toEqual(where(small, (_k, j, i) => j < 3 && i >= 3));
    expect(edit?.region).toEqual({ start: [0, 0, 3], stop: [1, 3, 6] });
  });

  it("fills by the non-zero rule: a lasso drawn twice round is filled, not emptied", () => {
    const small: Index3 = [1, 6, 6];
    const layer = new Uint8Array(36);
    const ring: VoxelPoint[] = [[0, 0.5, 0.5], [0, 0.5, 4.5], [0, 4.5, 4.5], [0, 4.5, 0.5]];
    fillPolygon(layer, small, { axis: 0, slice: 0 }, [...ring, ...ring], 1, "fill");
    expect(voxels(layer, small, 1)).toEqual(where(small, (_k, j, i) => j >= 1 && j <= 4 && i >= 1 && i <= 4));
  });

  it("agrees with a plain winding-number check on random polygons", () => {
    const random = randomSource(5);
    const grid: Index3 = [11, 13, 12];
    for (let round = 0; round < 100; round++) {
      const axis = Math.floor(random() * 3) as 0 | 1 | 2;
      const slice = Math.floor(random() * grid[axis]);
      const [u, v] = IN_PLANE[axis];
      const corners = Array.from({ length: 3 + Math.floor(random() * 7) }, () => [random() * 18 - 3, random() * 18 - 3]);
      const polygon = corners.map(([pu, pv]) => onPlane(axis, slice, pu, pv));
      const layer = new Uint8Array(11 * 13 * 12);
      fillPolygon(layer, grid, { axis, slice }, polygon, 1, "fill");
      const wrong: string[] = [];
      for (let k = 0; k < grid[0]; k++) {
        for (let j = 0; j < grid[1]; j++) {
          for (let i = 0; i < grid[2]; i++) {
            const p = [k, j, i];
            let winding = 0;
            let onEdge = false;
            corners.forEach(([au, av], n) => {
              const [bu, bv] = corners[(n + 1) % corners.length];
              const side = (bu - au) * (p[v] - av) - (bv - av) * (p[u] - au);
              const length = Math.hypot(bu - au, bv - av);
              const t = ((p[u] - au) * (bu - au) + (p[v] - av) * (bv - av)) / length ** 2;
              if (Math.abs(side) / length < 1e-6 && t > -1e-6 && t < 1 + 1e-6) onEdge = true;
              if (au <= p[u] && bu > p[u] && side < 0) winding++;
              if (bu <= p[u] && au > p[u] && side > 0) winding--;
            });
            if (onEdge) continue;
            const expected = p[axis] === slice && winding !== 0;
            if (layer[offset(grid, k, j, i)] !== (expected ? 1 : 0)) wrong.push(`${p}`);
          }
        }
      }
      expect(wrong, `round ${round}`).toEqual([]);
    }
  });

  it("clips a polygon that reaches outside the volume, and returns null for none or a degenerate one", () => {
    const small: Index3 = [1, 4, 4];
    const layer = new Uint8Array(16);
    const plane: Plane = { axis: 0, slice: 0 };
    fillPolygon(layer, small, plane, [[0, -10, -10], [0, -10, 1.5], [0, 20, 1.5], [0, 20, -10]], 1, "fill");
    expect(voxels(layer, small, 1)).toEqual(where(small, (_k, _j, i) => i <= 1));
    expect(fillPolygon(layer, small, plane, [[0, 0, 0], [0, 3, 3]], 1, "fill")).toBeNull();
    expect(fillPolygon(layer, small, plane, [[0, 10, 10], [0, 10, 12], [0, 12, 12]], 1, "fill")).toBeNull();
  });
});

describe("edits", () => {
  it("undo and redo restore the layer exactly", () => {
    const shape: Index3 = [4, 30, 30];
    const layer = Uint8Array.from({ length: 3600 }, (_, v) => [0, 0, 1, 2, 0][v % 5]);
    const original = Uint8Array.from(layer);
    const spacing: Index3 = [3, 0.8, 1.1];
    const stroke = paintStroke(layer, shape, spacing, { axis: 1, slice: 12 }, [[0, 12, 3], [3, 12, 25]], 2.5, 1, "paint")!;
    const afterStroke = Uint8Array.from(layer);
    const cut = fillPolygon(layer, shape, { axis: 0, slice: 2 }, [[2, 3, 3], [2, 3, 20], [2, 20, 11]], 1, "erase")!;
    const afterCut = Uint8Array.from(layer);
    undoEdit(layer, shape, cut);
    expect(layer).toEqual(afterStroke);
    undoEdit(layer, shape, stroke);
    expect(layer).toEqual(original);
    redoEdit(layer, shape, stroke);
    expect(layer).toEqual(afterStroke);
    redoEdit(layer, shape, cut);
    expect(layer).toEqual(afterCut);
  });

  it("keeps segmentBounds holding the segment: the given bounds joined with the region written", () => {
    const shape: Index3 = [5, 20, 20];
    const layer = new Uint8Array(2000);
    const plane: Plane = { axis: 0, slice: 4 };
    const plain = paintStroke(layer, shape, [1, 1, 1], plane, [[4, 10, 10]], 2, 1, "paint")!;
    expect(plain.segmentBounds).toEqual(wholeVolume(shape));
    expect(plain.region).toEqual({ start: [4, 8, 8], stop: [5, 13, 13] });

    const bounds: Region = { start: [4, 8, 8], stop: [5, 13, 13] };
    const more = paintStroke(layer, shape, [1, 1, 1], plane, [[4, 10, 14]], 2, 1, "paint", { segmentBounds: bounds })!;
    expect(more.segmentBounds).toEqual({ start: [4, 8, 8], stop: [5, 13, 17] });
    const elsewhere = fillPolygon(layer, shape, { axis: 0, slice: 1 }, [[1, 0, 0], [1, 0, 2], [1, 2, 2], [1, 2, 0]], 1, "fill", {
      segmentBounds: more.segmentBounds,
    })!;
    expect(elsewhere.segmentBounds).toEqual({ start: [1, 0, 0], stop: [5, 13, 17] });
    const erased = paintStroke(layer, shape, [1, 1, 1], plane, [[4, 10, 10]], 1, 1, "erase", {
      segmentBounds: elsewhere.segmentBounds,
    })!;
    expect(erased.segmentBounds).toEqual(elsewhere.segmentBounds);
  });
});

describe("thresholdRangeAt", () => {
  it("is the mean ± 2 standard deviations of the values under the brush", () => {
    const shape: Index3 = [1, 9, 9];
    const flat = new Int16Array(81).fill(-1000);
    expect(thresholdRangeAt(flat, shape, { axis: 0, slice: 0 }, [0, 4, 4], 2, [1, 1, 1])).toEqual({ lower: -1000, upper: -1000 });

    // Under a brush of radius 1 (5 voxels: the centre and its 4 neighbours) the values are 10, 20, 30, 40, 50.
    const image = new Float64Array(81).fill(999);
    [[4, 4, 30], [3, 4, 10], [5, 4, 50], [4, 3, 20], [4, 5, 40]].forEach(([j, i, value]) => (image[j * 9 + i] = value));
    const range = thresholdRangeAt(image, shape, { axis: 0, slice: 0 }, [0, 4, 4], 1, [1, 1, 1]);
    const sd = Math.sqrt(200);
    expect(range.lower).toBeCloseTo(30 - 2 * sd, 9);
    expect(range.upper).toBeCloseTo(30 + 2 * sd, 9);
  });

  it("uses the same footprint as the brush and throws outside the volume", () => {
    const shape: Index3 = [7, 3, 7];
    const image = Float32Array.from({ length: 147 }, (_, v) => Math.floor(v / 21)); // value = k
    // A j-slice with k spacing 2: a 2 mm brush reaches one slice up and down.
    const range = thresholdRangeAt(image, shape, { axis: 1, slice: 1 }, [3, 1, 3], 2, [2, 1, 1]);
    expect(range.lower).toBeLessThan(2.5);
    expect(range.upper).toBeGreaterThan(3.5);
    expect(range.lower).toBeGreaterThan(1);
    expect(() => thresholdRangeAt(image, shape, { axis: 1, slice: 1 }, [30, 1, 30], 2, [2, 1, 1])).toThrow("outside");
  });
});

describe("planeOfView", () => {
  const axial = [1, 0, 0, 0, 1, 0, 0, 0, 1];

  it("finds the voxel axis of an axial series' views", () => {
    expect(planeOfView([0, 0, -1], axial)).toEqual({ axis: 0, aligned: true });
    expect(planeOfView([0, 1, 0], axial)).toEqual({ axis: 1, aligned: true });
    expect(planeOfView([-1, 0, 0], axial)).toEqual({ axis: 2, aligned: true });
  });

  it("follows a sagittal series' direction and tells tilted views apart", () => {
    // Rows along P, columns towards I: the slice normal (row × column) is R.
    const sagittal = [0, 1, 0, 0, 0, -1, -1, 0, 0];
    expect(planeOfView([1, 0, 0], sagittal)).toEqual({ axis: 0, aligned: true });
    expect(planeOfView([0, 0, 1], sagittal)).toEqual({ axis: 1, aligned: true });
    expect(planeOfView([0, 1, 0], sagittal)).toEqual({ axis: 2, aligned: true });
    const tilt = (degrees: number): [number, number, number] => {
      const angle = (degrees * Math.PI) / 180;
      return [Math.cos(angle), Math.sin(angle), 0];
    };
    expect(planeOfView(tilt(0.9), sagittal)).toEqual({ axis: 0, aligned: true });
    expect(planeOfView(tilt(1.1), sagittal)).toEqual({ axis: 0, aligned: false });
    expect(planeOfView(tilt(60), sagittal)).toEqual({ axis: 2, aligned: false });
  });

  it("works on an oblique grid", () => {
    const c = Math.cos(Math.PI / 6);
    const s = Math.sin(Math.PI / 6);
    const oblique = [c, s, 0, -s, c, 0, 0, 0, 1]; // rotated 30° about S
    expect(planeOfView([c, s, 0], oblique)).toEqual({ axis: 2, aligned: true });
    expect(planeOfView([1, 0, 0], oblique)).toEqual({ axis: 2, aligned: false });
    expect(planeOfView([0, 0, 2], oblique)).toEqual({ axis: 0, aligned: true });
    expect(() => planeOfView([0, 0, 0], oblique)).toThrow(RangeError);
  });
});
