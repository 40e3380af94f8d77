// The surface worker: marching cubes for SegmentSurfaces (surfaces.ts), off the page's main thread.

import { type CroppedMask, type SurfaceMesh, surfaceMesh } from "./surface-mesh";
import type { Geometry } from "../viewer/geometry";

export interface SurfaceRequest {
  batch: number;
  geometry: Geometry;
  masks: { segment: number; cropped: CroppedMask }[];
}

export interface SurfaceReply {
  batch: number;
  meshes: { segment: number; mesh: SurfaceMesh }[];
}

self.onmessage = (event: MessageEvent<SurfaceRequest>) => {
  const { batch, geometry, masks } = event.data;
  const meshes = masks.map(({ segment, cropped }) => ({ segment, mesh: surfaceMesh(cropped, geometry) }));
  const buffers = meshes.flatMap(({ mesh }) => [mesh.points.buffer, mesh.normals.buffer, mesh.polys.buffer]);
  const reply: SurfaceReply = { batch, meshes };
  (self as unknown as Worker).postMessage(reply, buffers);
};
