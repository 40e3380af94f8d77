// A segmentation's labelmap in the browser: layers [k, j, i] of segment numbers (0 = background) on the
// series' voxel grid, as the REST API sends and takes them. Each segment lies whole on one layer; segments that
// overlap go on different layers (docs/segmentations.md).

import { type LabelDtype, type NpyArray } from "./npy";
import {
  type Index3,
  type LabelArray,
  type Region,
  boundingBox,
  checkRegion,
  copyRegion,
  countInRegion,
  pasteRegion,
  volumeSize,
  wholeVolume,
} from "./region";

export class Labelmap {
  readonly layers: LabelArray[];

  constructor(
    readonly shape: Index3,
    readonly dtype: LabelDtype = "uint8",
    layers?: LabelArray[],
  ) {
    const size = volumeSize(shape);
    this.layers = layers ?? [this.newLayer()];
    for (const layer of this.layers) {
      if (layer.length !== size) throw new RangeError(`a layer of ${layer.length} voxels for the shape [${shape}]`);
      if (!(layer instanceof (dtype === "uint8" ? Uint8Array : Uint16Array))) {
        throw new TypeError(`a ${dtype} labelmap with a layer of another type`);
      }
    }
  }

  /** From an .npy array [k, j, i] or [layer, k, j, i]; checked against ``shape`` when given. */
  static fromNpy(array: NpyArray, shape?: Index3): Labelmap {
    const dims = array.shape.length === 3 ? [1, ...array.shape] : array.shape;
    if (dims.length !== 4 || dims[0] < 1) {
      throw new RangeError(`a labelmap is [k, j, i] or [layer, k, j, i], not [${array.shape}]`);
    }
    const grid: Index3 = [dims[1], dims[2], dims[3]];
    if (shape && grid.some((size, axis) => size !== shape[axis])) {
      throw new RangeError(`the labelmap is [${grid}] voxels; the series' grid is [${shape}]`);
    }
    const size = volumeSize(grid);
    const layers = Array.from({ length: dims[0] }, (_, n) => array.data.subarray(n * size, (n + 1) * size));
    return new Labelmap(grid, array.dtype, layers);
  }

  /** [layer, k, j, i], as the REST API takes it. */
  toNpy(): NpyArray {
    const size = volumeSize(this.shape);
    const length = size * this.layers.length;
    const data = this.dtype === "uint8" ? new Uint8Array(length) : new Uint16Array(length);
    this.layers.forEach((layer, n) => data.set(layer, n * size));
    return { dtype: this.dtype, shape: [this.layers.length, ...this.shape], data };
  }

  get maxSegment(): number {
    return this.dtype === "uint8" ? 0xff : 0xffff;
  }

  private newLayer(): LabelArray {
    const size = volumeSize(this.shape);
    return this.dtype === "uint8" ? new Uint8Array(size) : new Uint16Array(size);
  }

  /** Adds an empty layer (for a segment that overlaps others); returns its number. */
  addLayer(): number {
    this.layers.push(this.newLayer());
    return this.layers.length - 1;
  }

  offset(k: number, j: number, i: number): number {
    return (k * this.shape[1] + j) * this.shape[2] + i;
  }

  get(layer: number, k: number, j: number, i: number): number {
    return this.layer(layer)[this.offset(k, j, i)];
  }

  set(layer: number, k: number, j: number, i: number, value: number): void {
    this.checkValue(value);
    this.layer(layer)[this.offset(k, j, i)] = value;
  }

  layer(layer: number): LabelArray {
    const found = this.layers[layer];
    if (!found) throw new RangeError(`there is no layer ${layer} (the labelmap has ${this.layers.length})`);
    return found;
  }

  private checkValue(value: number): void {
    if (!Number.isInteger(value) || value < 0 || value > this.maxSegment) {
      const range = `0 to ${this.maxSegment}`;
      throw new RangeError(`segment numbers of a ${this.dtype} labelmap go from ${range}, not ${value}`);
    }
  }

  /** The layer each segment present lies on. */
  segmentLayers(): Map<number, number> {
    const found = new Map<number, number>();
    this.layers.forEach((layer, n) => {
      const seen = new Uint8Array(this.maxSegment + 1);
      for (let v = 0; v < layer.length; v++) seen[layer[v]] = 1;
      for (let value = 1; value < seen.length; value++) if (seen[value] && !found.has(value)) found.set(value, n);
    });
    return found;
  }

  /** The layer holding ``segment``, or -1 when it has no voxels. */
  layerOf(segment: number): number {
    return this.layers.findIndex((layer) => layer.includes(segment));
  }

  /** The segment's voxels in ``within`` (default: the whole volume). */
  voxelCount(segment: number, within: Region = wholeVolume(this.shape)): number {
    return this.layers.reduce((count, layer) => count + countInRegion(layer, this.shape, segment, within), 0);
  }

  /** The segment's voxels as 0/1, one byte per voxel of the volume. */
  segmentMask(segment: number): Uint8Array {
    const mask = new Uint8Array(volumeSize(this.shape));
    for (const layer of this.layers) for (let v = 0; v < layer.length; v++) if (layer[v] === segment) mask[v] = 1;
    return mask;
  }

  /**
   * Sets the segment's voxels to ``mask`` (0/1 per voxel) on ``layer`` (default: the layer it is on, else 0).
   * Voxels of other segments on that layer are left as they are; the segment is removed from other layers.
   */
  setSegmentMask(segment: number, mask: Uint8Array, layer?: number): void {
    this.checkValue(segment);
    if (mask.length !== volumeSize(this.shape)) {
      throw new RangeError(`a mask of ${mask.length} voxels for the shape [${this.shape}]`);
    }
    const target = layer ?? Math.max(0, this.layerOf(segment));
    const values = this.layer(target);
    this.layers.forEach((other, n) => {
      if (n === target) return;
      for (let v = 0; v < other.length; v++) if (other[v] === segment) other[v] = 0;
    });
    for (let v = 0; v < values.length; v++) {
      if (mask[v]) {
        if (values[v] === 0) values[v] = segment;
      } else if (values[v] === segment) {
        values[v] = 0;
      }
    }
  }

  /** The smallest region holding the segment's voxels, or null when it has none; only ``within`` is searched. */
  boundingBox(segment: number, within?: Region): Region | null {
    const layer = this.layerOf(segment);
    return layer < 0 ? null : boundingBox(this.layers[layer], this.shape, segment, within);
  }

  /** A copy of a region of a layer (C order): for undo. */
  copyRegion(layer: number, region: Region): LabelArray {
    return copyRegion(this.layer(layer), this.shape, region);
  }

  /** Writes a copy taken by copyRegion back. */
  pasteRegion(layer: number, region: Region, values: LabelArray): void {
    checkRegion(region, this.shape);
    pasteRegion(this.layer(layer), this.shape, region, values);
  }
}
