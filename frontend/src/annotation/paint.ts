// Manual editing of one layer [k, j, i] on one slice plane: the brush, the threshold brush and the scissors.
// Pure functions that return the same LabelEdit as AI frames (interactive/apply.ts), so one undo stack serves
// both. Each builds a 0/1 mask over the bounding box of what it touches on the plane, then writes it once.

import { type LabelEdit, LockedSegmentError } from "../interactive/apply";
import {
  type Index3,
  type LabelArray,
  type Region,
  checkRegion,
  unionRegion,
  volumeSize,
  wholeVolume,
} from "../labelmap/region";
import { type Vec3, cross } from "../viewer/geometry";

/** A slice of the volume: axis 0 holds k fixed (axial for an axial series), 1 holds j, 2 holds i. */
export interface Plane {
  axis: 0 | 1 | 2;
  slice: number;
}

/** Continuous voxel coordinates [k, j, i]; integers are voxel centres. */
export type VoxelPoint = readonly [number, number, number];

/** Image values a threshold brush paints, both ends included. */
export interface ThresholdRange {
  lower: number;
  upper: number;
}

export interface EditOptions {
  /** Segments nothing may be written into. */
  locked?: ReadonlySet<number>;
  /** A region known to hold every voxel of the segment (as in ApplyOptions); default: the whole volume. */
  segmentBounds?: Region;
}

export interface PaintOptions extends EditOptions {
  /** The volume's scalar values (same flat layout as the layer); with ``range``, the threshold brush. */
  image?: ArrayLike<number>;
  range?: ThresholdRange;
}

// Rounding slack, in voxels, so that a voxel centre exactly on the brush's or polygon's edge is decided the
// same way whatever the spacing's binary representation.
const EPS = 1e-9;

/** A plane's two in-plane axes (u: rows, v: columns) and how to address its voxels in the flat layer. */
interface PlaneGrid {
  axis: 0 | 1 | 2;
  slice: number;
  uAxis: number;
  vAxis: number;
  nu: number;
  nv: number;
  base: number;
  strideU: number;
  strideV: number;
}

function planeGrid(shape: Index3, plane: Plane): PlaneGrid {
  const { axis, slice } = plane;
  if (axis !== 0 && axis !== 1 && axis !== 2) throw new RangeError(`a plane's axis is 0, 1 or 2, not ${axis}`);
  if (!Number.isInteger(slice) || slice < 0 || slice >= shape[axis]) {
    throw new RangeError(`slice ${slice} is not in the volume [${shape}] along axis ${axis}`);
  }
  const strides = [shape[1] * shape[2], shape[2], 1];
  const [uAxis, vAxis] = axis === 0 ? [1, 2] : axis === 1 ? [0, 2] : [0, 1];
  return {
    axis,
    slice,
    uAxis,
    vAxis,
    nu: shape[uAxis],
    nv: shape[vAxis],
    base: slice * strides[axis],
    strideU: strides[uAxis],
    strideV: strides[vAxis],
  };
}

/** A 0/1 mask over a box of the plane (rows u0.., columns v0..), row-major. */
interface Box {
  u0: number;
  v0: number;
  rows: number;
  cols: number;
  mask: Uint8Array;
}

/** The box of voxels within continuous bounds, clipped to the plane; null when none lies inside. */
function newBox(grid: PlaneGrid, uMin: number, uMax: number, vMin: number, vMax: number): Box | null {
  const u0 = Math.max(0, Math.floor(uMin));
  const u1 = Math.min(grid.nu - 1, Math.ceil(uMax));
  const v0 = Math.max(0, Math.floor(vMin));
  const v1 = Math.min(grid.nv - 1, Math.ceil(vMax));
  if (u0 > u1 || v0 > v1) return null;
  const rows = u1 - u0 + 1;
  const cols = v1 - v0 + 1;
  return { u0, v0, rows, cols, mask: new Uint8Array(rows * cols) };
}

function markVoxel(box: Box, u: number, v: number): void {
  const r = u - box.u0;
  const c = v - box.v0;
  if (r >= 0 && r < box.rows && c >= 0 && c < box.cols) box.mask[r * box.cols + c] = 1;
}

/** Marks columns [first, last] of row u (clipped to the box). */
function markRun(box: Box, u: number, first: number, last: number): void {
  const r = u - box.u0;
  if (r < 0 || r >= box.rows) return;
  const start = Math.max(first - box.v0, 0);
  const stop = Math.min(last - box.v0 + 1, box.cols);
  if (start < stop) box.mask.fill(1, r * box.cols + start, r * box.cols + stop);
}

/** Narrows range to the x where lo <= c0 + c1·x <= hi. */
function narrow(range: Float64Array, c0: number, c1: number, lo: number, hi: number): void {
  if (c1 === 0) {
    if (c0 < lo || c0 > hi) range[0] = Infinity;
    return;
  }
  const x1 = (lo - c0) / c1;
  const x2 = (hi - c0) / c1;
  range[0] = Math.max(range[0], Math.min(x1, x2));
  range[1] = Math.min(range[1], Math.max(x1, x2));
}

const scratch = new Float64Array(2);

/**
 * Marks the voxel centres within ``radius`` mm of the segment A–B of the plane (a capsule). Row by row, in mm
 * from A: the capsule is convex, so its part of a row is one interval, the union of those of the two end discs
 * and of the band between them; only the covered runs are visited.
 */
function sweepCapsule(
  box: Box,
  au: number,
  av: number,
  bu: number,
  bv: number,
  su: number,
  sv: number,
  radius: number,
): void {
  const du = (bu - au) * su;
  const dv = (bv - av) * sv;
  const length2 = du * du + dv * dv;
  const halfWidth = radius * Math.sqrt(length2);
  const r2 = radius * radius;
  const first = Math.max(box.u0, Math.ceil(Math.min(au, bu) - radius / su - EPS));
  const last = Math.min(box.u0 + box.rows - 1, Math.floor(Math.max(au, bu) + radius / su + EPS));
  for (let u = first; u <= last; u++) {
    const y = (u - au) * su;
    let lo = Infinity;
    let hi = -Infinity;
    let h2 = r2 - y * y;
    if (h2 >= 0) {
      const h = Math.sqrt(h2);
      lo = -h;
      hi = h;
    }
    h2 = r2 - (y - du) * (y - du);
    if (h2 >= 0) {
      const h = Math.sqrt(h2);
      lo = Math.min(lo, dv - h);
      hi = Math.max(hi, dv + h);
    }
    if (length2 > 0) {
      // The band: 0 <= (P − A)·d <= |d|² and |(P − A) × d| <= r|d|, both linear in P's column x.
      scratch[0] = -Infinity;
      scratch[1] = Infinity;
      narrow(scratch, y * du, dv, 0, length2);
      narrow(scratch, y * dv, -du, -halfWidth, halfWidth);
      if (scratch[0] <= scratch[1]) {
        lo = Math.min(lo, scratch[0]);
        hi = Math.max(hi, scratch[1]);
      }
    }
    if (lo <= hi) markRun(box, u, Math.ceil(av + lo / sv - EPS), Math.floor(av + hi / sv + EPS));
  }
}

/** Marks the voxels under the line A–B, one per step of at most a voxel: 8-connected, so a thin brush has no gaps. */
function markLine(box: Box, au: number, av: number, bu: number, bv: number): void {
  const steps = Math.ceil(Math.max(Math.abs(bu - au), Math.abs(bv - av)));
  for (let s = 0; s <= steps; s++) {
    const t = steps === 0 ? 0 : s / steps;
    markVoxel(box, Math.round(au + t * (bu - au)), Math.round(av + t * (bv - av)));
  }
}

function checkSegment(layer: LabelArray, segment: number): void {
  const largest = layer instanceof Uint16Array ? 0xffff : 0xff;
  if (!Number.isInteger(segment) || segment < 1 || segment > largest) {
    throw new RangeError(`segment numbers in this layer go from 1 to ${largest}, not ${segment}`);
  }
}

/** The checks every edit makes before touching anything; returns the segment bounds to extend. */
function prepare(layer: LabelArray, shape: Index3, segment: number, options: EditOptions): Region {
  checkSegment(layer, segment);
  if (options.locked?.has(segment)) throw new LockedSegmentError(segment);
  if (layer.length !== volumeSize(shape)) {
    throw new RangeError(`a layer of ${layer.length} voxels for a volume of shape [${shape}]`);
  }
  const bounds = options.segmentBounds ?? wholeVolume(shape);
  checkRegion(bounds, shape);
  return bounds;
}

/**
 * The layer's values in rows u0..u1, columns v0..v1 of the plane, in C order of that one-slice region (u is the
 * lower axis, so it is outer). Unlike copyRegion it does not copy row by row, which costs a call per voxel on
 * an i-slice, where a row is one voxel long.
 */
function copyPlane(layer: LabelArray, grid: PlaneGrid, u0: number, u1: number, v0: number, v1: number): LabelArray {
  const length = (u1 - u0 + 1) * (v1 - v0 + 1);
  const out = layer instanceof Uint16Array ? new Uint16Array(length) : new Uint8Array(length);
  for (let u = u0, n = 0; u <= u1; u++) {
    let index = grid.base + u * grid.strideU + v0 * grid.strideV;
    for (let v = v0; v <= v1; v++, n++, index += grid.strideV) out[n] = layer[index];
  }
  return out;
}

/**
 * Writes the box's marked voxels: background -> segment (paint), or segment -> background (erase); other
 * segments are never touched. With ``range``, painting only takes voxels whose image value lies in it.
 */
function writeBox(
  layer: LabelArray,
  grid: PlaneGrid,
  box: Box,
  segment: number,
  erase: boolean,
  bounds: Region,
  image?: ArrayLike<number>,
  range?: ThresholdRange,
): LabelEdit | null {
  const { mask, rows, cols, u0, v0 } = box;
  const { base, strideU, strideV } = grid;
  const from = erase ? segment : 0;
  const threshold = !erase && image !== undefined && range !== undefined;
  const lower = range?.lower ?? -Infinity;
  const upper = range?.upper ?? Infinity;
  // First pass: mark the voxels that change with 2 and find their box.
  let uLow = Infinity, uHigh = -1, vLow = Infinity, vHigh = -1;
  for (let r = 0, n = 0; r < rows; r++) {
    let index = base + (u0 + r) * strideU + v0 * strideV;
    for (let c = 0; c < cols; c++, n++, index += strideV) {
      if (mask[n] === 0 || layer[index] !== from) continue;
      if (threshold) {
        const value = image[index];
        if (!(value >= lower && value <= upper)) continue;
      }
      mask[n] = 2;
      if (uLow === Infinity) uLow = r;
      uHigh = r;
      if (c < vLow) vLow = c;
      if (c > vHigh) vHigh = c;
    }
  }
  if (uHigh < 0) return null;
  const start: Index3 = [0, 0, 0];
  const stop: Index3 = [0, 0, 0];
  start[grid.axis] = grid.slice;
  stop[grid.axis] = grid.slice + 1;
  start[grid.uAxis] = u0 + uLow;
  stop[grid.uAxis] = u0 + uHigh + 1;
  start[grid.vAxis] = v0 + vLow;
  stop[grid.vAxis] = v0 + vHigh + 1;
  const region: Region = { start, stop };
  const before = copyPlane(layer, grid, u0 + uLow, u0 + uHigh, v0 + vLow, v0 + vHigh);
  const to = erase ? 0 : segment;
  for (let r = uLow; r <= uHigh; r++) {
    let index = base + (u0 + r) * strideU + (v0 + vLow) * strideV;
    for (let n = r * cols + vLow; n <= r * cols + vHigh; n++, index += strideV) if (mask[n] === 2) layer[index] = to;
  }
  const after = copyPlane(layer, grid, u0 + uLow, u0 + uHigh, v0 + vLow, v0 + vHigh);
  return { segment, region, before, after, segmentBounds: unionRegion(bounds, region) ?? region };
}

function checkPoint(point: VoxelPoint): void {
  if (point.length !== 3 || !point.every(Number.isFinite)) throw new RangeError(`[${point}] is not a voxel position`);
}

/** The brush's footprint along a polyline on the plane, as a box mask; null when it misses the plane. */
function strokeBox(grid: PlaneGrid, spacing: Index3, points: readonly VoxelPoint[], radiusMm: number): Box | null {
  const { uAxis, vAxis } = grid;
  const su = spacing[uAxis];
  const sv = spacing[vAxis];
  const ru = radiusMm / su;
  const rv = radiusMm / sv;
  let uMin = Infinity, uMax = -Infinity, vMin = Infinity, vMax = -Infinity;
  for (const point of points) {
    checkPoint(point);
    uMin = Math.min(uMin, point[uAxis] - ru);
    uMax = Math.max(uMax, point[uAxis] + ru);
    vMin = Math.min(vMin, point[vAxis] - rv);
    vMax = Math.max(vMax, point[vAxis] + rv);
  }
  const box = newBox(grid, uMin, uMax, vMin, vMax);
  if (!box) return null;
  for (let n = 0; n === 0 || n < points.length - 1; n++) {
    const a = points[n];
    const b = points[Math.min(n + 1, points.length - 1)]; // a single point: a segment of length 0
    sweepCapsule(box, a[uAxis], a[vAxis], b[uAxis], b[vAxis], su, sv, radiusMm);
    markLine(box, a[uAxis], a[vAxis], b[uAxis], b[vAxis]);
  }
  return box;
}

function checkSpacing(spacing: Index3, radiusMm: number): void {
  if (!spacing.every((s) => s > 0 && Number.isFinite(s))) {
    throw new RangeError(`the spacing [${spacing}] is not positive`);
  }
  if (!(radiusMm >= 0 && Number.isFinite(radiusMm))) throw new RangeError(`a brush radius of ${radiusMm} mm`);
}

/**
 * A brush stroke on ``plane``: a disc of ``radiusMm`` (round in mm, so elliptic in voxels where the two in-plane
 * spacings differ; always at least the voxel under the centre) swept along the polyline ``points``. "paint"
 * turns background into ``segment``, "erase" turns ``segment`` into background; other segments are never
 * touched. With ``options.image`` and ``options.range`` painting only takes voxels whose value lies in the
 * range (the threshold brush; erasing ignores it). Returns the edit, or null when no voxel changed. Throws
 * LockedSegmentError when ``segment`` is locked.
 */
export function paintStroke(
  layer: LabelArray,
  shape: Index3,
  spacing: Index3,
  plane: Plane,
  points: readonly VoxelPoint[],
  radiusMm: number,
  segment: number,
  mode: "paint" | "erase",
  options: PaintOptions = {},
): LabelEdit | null {
  const bounds = prepare(layer, shape, segment, options);
  const grid = planeGrid(shape, plane);
  checkSpacing(spacing, radiusMm);
  const { image, range } = options;
  if (range !== undefined && image === undefined) throw new TypeError("a threshold range needs the image");
  if (image !== undefined && image.length !== layer.length) {
    throw new RangeError(`an image of ${image.length} voxels for a layer of ${layer.length}`);
  }
  if (points.length === 0) return null;
  const box = strokeBox(grid, spacing, points, radiusMm);
  if (!box) return null;
  return writeBox(layer, grid, box, segment, mode === "erase", bounds, image, range);
}

/**
 * The scissors: every voxel of ``plane`` whose centre lies inside the closed ``polygon`` (continuous voxel
 * coordinates) becomes ``segment`` where it was background ("fill"), or background where it was the segment
 * ("erase"). Inside is by the non-zero winding rule, so a lasso that loops over itself fills its loops instead of
 * punching holes. A centre exactly on an edge counts as inside on the low side of each axis and outside on the
 * high side, so a square with corners at voxel centres [0, 0] and [3, 3] takes 3 × 3 voxels, and two polygons
 * sharing an edge never both take a voxel.
 */
export function fillPolygon(
  layer: LabelArray,
  shape: Index3,
  plane: Plane,
  polygon: readonly VoxelPoint[],
  segment: number,
  mode: "fill" | "erase",
  options: EditOptions = {},
): LabelEdit | null {
  const bounds = prepare(layer, shape, segment, options);
  const grid = planeGrid(shape, plane);
  if (polygon.length < 3) return null;
  const n = polygon.length;
  const us = new Float64Array(n);
  const vs = new Float64Array(n);
  let uMin = Infinity, uMax = -Infinity, vMin = Infinity, vMax = -Infinity;
  polygon.forEach((point, m) => {
    checkPoint(point);
    us[m] = point[grid.uAxis];
    vs[m] = point[grid.vAxis];
    uMin = Math.min(uMin, us[m]);
    uMax = Math.max(uMax, us[m]);
    vMin = Math.min(vMin, vs[m]);
    vMax = Math.max(vMax, vs[m]);
  });
  const box = newBox(grid, uMin, uMax, vMin, vMax);
  if (!box) return null;
  // Edges by the first row they cross, so each row looks only at the edges that cross it. Half-open in u: an
  // edge crosses row u when min u <= u < max u, so a vertex on a row is counted once.
  const firstRow = new Float64Array(n);
  const order: number[] = [];
  for (let b = 0; b < n; b++) {
    const a = b === 0 ? n - 1 : b - 1;
    if (us[a] === us[b]) continue; // along a row: crosses none
    firstRow[b] = Math.ceil(Math.min(us[a], us[b]));
    order.push(b);
  }
  order.sort((x, y) => firstRow[x] - firstRow[y]);
  const active: number[] = [];
  const xs = new Float64Array(n); // one row's crossings: column and winding
  const ws = new Int8Array(n);
  for (let u = box.u0, next = 0; u < box.u0 + box.rows; u++) {
    while (next < order.length && firstRow[order[next]] <= u) active.push(order[next++]);
    let count = 0;
    let kept = 0;
    for (let e = 0; e < active.length; e++) {
      const b = active[e];
      const a = b === 0 ? n - 1 : b - 1;
      if (Math.max(us[a], us[b]) <= u) continue; // passed: dropped
      active[kept++] = b;
      const x = vs[a] + ((u - us[a]) * (vs[b] - vs[a])) / (us[b] - us[a]);
      const w = us[b] > us[a] ? 1 : -1;
      let m = count++;
      for (; m > 0 && xs[m - 1] > x; m--) {
        xs[m] = xs[m - 1];
        ws[m] = ws[m - 1];
      }
      xs[m] = x;
      ws[m] = w;
    }
    active.length = kept;
    // Inside from the crossing where the winding leaves 0 to the one where it comes back: x0 <= v < x1.
    let winding = 0;
    let open = 0;
    for (let m = 0; m < count; m++) {
      if (winding === 0) open = xs[m];
      winding += ws[m];
      if (winding === 0) markRun(box, u, Math.ceil(open - EPS), Math.ceil(xs[m] - EPS) - 1);
    }
  }
  return writeBox(layer, grid, box, segment, mode === "erase", bounds);
}

/**
 * A default range for the threshold brush from the image values under the brush at ``centre``: their mean ± 2
 * standard deviations. Chosen over percentiles because on the uniform tissue the stroke starts in it takes
 * about 95 % of the noise (a 5th–95th percentile range leaves every tenth voxel as a hole), needs no sort, and
 * outliers only widen it, which the user sees at once. Throws when the brush lies outside the volume.
 */
export function thresholdRangeAt(
  image: ArrayLike<number>,
  shape: Index3,
  plane: Plane,
  centre: VoxelPoint,
  radiusMm: number,
  spacing: Index3,
): ThresholdRange {
  if (image.length !== volumeSize(shape)) {
    throw new RangeError(`an image of ${image.length} voxels for a volume of shape [${shape}]`);
  }
  const grid = planeGrid(shape, plane);
  checkSpacing(spacing, radiusMm);
  const box = strokeBox(grid, spacing, [centre], radiusMm);
  let count = 0;
  let shift = 0; // sums about the first value, so large offsets (CT's −1024) lose no precision
  let sum = 0;
  let squares = 0;
  if (box) {
    for (let r = 0, n = 0; r < box.rows; r++) {
      let index = grid.base + (box.u0 + r) * grid.strideU + box.v0 * grid.strideV;
      for (let c = 0; c < box.cols; c++, n++, index += grid.strideV) {
        if (!box.mask[n]) continue;
        const value = image[index];
        if (count === 0) shift = value;
        const d = value - shift;
        sum += d;
        squares += d * d;
        count++;
      }
    }
  }
  if (count === 0) throw new RangeError(`the brush at [${centre}] lies outside the volume`);
  const mean = sum / count;
  const sd = Math.sqrt(Math.max(0, squares / count - mean * mean));
  return { lower: shift + mean - 2 * sd, upper: shift + mean + 2 * sd };
}

const SIN_ONE_DEGREE = Math.sin(Math.PI / 180);

/**
 * Which voxel axis a view's plane is a slice of: the one whose direction (i, j, k vectors in LPS, as in
 * Geometry.direction) is most nearly parallel to the view's normal (i -> axis 2, j -> 1, k -> 0; either sign),
 * and whether it is within 1° of it, i.e. whether painting on the view is painting on that voxel plane.
 */
export function planeOfView(
  viewPlaneNormal: Vec3,
  direction: readonly number[],
): { axis: 0 | 1 | 2; aligned: boolean } {
  const length = Math.hypot(...viewPlaneNormal);
  if (!(length > 0) || direction.length !== 9) throw new RangeError("a view normal and 9 direction cosines are needed");
  let best = 0;
  let bestSin = Infinity;
  for (let n = 0; n < 3; n++) {
    const vector: Vec3 = [direction[3 * n], direction[3 * n + 1], direction[3 * n + 2]];
    // |a × b| / (|a| |b|) is the sine of the angle: exact near 0°, where the cosine is flat.
    const sin = Math.hypot(...cross(viewPlaneNormal, vector)) / (length * Math.hypot(...vector));
    if (sin < bestSin) {
      bestSin = sin;
      best = n;
    }
  }
  return { axis: (2 - best) as 0 | 1 | 2, aligned: bestSin <= SIN_ONE_DEGREE };
}
