// The editing tools on the slice views: AI prompts (point, box, scribble, lasso; positive or negative) and
// manual edits (brush, eraser, scissors, threshold brush). A tool owns the left button while it is chosen;
// what is being drawn shows in an SVG layer over the view, and the prompt or edit goes out on release.

import type { Prompt } from "../interactive/connection";
import type { Index3 } from "../labelmap/region";
import type { Vec3 } from "../viewer/geometry";
import { SLICE_VIEWS, type Viewer, type ViewportId } from "../viewer/viewer";
import type { AnnotationController } from "./controller";
import { type Plane, fillPolygon, paintStroke, planeOfView, thresholdRangeAt } from "./paint";

export type ToolId = "navigate" | "point" | "box" | "scribble" | "lasso" | "brush" | "eraser" | "scissors" | "threshold";

export interface ToolInfo {
  id: ToolId;
  label: string;
  key: string;
  kind: "view" | "ai" | "manual";
  help: string;
}

export const TOOLS: ToolInfo[] = [
  { id: "navigate", label: "Crosshairs", key: "C", kind: "view", help: "Left drag moves the crosshairs (Esc)" },
  { id: "point", label: "Point", key: "P", kind: "ai", help: "AI point: click inside (positive) or outside" },
  { id: "box", label: "Box", key: "B", kind: "ai", help: "AI box: drag around the object on one slice" },
  { id: "scribble", label: "Scribble", key: "S", kind: "ai", help: "AI scribble: draw a line on the object" },
  { id: "lasso", label: "Lasso", key: "L", kind: "ai", help: "AI lasso: draw the object's outline" },
  { id: "brush", label: "Brush", key: "D", kind: "manual", help: "Paint the active segment" },
  { id: "eraser", label: "Eraser", key: "E", kind: "manual", help: "Erase the active segment" },
  { id: "scissors", label: "Scissors", key: "X", kind: "manual", help: "Outline a region: cut it (negative) or fill it (positive)" },
  { id: "threshold", label: "Threshold brush", key: "G", kind: "manual", help: "Paint only values like those under the brush at the start" },
];

/** Outlines longer than this are thinned out before they are sent (the protocol takes up to 4,096 points). */
const MAX_OUTLINE_POINTS = 2000;

interface Drawing {
  view: ViewportId;
  plane: Plane;
  pointerId: number;
  client: { x: number; y: number }[];
  voxels: Vec3[];
}

export interface ToolEvents {
  changed(): void;
  refused(message: string): void;
}

export class EditingTools {
  tool: ToolId = "navigate";
  positive = true;
  brushRadiusMm = 5;
  private drawing: Drawing | null = null;
  private readonly overlays = new Map<ViewportId, SVGSVGElement>();
  private readonly cleanup: (() => void)[] = [];

  constructor(
    private readonly viewer: Viewer,
    private readonly controller: AnnotationController,
    cells: Map<ViewportId, HTMLElement>,
    private readonly events: Partial<ToolEvents>,
  ) {
    for (const view of SLICE_VIEWS) {
      const cell = cells.get(view)!;
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.classList.add("draw-overlay");
      cell.append(svg);
      this.overlays.set(view, svg);
      const element = cell.querySelector<HTMLElement>(".viewport")!;
      const down = (event: PointerEvent) => this.down(view, element, event);
      const move = (event: PointerEvent) => this.move(view, event);
      const up = (event: PointerEvent) => this.up(view, event);
      const leave = () => this.clearCursor(view);
      // Capture phase, and preventDefault: Cornerstone then sees neither the pointer nor the mouse events.
      element.addEventListener("pointerdown", down, { capture: true });
      element.addEventListener("pointermove", move, { capture: true });
      element.addEventListener("pointerup", up, { capture: true });
      element.addEventListener("pointercancel", up, { capture: true });
      element.addEventListener("pointerleave", leave);
      this.cleanup.push(() => {
        element.removeEventListener("pointerdown", down, { capture: true });
        element.removeEventListener("pointermove", move, { capture: true });
        element.removeEventListener("pointerup", up, { capture: true });
        element.removeEventListener("pointercancel", up, { capture: true });
        element.removeEventListener("pointerleave", leave);
        svg.remove();
      });
    }
  }

  choose(tool: ToolId): void {
    this.tool = tool;
    this.cancel();
    this.viewer.setCrosshairsOnLeft(tool === "navigate");
    this.events.changed?.();
  }

  togglePolarity(): void {
    this.positive = !this.positive;
    this.events.changed?.();
  }

  setBrushRadius(mm: number): void {
    this.brushRadiusMm = Math.min(50, Math.max(0.5, mm));
    this.events.changed?.();
  }

  get info(): ToolInfo {
    return TOOLS.find((t) => t.id === this.tool)!;
  }

  private get brushLike(): boolean {
    return this.tool === "brush" || this.tool === "eraser" || this.tool === "threshold";
  }

  private down(view: ViewportId, element: HTMLElement, event: PointerEvent): void {
    if (this.tool === "navigate" || event.button !== 0 || event.shiftKey) return;
    event.preventDefault();
    event.stopPropagation();
    // The suppressed mouse events would have taken the focus from a panel field: the keys work again.
    if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
    if (this.controller.doc.active === null && this.info.kind === "manual") {
      this.events.refused?.("Add a segment first.");
      return;
    }
    const voxel = this.viewer.clientToContinuousVoxel(view, event);
    const { axis } = planeOfView(this.viewer.viewPlaneNormal(view), this.viewer.geometry!.direction);
    const plane: Plane = { axis, slice: this.clampedSlice(axis, voxel[axis]) };
    element.setPointerCapture(event.pointerId);
    this.drawing = { view, plane, pointerId: event.pointerId, client: [this.local(view, event)], voxels: [voxel] };
    this.redraw();
  }

  private move(view: ViewportId, event: PointerEvent): void {
    if (this.brushLike && !this.drawing) this.drawCursor(view, event);
    const drawing = this.drawing;
    if (!drawing || drawing.pointerId !== event.pointerId || drawing.view !== view) return;
    event.preventDefault();
    event.stopPropagation();
    const voxel = this.viewer.clientToContinuousVoxel(view, event);
    voxel[drawing.plane.axis] = drawing.plane.slice;
    drawing.client.push(this.local(view, event));
    drawing.voxels.push(voxel);
    this.redraw();
  }

  private up(view: ViewportId, event: PointerEvent): void {
    const drawing = this.drawing;
    if (!drawing || drawing.pointerId !== event.pointerId) return;
    event.preventDefault();
    event.stopPropagation();
    this.drawing = null;
    this.clearOverlay(view);
    try {
      this.finish(drawing);
    } catch (error) {
      this.events.refused?.((error as Error).message);
    }
  }

  cancel(): void {
    this.drawing = null;
    for (const view of SLICE_VIEWS) this.clearOverlay(view);
  }

  private finish(drawing: Drawing): void {
    const tool = this.tool;
    const positive = this.positive;
    const { plane } = drawing;
    const indices = drawing.voxels.map((v) => this.index(v, plane));
    const report = (promise: Promise<void>) => promise.catch((error: Error) => this.events.refused?.(error.message));
    if (tool === "point") {
      report(this.controller.prompt({ kind: "point", positive, index: indices[indices.length - 1] }));
    } else if (tool === "box") {
      const [a, b] = [indices[0], indices[indices.length - 1]];
      const start = [0, 1, 2].map((axis) => Math.min(a[axis], b[axis])) as Index3;
      const stop = [0, 1, 2].map((axis) => Math.max(a[axis], b[axis]) + 1) as Index3;
      start[plane.axis] = plane.slice;
      stop[plane.axis] = plane.slice + 1;
      report(this.controller.prompt({ kind: "box", positive, start, stop }));
    } else if (tool === "scribble" || tool === "lasso") {
      const points = thin(dedupe(indices), MAX_OUTLINE_POINTS);
      if (tool === "lasso" && points.length < 3) throw new Error("Draw the outline around the object.");
      const prompt: Prompt = { kind: tool, positive, axis: plane.axis, slice: plane.slice, points };
      report(this.controller.prompt(prompt));
    } else {
      this.manual(tool, drawing);
    }
  }

  private manual(tool: ToolId, drawing: Drawing): void {
    const controller = this.controller;
    const doc = controller.doc;
    const segment = doc.active!;
    doc.checkWritable(segment);
    const layerNumber = doc.layerOf(segment);
    const layer = doc.labelmap.layer(layerNumber);
    const shape = doc.labelmap.shape;
    const spacing = this.spacing();
    const options = { locked: doc.locked, segmentBounds: doc.segmentBounds(segment) };
    let edit;
    if (tool === "scissors") {
      if (drawing.voxels.length < 3) throw new Error("Outline the region to cut or fill.");
      edit = fillPolygon(layer, shape, drawing.plane, drawing.voxels, segment, this.positive ? "fill" : "erase", options);
    } else {
      const mode = tool === "eraser" ? "erase" : "paint";
      const image = tool === "threshold" ? this.viewer.imageValues() : undefined;
      const range = image
        ? thresholdRangeAt(image, shape, drawing.plane, drawing.voxels[0], this.brushRadiusMm, spacing)
        : undefined;
      edit = paintStroke(layer, shape, spacing, drawing.plane, drawing.voxels, this.brushRadiusMm, segment, mode, {
        ...options,
        image,
        range,
      });
    }
    if (edit) controller.manualEdit(doc.record("manual", layerNumber, edit));
  }

  /** [sk, sj, si] in mm. */
  private spacing(): [number, number, number] {
    const [si, sj, sk] = this.viewer.geometry!.spacing;
    return [sk, sj, si];
  }

  private clampedSlice(axis: number, value: number): number {
    const size = this.viewer.volumeShape()[axis];
    return Math.min(size - 1, Math.max(0, Math.round(value)));
  }

  /** The voxel a continuous position falls in, clamped to the volume, on the drawing's plane. */
  private index(voxel: Vec3, plane: Plane): Index3 {
    const shape = this.viewer.volumeShape();
    const index = voxel.map((value, axis) => Math.min(shape[axis] - 1, Math.max(0, Math.round(value)))) as Index3;
    index[plane.axis] = plane.slice;
    return index;
  }

  private local(view: ViewportId, event: { clientX: number; clientY: number }): { x: number; y: number } {
    const rect = this.overlays.get(view)!.getBoundingClientRect();
    return { x: event.clientX - rect.left, y: event.clientY - rect.top };
  }

  // --- drawing on the overlay -------------------------------------------------------------------------------

  private colour(): string {
    const active = this.controller.doc.active;
    const segment = active === null ? undefined : this.controller.doc.segment(active);
    if (this.tool === "eraser" || ((this.info.kind === "ai" || this.tool === "scissors") && !this.positive)) {
      return "#ff4d4d";
    }
    return segment?.color ?? "#ffd24d";
  }

  private redraw(): void {
    const drawing = this.drawing;
    if (!drawing) return;
    const svg = this.overlays.get(drawing.view)!;
    const colour = this.colour();
    const points = drawing.client.map((p) => `${p.x},${p.y}`).join(" ");
    let shape: SVGElement;
    const make = (tag: string) => document.createElementNS("http://www.w3.org/2000/svg", tag);
    if (this.tool === "point") {
      const last = drawing.client[drawing.client.length - 1];
      shape = make("circle");
      shape.setAttribute("cx", String(last.x));
      shape.setAttribute("cy", String(last.y));
      shape.setAttribute("r", "4");
      shape.setAttribute("fill", colour);
    } else if (this.tool === "box") {
      const [a, b] = [drawing.client[0], drawing.client[drawing.client.length - 1]];
      shape = make("rect");
      shape.setAttribute("x", String(Math.min(a.x, b.x)));
      shape.setAttribute("y", String(Math.min(a.y, b.y)));
      shape.setAttribute("width", String(Math.abs(a.x - b.x)));
      shape.setAttribute("height", String(Math.abs(a.y - b.y)));
      shape.setAttribute("fill", "none");
      shape.setAttribute("stroke", colour);
      shape.setAttribute("stroke-width", "2");
    } else if (this.tool === "lasso" || this.tool === "scissors") {
      shape = make("polygon");
      shape.setAttribute("points", points);
      shape.setAttribute("fill", `${colour}40`);
      shape.setAttribute("stroke", colour);
      shape.setAttribute("stroke-width", "2");
    } else {
      shape = make("polyline");
      shape.setAttribute("points", points);
      shape.setAttribute("fill", "none");
      shape.setAttribute("stroke", this.brushLike ? `${colour}99` : colour);
      shape.setAttribute("stroke-linecap", "round");
      shape.setAttribute("stroke-linejoin", "round");
      const width = this.brushLike ? 2 * this.brushRadiusMm * this.viewer.pixelsPerMm(drawing.view) : 2;
      shape.setAttribute("stroke-width", String(Math.max(1, width)));
    }
    svg.replaceChildren(shape);
  }

  private drawCursor(view: ViewportId, event: PointerEvent): void {
    const svg = this.overlays.get(view)!;
    const at = this.local(view, event);
    const circle = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    circle.setAttribute("cx", String(at.x));
    circle.setAttribute("cy", String(at.y));
    circle.setAttribute("r", String(Math.max(1, this.brushRadiusMm * this.viewer.pixelsPerMm(view))));
    circle.setAttribute("fill", "none");
    circle.setAttribute("stroke", this.colour());
    circle.setAttribute("stroke-width", "1.5");
    svg.replaceChildren(circle);
  }

  private clearCursor(view: ViewportId): void {
    if (!this.drawing) this.clearOverlay(view);
  }

  private clearOverlay(view: ViewportId): void {
    this.overlays.get(view)?.replaceChildren();
  }

  destroy(): void {
    for (const undo of this.cleanup) undo();
  }
}

function dedupe(points: Index3[]): Index3[] {
  return points.filter(
    (p, n) => n === 0 || p[0] !== points[n - 1][0] || p[1] !== points[n - 1][1] || p[2] !== points[n - 1][2],
  );
}

/** Every n-th point so that at most ``limit`` remain (the last one kept). */
function thin(points: Index3[], limit: number): Index3[] {
  if (points.length <= limit) return points;
  const step = Math.ceil(points.length / limit);
  const kept = points.filter((_, n) => n % step === 0);
  if (kept[kept.length - 1] !== points[points.length - 1]) kept.push(points[points.length - 1]);
  return kept;
}
