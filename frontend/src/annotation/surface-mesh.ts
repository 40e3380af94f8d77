// A segment's surface as a triangle mesh in LPS: the segment's 0/1 mask over its bounding box (cropMask, on
// the page), then marching cubes (vtk.js) and the step from voxel indices to LPS (surfaceMesh, in the
// surface worker: seconds for a large organ, which must not hold up the page).

import vtkDataArray from "@kitware/vtk.js/Common/Core/DataArray";
import vtkImageData from "@kitware/vtk.js/Common/DataModel/ImageData";
import vtkImageMarchingCubes from "@kitware/vtk.js/Filters/General/ImageMarchingCubes";

import type { Labelmap } from "../labelmap/labelmap";
import { type Index3, type Region, boundingBox } from "../labelmap/region";
import { type Geometry, voxelToWorld } from "../viewer/geometry";

/** A segment's 0/1 mask over ``dims`` ([k, j, i], C order) voxels from voxel ``start`` of the volume. */
export interface CroppedMask {
  mask: Uint8Array;
  start: Index3;
  dims: Index3;
}

/** A surface in LPS: vertices, their unit normals, and triangles as vtk cells ([3, a, b, c] each). */
export interface SurfaceMesh {
  points: Float32Array;
  normals: Float32Array;
  polys: Uint32Array;
}

/**
 * The segment's mask over its bounding box with one voxel of background around it, so that its surface
 * closes at the volume's edges too; null when it has no voxels. ``within``: a region known to hold all
 * of them (the box is looked for there only).
 */
export function cropMask(labelmap: Labelmap, segment: number, within?: Region): CroppedMask | null {
  const layerNumber = labelmap.layerOf(segment);
  if (layerNumber < 0) return null;
  const layer = labelmap.layer(layerNumber);
  const box = boundingBox(layer, labelmap.shape, segment, within);
  if (!box) return null;
  const [, nj, ni] = labelmap.shape;
  const start: Index3 = [box.start[0] - 1, box.start[1] - 1, box.start[2] - 1];
  const dims: Index3 = [0, 1, 2].map((axis) => box.stop[axis] - box.start[axis] + 2) as Index3;
  const [, dj, di] = dims;
  const mask = new Uint8Array(dims[0] * dj * di);
  for (let k = box.start[0]; k < box.stop[0]; k++) {
    for (let j = box.start[1]; j < box.stop[1]; j++) {
      const from = (k * nj + j) * ni;
      const to = ((k - start[0]) * dj + (j - start[1])) * di - start[2];
      for (let i = box.start[2]; i < box.stop[2]; i++) if (layer[from + i] === segment) mask[to + i] = 1;
    }
  }
  return { mask, start, dims };
}

/** Marching cubes on the cropped mask, carried from its voxel indices to LPS. */
export function surfaceMesh({ mask, start, dims }: CroppedMask, geometry: Geometry): SurfaceMesh {
  const image = vtkImageData.newInstance();
  image.setDimensions(dims[2], dims[1], dims[0]);
  image.getPointData().setScalars(vtkDataArray.newInstance({ numberOfComponents: 1, values: mask }));
  const cubes = vtkImageMarchingCubes.newInstance({ contourValue: 0.5, computeNormals: true, mergePoints: true });
  cubes.setInputData(image);
  const output = cubes.getOutputData();
  const points = Float32Array.from(output.getPoints().getData());
  for (let p = 0; p < points.length; p += 3) {
    const world = voxelToWorld(geometry, [start[0] + points[p + 2], start[1] + points[p + 1], start[2] + points[p]]);
    points.set(world, p);
  }
  // Normals are gradients in voxel steps: to LPS through the direction, each step scaled by 1 / spacing.
  const normals = Float32Array.from(output.getPointData().getNormals()?.getData() ?? []);
  const [si, sj, sk] = geometry.spacing;
  const d = geometry.direction;
  for (let p = 0; p < normals.length; p += 3) {
    const [x, y, z] = [normals[p] / si, normals[p + 1] / sj, normals[p + 2] / sk];
    const n = [0, 1, 2].map((c) => x * d[c] + y * d[3 + c] + z * d[6 + c]);
    const length = Math.hypot(n[0], n[1], n[2]) || 1;
    normals.set([n[0] / length, n[1] / length, n[2] / length], p);
  }
  return { points, normals, polys: Uint32Array.from(output.getPolys().getData()) };
}
