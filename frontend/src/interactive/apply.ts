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
  volumeSize,
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
}

export class LockedSegmentError extends Error {
  constructor(readonly segment: number) {
    super(`segment ${segment} is locked: unlock it to change it`);
  }
}

type Visit = (index: number, value: number) => void;

/** Calls ``visit`` for each voxel the frame changes, with its new value (0 or segment). */
function scanChanges(labels: LabelArray, shape: Index3, frame: MaskFrame, segment: number, visit: Visit): void {
  const [nk, nj, ni] = shape;
  const { start, stop, mask, replace } = frame;
  let n = 0; // index into the region's mask
  for (let k = 0; k < nk; k++) {
    const kInside = k >= start[0] && k < stop[0];
    if (!kInside && !replace) continue;
    for (let j = 0; j < nj; j++) {
      const rowInside = kInside && j >= start[1] && j < stop[1];
      if (!rowInside && !replace) continue;
      const row = (k * nj + j) * ni;
      if (!rowInside) {
        for (let i = 0; i < ni; i++) if (labels[row + i] === segment) visit(row + i, 0);
        continue;
      }
      if (replace) {
        for (let i = 0; i < start[2]; i++) if (labels[row + i] === segment) visit(row + i, 0);
        for (let i = stop[2]; i < ni; i++) if (labels[row + i] === segment) visit(row + i, 0);
      }
      for (let i = start[2]; i < stop[2]; i++, n++) {
        const current = labels[row + i];
        if (mask[n]) {
          if (current === 0) visit(row + i, segment);
        } else if (current === segment) {
          visit(row + i, 0);
        }
      }
    }
  }
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
  locked: ReadonlySet<number> = new Set(),
): LabelEdit | null {
  checkSegment(labels, segment);
  if (locked.has(segment)) throw new LockedSegmentError(segment);
  if (labels.length !== volumeSize(shape)) {
    throw new RangeError(`a layer of ${labels.length} voxels for a volume of shape [${shape}]`);
  }
  checkRegion(frame, shape);
  if (frame.mask.length !== regionSize(frame)) {
    throw new RangeError(`a mask of ${frame.mask.length} voxels for a region of shape [${regionShape(frame)}]`);
  }

  // First pass: where the changes are; the second writes them once "before" is copied.
  const [, nj, ni] = shape;
  const low: Index3 = [Infinity, Infinity, Infinity];
  const high: Index3 = [-1, -1, -1];
  scanChanges(labels, shape, frame, segment, (index) => {
    const i = index % ni;
    const j = ((index - i) / ni) % nj;
    const k = (index - i - j * ni) / (ni * nj);
    if (k < low[0]) low[0] = k;
    if (k > high[0]) high[0] = k;
    if (j < low[1]) low[1] = j;
    if (j > high[1]) high[1] = j;
    if (i < low[2]) low[2] = i;
    if (i > high[2]) high[2] = i;
  });
  if (high[0] < 0) return null;
  const region: Region = { start: low, stop: [high[0] + 1, high[1] + 1, high[2] + 1] };
  const before = copyRegion(labels, shape, region);
  scanChanges(labels, shape, frame, segment, (index, value) => {
    labels[index] = value;
  });
  return { segment, region, before, after: copyRegion(labels, shape, region) };
}

/** Takes an edit back (the layer must be as the edit left it). */
export function undoEdit(labels: LabelArray, shape: Index3, edit: LabelEdit): void {
  pasteRegion(labels, shape, edit.region, edit.before);
}

/** Applies an undone edit again. */
export function redoEdit(labels: LabelArray, shape: Index3, edit: LabelEdit): void {
  pasteRegion(labels, shape, edit.region, edit.after);
}
