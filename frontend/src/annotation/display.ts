// Draws a Labelmap over the slice views with Cornerstone's labelmap representation, and as surfaces in the 3D
// view (surfaces.ts). Each layer becomes one Cornerstone segmentation whose volume *shares the layer's memory*
// (createLocalVolume with the layer as its scalar data; slice k is a subarray of it), so an edit costs no
// copy: we only say which slices changed.

import { cache, volumeLoader, type Types } from "@cornerstonejs/core";
import { Enums as ToolEnums, segmentation } from "@cornerstonejs/tools";

import type { Labelmap } from "../labelmap/labelmap";
import type { Region } from "../labelmap/region";
import { SLICE_VIEWS, type Viewer } from "../viewer/viewer";
import { rgbOf } from "./labels";
import { SegmentSurfaces } from "./surfaces";

const LABELMAP = ToolEnums.SegmentationRepresentations.Labelmap;

function rgba(hex: string, alpha = 255): Types.Color {
  return [...rgbOf(hex), alpha];
}

export class LabelmapDisplay {
  private segmentationIds: string[] = [];
  /** Each show() gets new ids: Cornerstone keeps a removed volume's slice images until they are purged. */
  private generation = 0;
  private colours = new Map<number, string>();
  private hidden = new Set<number>();
  private allHidden = false;
  private readonly views = SLICE_VIEWS;
  readonly surfaces: SegmentSurfaces;

  constructor(
    private readonly viewer: Viewer,
    private readonly prefix: string,
  ) {
    this.surfaces = new SegmentSurfaces(viewer, prefix);
  }

  /** Shows ``labelmap`` (replacing what was shown); call again when layers were added. */
  show(labelmap: Labelmap): void {
    this.remove();
    const geometry = this.viewer.geometry!;
    const generation = ++this.generation;
    labelmap.layers.forEach((layer, n) => {
      const id = `${this.prefix}-${generation}-layer-${n}`;
      const volumeId = `${id}-volume`;
      volumeLoader.createLocalVolume(volumeId, {
        scalarData: layer,
        dimensions: [...geometry.dimensions] as Types.Point3,
        spacing: [...geometry.spacing] as Types.Point3,
        origin: [...geometry.origin] as Types.Point3,
        direction: new Float32Array(geometry.direction) as unknown as Types.Mat3,
        metadata: this.viewer.volumeMetadata() as never,
        referencedVolumeId: this.viewer.volumeId,
      });
      segmentation.addSegmentations([{ segmentationId: id, representation: { type: LABELMAP, data: { volumeId } } }]);
      const map: Record<string, { segmentationId: string }[]> = {};
      for (const view of this.views) map[view] = [{ segmentationId: id }];
      segmentation.addLabelmapRepresentationToViewportMap(map);
      this.segmentationIds.push(id);
    });
    for (const [segment, colour] of this.colours) this.applyColour(segment, colour);
    this.applyVisibility();
    this.surfaces.show(labelmap);
  }

  setColour(segment: number, colour: string): void {
    this.colours.set(segment, colour);
    this.applyColour(segment, colour);
    this.surfaces.setColour(segment, colour);
  }

  private applyColour(segment: number, colour: string): void {
    for (const id of this.segmentationIds) {
      for (const view of this.views) segmentation.config.color.setSegmentIndexColor(view, id, segment, rgba(colour));
    }
  }

  setSegmentVisible(segment: number, visible: boolean): void {
    if (visible) this.hidden.delete(segment);
    else this.hidden.add(segment);
    this.applyVisibility();
    this.surfaces.setSegmentVisible(segment, visible);
  }

  /** V: every segment at once, on top of the per-segment choice. */
  setAllVisible(visible: boolean): void {
    this.allHidden = !visible;
    this.applyVisibility();
    this.surfaces.setAllVisible(visible);
  }

  get allVisible(): boolean {
    return !this.allHidden;
  }

  private applyVisibility(): void {
    for (const id of this.segmentationIds) {
      for (const view of this.views) {
        segmentation.config.visibility.setSegmentationRepresentationVisibility(
          view,
          { segmentationId: id, type: LABELMAP },
          !this.allHidden,
        );
        for (const segment of this.colours.keys()) {
          segmentation.config.visibility.setSegmentIndexVisibility(
            view,
            { segmentationId: id, type: LABELMAP },
            segment,
            !this.hidden.has(segment),
          );
        }
      }
    }
  }

  /** The voxels of ``segment`` in ``region`` on ``layer`` changed: redraw the slices (k) they lie on, and (a
   * moment later) its surface. */
  changed(layer: number, region: Region, segment: number): void {
    this.surfaces.changed(segment);
    const id = this.segmentationIds[layer];
    if (!id) return;
    const slices: number[] = [];
    for (let k = region.start[0]; k < region.stop[0]; k++) slices.push(k);
    segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(id, slices);
  }

  remove(): void {
    this.surfaces.remove();
    for (const id of this.segmentationIds) {
      segmentation.removeSegmentation(id);
      const volume = cache.getVolume(`${id}-volume`);
      if (!volume) continue;
      cache.removeVolumeLoadObject(volume.volumeId);
      for (const imageId of volume.imageIds) if (cache.getImage(imageId)) cache.removeImageLoadObject(imageId);
    }
    this.segmentationIds = [];
  }
}

