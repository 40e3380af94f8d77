// The voxel grid of docs/volumes.md in the browser: voxel indices [k, j, i] <-> world (LPS, mm) <-> letters.
// Everything that places or reads voxels on screen (AI prompts, labelmap read-back, masks) goes through here,
// so these functions are plain, exact and unit-tested (geometry.test.ts); the viewer adds the canvas step.

export type Vec3 = [number, number, number];
/** A voxel index in our order: k = slice, j = row, i = column (docs/volumes.md). */
export type VoxelIndex = [number, number, number];

/**
 * One series' grid, in Cornerstone's layout: `dimensions` and `spacing` in (i, j, k) order, `origin` the LPS
 * centre of voxel (0, 0, 0), `direction` the i, j and k unit vectors (row cosine, column cosine, normal) one
 * after the other.
 */
export interface Geometry {
  dimensions: Vec3;
  spacing: Vec3;
  origin: Vec3;
  direction: number[];
}

const dot = (a: Vec3, b: Vec3): number => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
export const cross = (a: Vec3, b: Vec3): Vec3 => [
  a[1] * b[2] - a[2] * b[1],
  a[2] * b[0] - a[0] * b[2],
  a[0] * b[1] - a[1] * b[0],
];
const sub = (a: Vec3, b: Vec3): Vec3 => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const neg = (a: Vec3): Vec3 => [-a[0], -a[1], -a[2]];

function axis(g: Geometry, n: 0 | 1 | 2): Vec3 {
  return [g.direction[3 * n], g.direction[3 * n + 1], g.direction[3 * n + 2]];
}

/** [k, j, i] of the volume: the shape of the server's `array`. */
export function volumeShape(g: Geometry): VoxelIndex {
  return [g.dimensions[2], g.dimensions[1], g.dimensions[0]];
}

/** LPS position (mm) of the centre of voxel [k, j, i]; fractional indices are fine. */
export function voxelToWorld(g: Geometry, [k, j, i]: VoxelIndex): Vec3 {
  const out: Vec3 = [...g.origin];
  const steps: Vec3 = [i * g.spacing[0], j * g.spacing[1], k * g.spacing[2]];
  for (let n = 0 as 0 | 1 | 2; n < 3; n++) {
    const a = axis(g, n);
    for (let c = 0; c < 3; c++) out[c] += steps[n] * a[c];
  }
  return out;
}

/**
 * Continuous [k, j, i] of an LPS point. The direction is orthonormal (the grid is never sheared), so the
 * inverse is a transpose: each index is a projection on its axis.
 */
export function worldToContinuousVoxel(g: Geometry, world: Vec3): VoxelIndex {
  const d = sub(world, g.origin);
  return [dot(d, axis(g, 2)) / g.spacing[2], dot(d, axis(g, 1)) / g.spacing[1], dot(d, axis(g, 0)) / g.spacing[0]];
}

/** The voxel that contains an LPS point, or null outside the volume. */
export function worldToVoxel(g: Geometry, world: Vec3): VoxelIndex | null {
  const index = worldToContinuousVoxel(g, world).map((v) => Math.round(v) + 0) as VoxelIndex; // + 0: no −0
  return isInside(g, index) ? index : null;
}

export function isInside(g: Geometry, [k, j, i]: VoxelIndex): boolean {
  const [nk, nj, ni] = volumeShape(g);
  return k >= 0 && k < nk && j >= 0 && j < nj && i >= 0 && i < ni;
}

/** A DICOM JSON data set (WADO-RS metadata): tag -> { vr, Value }. */
export type DicomJson = Record<string, { vr: string; Value?: unknown[] } | undefined>;

function numbers(instance: DicomJson, tag: string): number[] {
  const values = instance[tag]?.Value ?? [];
  return values.map((v) => Number(v));
}

export class GeometryError extends Error {}

/**
 * The grid of a series of single-frame instances from its WADO-RS metadata, by the rules of docs/volumes.md:
 * slices sorted by the projection of ImagePositionPatient on the normal (row × column cosine), ascending;
 * the step is (last − first) / (n − 1); the origin is the first slice's position. Also returns the instances
 * in k order. (Checks of evenness and tilt are the server's; this mirrors its result for the viewer.)
 */
export function geometryFromInstances<T extends DicomJson>(instances: T[]): { geometry: Geometry; sorted: T[] } {
  if (instances.length === 0) throw new GeometryError("the series has no instances");
  const orientation = numbers(instances[0], "00200037");
  const pixelSpacing = numbers(instances[0], "00280030");
  const rows = numbers(instances[0], "00280010")[0];
  const columns = numbers(instances[0], "00280011")[0];
  if (orientation.length !== 6 || pixelSpacing.length !== 2 || !rows || !columns) {
    throw new GeometryError("orientation, pixel spacing or image size is missing");
  }
  const row: Vec3 = [orientation[0], orientation[1], orientation[2]];
  const column: Vec3 = [orientation[3], orientation[4], orientation[5]];
  const normal = cross(row, column);
  const placed = instances.map((instance) => {
    const position = numbers(instance, "00200032");
    if (position.length !== 3) throw new GeometryError("an instance has no ImagePositionPatient");
    return { instance, position: position as Vec3, along: dot(position as Vec3, normal) };
  });
  placed.sort((a, b) => a.along - b.along);
  const n = placed.length;
  const step = n > 1 ? (placed[n - 1].along - placed[0].along) / (n - 1) : numbers(instances[0], "00180050")[0] || 1;
  return {
    geometry: {
      dimensions: [columns, rows, n],
      spacing: [pixelSpacing[1], pixelSpacing[0], step],
      origin: placed[0].position,
      direction: [...row, ...column, ...normal],
    },
    sorted: placed.map((p) => p.instance),
  };
}

/** Largest difference between two grids' origins (mm), spacings (mm) and direction cosines. */
export function geometryDifference(a: Geometry, b: Geometry): number {
  if (a.dimensions.some((d, n) => d !== b.dimensions[n])) return Infinity;
  let worst = 0;
  for (let n = 0; n < 3; n++) {
    worst = Math.max(worst, Math.abs(a.origin[n] - b.origin[n]), Math.abs(a.spacing[n] - b.spacing[n]));
  }
  for (let n = 0; n < 9; n++) worst = Math.max(worst, Math.abs(a.direction[n] - b.direction[n]));
  return worst;
}

// --- Orientation letters -----------------------------------------------------------------------------------

const LETTERS: [string, string][] = [
  ["L", "R"],
  ["P", "A"],
  ["S", "I"],
];
/** A component this large (cos 72.5°) adds its letter: an oblique direction reads "RA", not "R". */
export const OBLIQUE_THRESHOLD = 0.3;

/** The letters of an LPS direction, strongest first: [1, 0, 0] is "L", [-0.7, -0.7, 0] is "RA". */
export function orientationLetters(direction: Vec3): string {
  const length = Math.hypot(...direction);
  if (length === 0) return "";
  const parts = direction
    .map((value, n) => ({ value: value / length, n }))
    .filter(({ value }) => Math.abs(value) >= OBLIQUE_THRESHOLD)
    .sort((a, b) => Math.abs(b.value) - Math.abs(a.value));
  return parts.map(({ value, n }) => LETTERS[n][value > 0 ? 0 : 1]).join("");
}

export interface Markers {
  left: string;
  right: string;
  top: string;
  bottom: string;
}

/**
 * The letters at a viewport's edges from its camera. Cornerstone's viewPlaneNormal points from the focal point
 * towards the camera and viewUp is the screen's up; screen right is then viewUp × viewPlaneNormal (for the
 * default axial camera, normal −S and up −P, right is +L: the patient's left on the right of the screen).
 */
export function viewportMarkers(viewUp: Vec3, viewPlaneNormal: Vec3): Markers {
  const right = cross(viewUp, viewPlaneNormal);
  return {
    top: orientationLetters(viewUp),
    bottom: orientationLetters(neg(viewUp)),
    right: orientationLetters(right),
    left: orientationLetters(neg(right)),
  };
}

/** Screen right (unit) for a camera, in LPS: what moves a point to the right on the canvas. */
export function screenRight(viewUp: Vec3, viewPlaneNormal: Vec3): Vec3 {
  return cross(viewUp, viewPlaneNormal);
}
