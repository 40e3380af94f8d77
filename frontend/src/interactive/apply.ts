// Writing AI mask frames into one layer of a labelmap, with what the viewer needs to redraw and to undo.
//
// Rules: a frame only ever writes the active segment. A voxel of another segment is never changed (mask 1
// there leaves it as it is), and nothing is written into a locked segment. Inside the frame's region a voxel
// becomes the segment where the mask is 1 and background where it is 0 and was the segment; with REPLACE the
// segment's voxels outside the region become background too.

import {
  type Index3,
  type LabelArray,
  type Region,
  checkRegion,
  copyRegion,
  pasteRegion,
  regionShape,
  regionSize,
  unionRegion,
  volumeSize,
  wholeVolume,
} from "../labelmap/region";
import type { MaskFrame } from "./frame";

/** One change of a labelmap layer: enough to redraw it, undo it and redo it. */
export interface LabelEdit {
  segment: number;
  /** The smallest region holding every voxel that changed. */
  region: Region;
  /** The layer's values in ``region`` before and after the change (C order, the region's shape). */
  before: LabelArray;
  after: LabelArray;
  /** A region that holds every voxel of the segment after the change (see ApplyOptions.segmentBounds). */
  segmentBounds: Region;
}

export interface ApplyOptions {
  /** Segments nothing may be written into. */
  locked?: ReadonlySet<number>;
  /**
   * A region known to hold every voxel of the segment in this layer, e.g. the last edit's segmentBounds (after
   * an undo or redo: its union with that edit's region). A REPLACE frame then looks for the segment's voxels
   * only there instead of in the whole volume. Default: the whole volume.
   */
  segmentBounds?: Region;
}

export class LockedSegmentError extends Error {
  constructor(readonly segment: number) {
    super(`segment ${segment} is locked: unlock it to change it`);
  }
}

/**
 * The voxels the frame changes, as indices into the layer. Each change flips a voxel between background and
 * the segment, so the index is all that needs keeping.
 */
function findChanges(labels: LabelArray, shape: Index3, frame: MaskFrame, segment: number, bounds: Region): number[] {
  const [, nj, ni] = shape;
  const { start, stop, mask, replace } = frame;
  const changes: number[] = [];
  let n = 0; // index into the region's mask
  for (let k = start[0]; k < stop[0]; k++) {
    for (let j = start[1]; j < stop[1]; j++) {
      const row = (k * nj + j) * ni;
      for (let i = start[2]; i < stop[2]; i++, n++) {
        const current = labels[row + i];
        if (mask[n] ? current === 0 : current === segment) changes.push(row + i);
      }
    }
  }
  if (!replace) return changes;
  // The segment's voxels outside the region. indexOf is native: it skips voxels without the segment at memory
  // speed, so whole rows (or the whole volume) cost next to nothing.
  const inRange = (value: number, axis: number) => value >= start[axis] && value < stop[axis];
  if (regionSize(bounds) === labels.length) {
    for (let hit = labels.indexOf(segment); hit >= 0; hit = labels.indexOf(segment, hit + 1)) {
      const i = hit % ni;
      const row = (hit - i) / ni;
      const j = row % nj;
      const k = (row - j) / nj;
      if (inRange(k, 0) && inRange(j, 1) && inRange(i, 2)) {
        hit += stop[2] - 1 - i; // the region's part of the row is done above
        continue;
      }
      changes.push(hit);
    }
    return changes;
  }
  for (let k = bounds.start[0]; k < bounds.stop[0]; k++) {
    for (let j = bounds.start[1]; j < bounds.stop[1]; j++) {
      const from = (k * nj + j) * ni + bounds.start[2];
      const values = labels.subarray(from, from + bounds.stop[2] - bounds.start[2]);
      const rowInRegion = inRange(k, 0) && inRange(j, 1);
      for (let hit = values.indexOf(segment); hit >= 0; hit = values.indexOf(segment, hit + 1)) {
        const i = bounds.start[2] + hit;
        if (rowInRegion && inRange(i, 2)) {
          hit += stop[2] - 1 - i;
          continue;
        }
        changes.push(from + hit);
      }
    }
  }
  return changes;
}

function checkSegment(labels: LabelArray, segment: number): void {
  const largest = labels instanceof Uint16Array ? 0xffff : 0xff;
  if (!Number.isInteger(segment) || segment < 1 || segment > largest) {
    throw new RangeError(`segment numbers in this layer go from 1 to ${largest}, not ${segment}`);
  }
}

/**
 * Applies a mask frame to ``segment`` in ``labels`` (one layer [k, j, i] of a volume of ``shape``).
 * Returns the edit, or null when no voxel changed. Throws LockedSegmentError when ``segment`` is locked.
 */
export function applyFrame(
  labels: LabelArray,
  shape: Index3,
  frame: MaskFrame,
  segment: number,
  options: ApplyOptions = {},
): LabelEdit | null {
  checkSegment(labels, segment);
  if (options.locked?.has(segment)) throw new LockedSegmentError(segment);
  if (labels.length !== volumeSize(shape)) {
    throw new RangeError(`a layer of ${labels.length} voxels for a volume of shape [${shape}]`);
  }
  checkRegion(frame, shape);
  if (frame.mask.length !== regionSize(frame)) {
    throw new RangeError(`a mask of ${frame.mask.length} voxels for a region of shape [${regionShape(frame)}]`);
  }
  const bounds = options.segmentBounds ?? wholeVolume(shape);
  checkRegion(bounds, shape);

  const changes = findChanges(labels, shape, frame, segment, bounds);
  const frameRegion: Region = { start: frame.start, stop: frame.stop };
  const segmentBounds = frame.replace ? frameRegion : (unionRegion(bounds, frameRegion) ?? frameRegion);
  if (changes.length === 0) return null;
  const [, nj, ni] = shape;
  const low: Index3 = [Infinity, Infinity, Infinity];
  const high: Index3 = [-1, -1, -1];
  for (const index of changes) {
    const i = index % ni;
    const row = (index - i) / ni;
    const j = row % nj;
    const k = (row - j) / nj;
    if (k < low[0]) low[0] = k;
    if (k > high[0]) high[0] = k;
    if (j < low[1]) low[1] = j;
    if (j > high[1]) high[1] = j;
    if (i < low[2]) low[2] = i;
    if (i > high[2]) high[2] = i;
  }
  const region: Region = { start: low, stop: [high[0] + 1, high[1] + 1, high[2] + 1] };
  const before = copyRegion(labels, shape, region);
  for (const index of changes) labels[index] = labels[index] === 0 ? segment : 0;
  return { segment, region, before, after: copyRegion(labels, shape, region), segmentBounds };
}

/** Takes an edit back (the layer must be as the edit left it). */
export function undoEdit(labels: LabelArray, shape: Index3, edit: LabelEdit): void {
  pasteRegion(labels, shape, edit.region, edit.before);
}

/** Applies an undone edit again. */
export function redoEdit(labels: LabelArray, shape: Index3, edit: LabelEdit): void {
  pasteRegion(labels, shape, edit.region, edit.after);
}
