// The segments as surfaces in the 3D view, in the segments' colours. A surface is built a moment after its
// segment's last change (SURFACE_DELAY_MS), so that a run of prompts or brush strokes builds it once and the 3D
// view (expensive to draw) is redrawn once; marching cubes run in a worker (surface-worker.ts).

import type { Types } from "@cornerstonejs/core";
import vtkDataArray from "@kitware/vtk.js/Common/Core/DataArray";
import vtkPolyData from "@kitware/vtk.js/Common/DataModel/PolyData";
import vtkActor from "@kitware/vtk.js/Rendering/Core/Actor";
import vtkMapper from "@kitware/vtk.js/Rendering/Core/Mapper";

import type { Labelmap } from "../labelmap/labelmap";
import type { Region } from "../labelmap/region";
import { worldToContinuousVoxel } from "../viewer/geometry";
import type { Viewer } from "../viewer/viewer";
import { rgbOf } from "./labels";
import { type CroppedMask, type SurfaceMesh, cropMask } from "./surface-mesh";
import type { SurfaceReply, SurfaceRequest } from "./surface-worker";

export const SURFACE_DELAY_MS = 1000;

export interface SurfaceInfo {
  segment: number;
  points: number;
  start: number[];
  stop: number[];
  visible: boolean;
  builds: number;
}

/** vtk's colour, 0–1 per channel. */
function colour(hex: string): [number, number, number] {
  const [r, g, b] = rgbOf(hex);
  return [r / 255, g / 255, b / 255];
}

export class SegmentSurfaces {
  private labelmap: Labelmap | null = null;
  private readonly actors = new Map<number, vtkActor>();
  private readonly pending = new Set<number>();
  private pendingAll = false;
  private timer = 0;
  private surfaceWorker: Worker | null = null;
  private batch = 0;
  /** Per batch sent to the worker: the changes to make with its meshes (surfaces of emptied segments go). */
  private readonly waiting = new Map<number, Map<string, Types.Actor | null>>();
  private readonly colours = new Map<number, string>();
  private readonly hidden = new Set<number>();
  private allHidden = false;
  private readonly prefix: string;
  /** How often each segment's surface was built. */
  private readonly builds = new Map<number, number>();
  /** A region known to hold all of a segment's voxels (the document's bounds), so that a rebuild looks
   * there only; the whole volume without it. */
  boundsOf: ((segment: number) => Region) | null = null;

  constructor(
    private readonly viewer: Viewer,
    prefix: string,
  ) {
    this.prefix = `${prefix}-surface`;
  }

  /** A new labelmap: every segment in it gets its surface. */
  show(labelmap: Labelmap): void {
    this.labelmap = labelmap;
    this.pendingAll = true; // which segments it holds is found when building (a scan of every layer)
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
    const masks: { segment: number; cropped: CroppedMask }[] = [];
    if (this.pendingAll) {
      for (const segment of [...this.actors.keys(), ...labelmap.segmentLayers().keys()]) this.pending.add(segment);
      this.pendingAll = false;
    }
    for (const segment of this.pending) {
      const cropped = cropMask(labelmap, segment, this.boundsOf?.(segment));
      if (cropped) {
        masks.push({ segment, cropped });
      } else {
        this.actors.delete(segment);
        changes.set(this.uid(segment), null);
      }
    }
    this.pending.clear();
    if (!masks.length) {
      this.viewer.setSurfaces(changes);
      return;
    }
    const batch = ++this.batch;
    this.waiting.set(batch, changes);
    const request: SurfaceRequest = { batch, geometry, masks };
    this.worker().postMessage(request, masks.map(({ cropped }) => cropped.mask.buffer));
  }

  private worker(): Worker {
    if (!this.surfaceWorker) {
      this.surfaceWorker = new Worker(new URL("./surface-worker.ts", import.meta.url), { type: "module" });
      this.surfaceWorker.onmessage = (event: MessageEvent<SurfaceReply>) => this.built(event.data);
      this.surfaceWorker.onerror = (event) => console.error("the surface worker failed", event.message);
    }
    return this.surfaceWorker;
  }

  private built({ batch, meshes }: SurfaceReply): void {
    const changes = this.waiting.get(batch);
    this.waiting.delete(batch);
    if (!changes) return; // removed meanwhile
    for (const { segment, mesh } of meshes) {
      const actor = this.actorOf(mesh, segment);
      this.actors.set(segment, actor);
      changes.set(this.uid(segment), actor as unknown as Types.Actor);
      this.builds.set(segment, (this.builds.get(segment) ?? 0) + 1);
    }
    this.viewer.setSurfaces(changes);
  }

  private actorOf(mesh: SurfaceMesh, segment: number): vtkActor {
    const polyData = vtkPolyData.newInstance();
    polyData.getPoints().setData(mesh.points, 3);
    polyData.getPolys().setData(mesh.polys);
    polyData.getPointData().setNormals(vtkDataArray.newInstance({ numberOfComponents: 3, values: mesh.normals }));
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
    if (this.actors.size) this.viewer.render(["3d"]);
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
    this.pendingAll = false;
    this.waiting.clear();
    this.surfaceWorker?.terminate();
    this.surfaceWorker = null;
    const changes = new Map<string, null>();
    for (const segment of this.actors.keys()) changes.set(this.uid(segment), null);
    this.actors.clear();
    if (changes.size) this.viewer.setSurfaces(changes);
  }
}
