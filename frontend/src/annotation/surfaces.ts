// The segments as surfaces in the 3D view: marching cubes (vtk.js) over each segment's bounding box, in the
// segment's colour. A surface is built a moment after its segment's last change (SURFACE_DELAY_MS), so that a
// run of prompts or brush strokes builds it once, and the 3D view (expensive to draw) is redrawn once.

import type { Types } from "@cornerstonejs/core";
import vtkDataArray from "@kitware/vtk.js/Common/Core/DataArray";
import vtkImageData from "@kitware/vtk.js/Common/DataModel/ImageData";
import vtkPolyData from "@kitware/vtk.js/Common/DataModel/PolyData";
import vtkImageMarchingCubes from "@kitware/vtk.js/Filters/General/ImageMarchingCubes";
import vtkActor from "@kitware/vtk.js/Rendering/Core/Actor";
import vtkMapper from "@kitware/vtk.js/Rendering/Core/Mapper";

import type { Labelmap } from "../labelmap/labelmap";
import type { Index3 } from "../labelmap/region";
import { type Geometry, voxelToWorld, worldToContinuousVoxel } from "../viewer/geometry";
import type { Viewer } from "../viewer/viewer";

export const SURFACE_DELAY_MS = 1000;

export interface SurfaceInfo {
  segment: number;
  points: number;
  start: number[];
  stop: number[];
  visible: boolean;
  builds: number;
}

/** A surface in world (LPS) coordinates: vertices, their normals, and triangles as vtk cells. */
export interface SurfaceMesh {
  points: Float32Array;
  normals: Float32Array | null;
  polys: Uint32Array;
}

/**
 * The surface of ``segment`` (null when it has no voxels): marching cubes on its 0/1 mask over its bounding
 * box with one voxel of background around it, so that it closes at the volume's edges too, then carried from
 * voxel indices to LPS.
 */
export function segmentSurface(labelmap: Labelmap, segment: number, geometry: Geometry): SurfaceMesh | null {
  const layerNumber = labelmap.layerOf(segment);
  const box = layerNumber < 0 ? null : labelmap.boundingBox(segment);
  if (!box) return null;
  const layer = labelmap.layer(layerNumber);
  const [, nj, ni] = labelmap.shape;
  const start: Index3 = [box.start[0] - 1, box.start[1] - 1, box.start[2] - 1];
  const [dk, dj, di] = [0, 1, 2].map((axis) => box.stop[axis] - box.start[axis] + 2);
  const mask = new Uint8Array(dk * dj * di);
  for (let k = box.start[0]; k < box.stop[0]; k++) {
    for (let j = box.start[1]; j < box.stop[1]; j++) {
      const from = (k * nj + j) * ni;
      const to = ((k - start[0]) * dj + (j - start[1])) * di - start[2];
      for (let i = box.start[2]; i < box.stop[2]; i++) if (layer[from + i] === segment) mask[to + i] = 1;
    }
  }
  const image = vtkImageData.newInstance();
  image.setDimensions(di, dj, dk);
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
  const found = output.getPointData().getNormals()?.getData();
  const normals = found ? Float32Array.from(found) : null;
  if (normals) {
    const [si, sj, sk] = geometry.spacing;
    const d = geometry.direction;
    for (let p = 0; p < normals.length; p += 3) {
      const [x, y, z] = [normals[p] / si, normals[p + 1] / sj, normals[p + 2] / sk];
      const n = [0, 1, 2].map((c) => x * d[c] + y * d[3 + c] + z * d[6 + c]);
      const length = Math.hypot(n[0], n[1], n[2]) || 1;
      normals.set([n[0] / length, n[1] / length, n[2] / length], p);
    }
  }
  return { points, normals, polys: Uint32Array.from(output.getPolys().getData()) };
}

function colour(hex: string): [number, number, number] {
  const value = Number.parseInt(hex.replace("#", ""), 16);
  return [((value >> 16) & 255) / 255, ((value >> 8) & 255) / 255, (value & 255) / 255];
}

export class SegmentSurfaces {
  private labelmap: Labelmap | null = null;
  private readonly actors = new Map<number, vtkActor>();
  private readonly pending = new Set<number>();
  private timer = 0;
  private readonly colours = new Map<number, string>();
  private readonly hidden = new Set<number>();
  private allHidden = false;
  private readonly prefix: string;
  /** How often each segment's surface was built. */
  private readonly builds = new Map<number, number>();

  constructor(
    private readonly viewer: Viewer,
    prefix: string,
  ) {
    this.prefix = `${prefix}-surface`;
  }

  /** A new labelmap: every segment in it gets its surface. */
  show(labelmap: Labelmap): void {
    this.labelmap = labelmap;
    for (const segment of new Set([...this.actors.keys(), ...labelmap.segmentLayers().keys()])) {
      this.pending.add(segment);
    }
    this.schedule();
  }

  /** ``segment``'s voxels changed. */
  changed(segment: number): void {
    this.pending.add(segment);
    this.schedule();
  }

  private schedule(): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.build(), SURFACE_DELAY_MS);
  }

  private build(): void {
    const labelmap = this.labelmap;
    const geometry = this.viewer.geometry;
    if (!labelmap || !geometry) return;
    const changes = new Map<string, Types.Actor | null>();
    for (const segment of this.pending) {
      const mesh = segmentSurface(labelmap, segment, geometry);
      const actor = mesh ? this.actorOf(mesh, segment) : null;
      if (actor) this.actors.set(segment, actor);
      else this.actors.delete(segment);
      changes.set(this.uid(segment), actor as unknown as Types.Actor | null);
      this.builds.set(segment, (this.builds.get(segment) ?? 0) + 1);
    }
    this.pending.clear();
    this.viewer.setSurfaces(changes);
  }

  private actorOf(mesh: SurfaceMesh, segment: number): vtkActor {
    const polyData = vtkPolyData.newInstance();
    polyData.getPoints().setData(mesh.points, 3);
    polyData.getPolys().setData(mesh.polys);
    if (mesh.normals) {
      polyData.getPointData().setNormals(vtkDataArray.newInstance({ numberOfComponents: 3, values: mesh.normals }));
    }
    const mapper = vtkMapper.newInstance({ scalarVisibility: false });
    mapper.setInputData(polyData);
    const actor = vtkActor.newInstance();
    actor.setMapper(mapper);
    actor.getProperty().setColor(...colour(this.colours.get(segment) ?? "#ffff00"));
    actor.setVisibility(this.visible(segment));
    return actor;
  }

  private uid(segment: number): string {
    return `${this.prefix}-${segment}`;
  }

  private visible(segment: number): boolean {
    return !this.allHidden && !this.hidden.has(segment);
  }

  setColour(segment: number, hex: string): void {
    this.colours.set(segment, hex);
    this.actors.get(segment)?.getProperty().setColor(...colour(hex));
    this.redraw();
  }

  setSegmentVisible(segment: number, visible: boolean): void {
    if (visible) this.hidden.delete(segment);
    else this.hidden.add(segment);
    this.applyVisibility();
  }

  setAllVisible(visible: boolean): void {
    this.allHidden = !visible;
    this.applyVisibility();
  }

  private applyVisibility(): void {
    for (const [segment, actor] of this.actors) actor.setVisibility(this.visible(segment));
    this.redraw();
  }

  private redraw(): void {
    if (this.actors.size) this.viewer.setSurfaces(new Map());
  }

  /** Segments that have a surface in the 3D view: its vertices, the box its actor takes in the scene (in
   * continuous voxel indices [k, j, i]), whether it is shown, and how often it was built. */
  surfaces(): SurfaceInfo[] {
    const geometry = this.viewer.geometry!;
    return [...this.actors].map(([segment, actor]) => {
      const [x0, x1, y0, y1, z0, z1] = actor.getBounds();
      const corners = [x0, x1].flatMap((x) => [y0, y1].flatMap((y) => [z0, z1].map((z) => [x, y, z])));
      const indices = corners.map((corner) => worldToContinuousVoxel(geometry, corner as [number, number, number]));
      return {
        segment,
        points: actor.getMapper()?.getInputData()?.getNumberOfPoints() ?? 0,
        start: [0, 1, 2].map((axis) => Math.min(...indices.map((index) => index[axis]))),
        stop: [0, 1, 2].map((axis) => Math.max(...indices.map((index) => index[axis]))),
        visible: actor.getVisibility(),
        builds: this.builds.get(segment) ?? 0,
      };
    });
  }

  remove(): void {
    window.clearTimeout(this.timer);
    this.pending.clear();
    const changes = new Map<string, null>();
    for (const segment of this.actors.keys()) changes.set(this.uid(segment), null);
    this.actors.clear();
    if (changes.size) this.viewer.setSurfaces(changes);
  }
}
