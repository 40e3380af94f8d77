// Voxel grids [k, j, i] (docs/volumes.md): C order, i fastest; regions are half-open [start, stop).

export type Index3 = [number, number, number];

export interface Region {
  start: Index3;
  stop: Index3;
}

/** Segment numbers of one layer, one value per voxel of the whole volume. */
export type LabelArray = Uint8Array | Uint16Array;

export function regionShape(region: Region): Index3 {
  return [
    region.stop[0] - region.start[0],
    region.stop[1] - region.start[1],
    region.stop[2] - region.start[2],
  ];
}

export function regionSize(region: Region): number {
  const [k, j, i] = regionShape(region);
  return k * j * i;
}

export function volumeSize(shape: Index3): number {
  return shape[0] * shape[1] * shape[2];
}

export function isEmptyRegion(region: Region): boolean {
  return regionSize(region) === 0;
}

export function wholeVolume(shape: Index3): Region {
  return { start: [0, 0, 0], stop: [shape[0], shape[1], shape[2]] };
}

/** Throws unless ``region`` is ordered and lies inside a volume of ``shape``. */
export function checkRegion(region: Region, shape: Index3): void {
  for (let axis = 0; axis < 3; axis++) {
    const { start, stop } = region;
    if (!(Number.isInteger(start[axis]) && Number.isInteger(stop[axis]))) {
      throw new RangeError(`the region [${start}]..[${stop}] is not made of integers`);
    }
    if (start[axis] < 0 || stop[axis] < start[axis] || stop[axis] > shape[axis]) {
      throw new RangeError(`the region [${start}]..[${stop}] does not lie inside the volume [${shape}]`);
    }
  }
}

function newLike(array: LabelArray, length: number): LabelArray {
  return array instanceof Uint16Array ? new Uint16Array(length) : new Uint8Array(length);
}

/** Calls ``visit`` for each row of ``region``: where it starts in the volume and in the region, and its length. */
function forEachRow(
  shape: Index3,
  region: Region,
  visit: (inVolume: number, inRegion: number, length: number) => void,
): void {
  checkRegion(region, shape);
  const [dk, dj, di] = regionShape(region);
  let inRegion = 0;
  for (let k = region.start[0]; k < region.start[0] + dk; k++) {
    for (let j = region.start[1]; j < region.start[1] + dj; j++) {
      visit((k * shape[1] + j) * shape[2] + region.start[2], inRegion, di);
      inRegion += di;
    }
  }
}

/** The values of ``region`` of a volume, as a C-order array of the region's shape. */
export function copyRegion(volume: LabelArray, shape: Index3, region: Region): LabelArray {
  checkRegion(region, shape); // before the region's size is used
  const out = newLike(volume, regionSize(region));
  forEachRow(shape, region, (from, to, length) => out.set(volume.subarray(from, from + length), to));
  return out;
}

/** Writes ``values`` (C order, the region's shape) into ``region`` of a volume: the inverse of copyRegion. */
export function pasteRegion(volume: LabelArray, shape: Index3, region: Region, values: LabelArray): void {
  if (values.length !== regionSize(region)) {
    throw new RangeError(`${values.length} values for a region of shape [${regionShape(region)}]`);
  }
  forEachRow(shape, region, (to, from, length) => volume.set(values.subarray(from, from + length), to));
}

/**
 * The smallest region holding every voxel equal to ``value``, or null when there is none; only ``within`` is
 * searched (a region known to hold them all spares a scan of the whole volume).
 */
export function boundingBox(
  volume: LabelArray,
  shape: Index3,
  value: number,
  within: Region = wholeVolume(shape),
): Region | null {
  let k0 = Infinity, j0 = Infinity, i0 = Infinity, k1 = -1, j1 = -1, i1 = -1;
  // indexOf and lastIndexOf are native: rows without the value cost next to nothing.
  forEachRow(shape, within, (from, _, length) => {
    const row = volume.subarray(from, from + length);
    const first = row.indexOf(value);
    if (first < 0) return;
    const j = Math.floor(from / shape[2]) % shape[1];
    const k = Math.floor(from / (shape[1] * shape[2]));
    if (k < k0) k0 = k;
    k1 = k; // rows come in k order
    if (j < j0) j0 = j;
    if (j > j1) j1 = j;
    if (within.start[2] + first < i0) i0 = within.start[2] + first;
    const last = within.start[2] + row.lastIndexOf(value);
    if (last > i1) i1 = last;
  });
  return k1 < 0 ? null : { start: [k0, j0, i0], stop: [k1 + 1, j1 + 1, i1 + 1] };
}

/** How many voxels of ``region`` equal ``value``. */
export function countInRegion(volume: LabelArray, shape: Index3, value: number, region: Region): number {
  let count = 0;
  forEachRow(shape, region, (from, _, length) => {
    const row = volume.subarray(from, from + length);
    for (let hit = row.indexOf(value); hit >= 0; hit = row.indexOf(value, hit + 1)) count++;
  });
  return count;
}

/** The smallest region holding both (either may be null). */
export function unionRegion(a: Region | null, b: Region | null): Region | null {
  if (a === null || isEmptyRegion(a)) return b;
  if (b === null || isEmptyRegion(b)) return a;
  return {
    start: [Math.min(a.start[0], b.start[0]), Math.min(a.start[1], b.start[1]), Math.min(a.start[2], b.start[2])],
    stop: [Math.max(a.stop[0], b.stop[0]), Math.max(a.stop[1], b.stop[1]), Math.max(a.stop[2], b.stop[2])],
  };
}
