// What the annotator edits: the labelmap, its segments with their view state (visible, locked), the active
// segment, and one undo/redo history for AI results and manual edits alike. No DOM, no server: the
// controller (controller.ts) moves data between this, the screen and the server.

import { type LabelEdit, LockedSegmentError, applyFrame, redoEdit, undoEdit } from "../interactive/apply";
import type { MaskFrame } from "../interactive/frame";
import { Labelmap } from "../labelmap/labelmap";
import { type Region, copyRegion, regionSize, unionRegion } from "../labelmap/region";
import type { Segment } from "../segmentations/client";

export interface SegmentState extends Segment {
  visible: boolean;
  locked: boolean;
}

export type EditKind = "ai" | "manual";

export interface HistoryEntry {
  kind: EditKind;
  layer: number;
  edit: LabelEdit;
}

export interface DocumentEvents {
  /** Voxels of ``segment`` in ``region`` on ``layer`` changed. */
  voxels(layer: number, region: Region, segment: number): void;
  /** Segments, their state or the active segment changed. */
  segments(): void;
  /** The undo/redo stacks or the unsaved flag changed. */
  history(): void;
}

/** The bounds of a segment without voxels. */
const NOWHERE: Region = { start: [0, 0, 0], stop: [0, 0, 0] };

/** Undo keeps at most this many bytes of before/after copies (oldest steps go first). */
const HISTORY_BYTES = 512 * 1024 * 1024;

export class AnnotationDocument {
  segments: SegmentState[] = [];
  active: number | null = null;
  /** Edits since the labelmap was loaded or saved. */
  unsaved = false;
  private undoStack: HistoryEntry[] = [];
  private redoStack: HistoryEntry[] = [];
  /** Per segment: a region known to hold all its voxels (see segmentBounds). */
  private bounds = new Map<number, Region>();
  private listeners: Partial<DocumentEvents>[] = [];

  constructor(public labelmap: Labelmap) {}

  on(listener: Partial<DocumentEvents>): void {
    this.listeners.push(listener);
  }

  private emit<K extends keyof DocumentEvents>(type: K, ...args: Parameters<DocumentEvents[K]>): void {
    for (const listener of this.listeners) (listener[type] as ((...a: unknown[]) => void) | undefined)?.(...args);
  }

  /** A freshly loaded labelmap: history and bounds start over. */
  load(labelmap: Labelmap, segments: Segment[]): void {
    this.labelmap = labelmap;
    this.segments = this.withViewState(segments);
    if (this.active === null || !this.segment(this.active)) this.active = this.segments[0]?.number ?? null;
    this.undoStack = [];
    this.redoStack = [];
    this.bounds.clear();
    this.unsaved = false;
    this.emit("segments");
    this.emit("history");
  }

  segment(number: number): SegmentState | undefined {
    return this.segments.find((s) => s.number === number);
  }

  setSegments(segments: Segment[]): void {
    this.segments = this.withViewState(segments);
    this.emit("segments");
  }

  /** The segments with the visibility and lock they had here (new numbers: visible, unlocked). */
  private withViewState(segments: Segment[]): SegmentState[] {
    const previous = new Map(this.segments.map((s) => [s.number, s]));
    return segments.map((s) => ({
      ...s,
      visible: previous.get(s.number)?.visible ?? true,
      locked: previous.get(s.number)?.locked ?? false,
    }));
  }

  updateSegment(number: number, change: Partial<SegmentState>): void {
    const segment = this.segment(number);
    if (!segment) return;
    Object.assign(segment, change);
    this.emit("segments");
  }

  setActive(number: number | null): void {
    this.active = number;
    this.emit("segments");
  }

  get locked(): Set<number> {
    return new Set(this.segments.filter((s) => s.locked).map((s) => s.number));
  }

  /** The layer the segment is on (0 while it has no voxels). */
  layerOf(segment: number): number {
    return Math.max(0, this.labelmap.layerOf(segment));
  }

  /**
   * A region known to hold every voxel of the segment: found by one scan of the volume the first time, then
   * kept up by every edit, undo and redo, so that REPLACE frames, manual edits and the masks sent to the server
   * look at the segment's surroundings only, not at the whole volume.
   */
  segmentBounds(segment: number): Region {
    let bounds = this.bounds.get(segment);
    if (!bounds) {
      bounds = this.labelmap.boundingBox(segment) ?? NOWHERE;
      this.bounds.set(segment, bounds);
    }
    return bounds;
  }

  /** Writes an AI result into ``segment``; null when nothing changed. Throws LockedSegmentError. */
  applyAiFrame(frame: MaskFrame, segment: number): HistoryEntry | null {
    const layer = this.layerOf(segment);
    const edit = applyFrame(this.labelmap.layer(layer), this.labelmap.shape, frame, segment, {
      locked: this.locked,
      segmentBounds: this.segmentBounds(segment),
    });
    return edit ? this.record("ai", layer, edit) : null;
  }

  /** Records an edit already made to ``layer`` (manual tools), so that it can be undone. */
  record(kind: EditKind, layer: number, edit: LabelEdit): HistoryEntry {
    const entry = { kind, layer, edit };
    this.bounds.set(edit.segment, edit.segmentBounds);
    this.undoStack.push(entry);
    this.redoStack = [];
    this.trimHistory();
    this.unsaved = true;
    this.emit("voxels", layer, edit.region, edit.segment);
    this.emit("history");
    return entry;
  }

  /** Checks that ``segment`` may be written; throws LockedSegmentError. */
  checkWritable(segment: number): void {
    if (this.segment(segment)?.locked) throw new LockedSegmentError(segment);
  }

  get canUndo(): boolean {
    return this.undoStack.length > 0;
  }

  get canRedo(): boolean {
    return this.redoStack.length > 0;
  }

  /** Takes the last edit back; returns it (its segment needs syncing with the server), or null. */
  undo(): HistoryEntry | null {
    const entry = this.undoStack.pop();
    if (!entry) return null;
    undoEdit(this.labelmap.layer(entry.layer), this.labelmap.shape, entry.edit);
    this.redoStack.push(entry);
    // Before the edit, its segment's voxels lay in its bounds after the edit or in the region it changed.
    this.afterStep(entry, unionRegion(entry.edit.segmentBounds, entry.edit.region) ?? NOWHERE);
    return entry;
  }

  redo(): HistoryEntry | null {
    const entry = this.redoStack.pop();
    if (!entry) return null;
    redoEdit(this.labelmap.layer(entry.layer), this.labelmap.shape, entry.edit);
    this.undoStack.push(entry);
    this.afterStep(entry, entry.edit.segmentBounds);
    return entry;
  }

  /** After an undo or redo, whose segment now lies in ``bounds``; every edit only flips voxels between the
   * background and its own segment, so the other segments' bounds hold. */
  private afterStep(entry: HistoryEntry, bounds: Region): void {
    this.bounds.set(entry.edit.segment, bounds);
    this.unsaved = true;
    this.emit("voxels", entry.layer, entry.edit.region, entry.edit.segment);
    this.emit("history");
  }

  private trimHistory(): void {
    let total = 0;
    for (let n = this.undoStack.length - 1; n >= 0; n--) {
      const { before, after } = this.undoStack[n].edit;
      total += before.byteLength + after.byteLength;
      if (total > HISTORY_BYTES) {
        this.undoStack.splice(0, n + 1);
        return;
      }
    }
  }

  markSaved(): void {
    this.unsaved = false;
    this.emit("history");
  }

  /**
   * The segment's mask over its bounding box, as the interactive protocol's initial mask takes it; an empty
   * segment gives one empty voxel (a REPLACE region: everything else is 0).
   */
  maskOf(segment: number): { region: Region; mask: Uint8Array } {
    const found = this.labelmap.boundingBox(segment, this.segmentBounds(segment));
    this.bounds.set(segment, found ?? NOWHERE);
    const region = found ?? { start: [0, 0, 0], stop: [1, 1, 1] };
    const layer = this.labelmap.layerOf(segment);
    const mask = new Uint8Array(regionSize(region));
    if (layer >= 0) {
      const values = copyRegion(this.labelmap.layer(layer), this.labelmap.shape, region);
      for (let v = 0; v < values.length; v++) mask[v] = values[v] === segment ? 1 : 0;
    }
    return { region, mask };
  }

  /** Whether every voxel the frame set lies in the segment now (false where another segment held it). */
  frameFullyApplied(segment: number, frame: MaskFrame): boolean {
    const layer = this.labelmap.layerOf(segment);
    if (layer < 0) return !frame.mask.includes(1);
    const values = copyRegion(this.labelmap.layer(layer), this.labelmap.shape, frame);
    for (let v = 0; v < values.length; v++) if (frame.mask[v] && values[v] !== segment) return false;
    return true;
  }

  /** Whether ``frame`` (a REPLACE frame) holds exactly the segment's voxels. */
  sameMask(segment: number, frame: MaskFrame): boolean {
    const layer = this.labelmap.layerOf(segment);
    let count = 0;
    for (let v = 0; v < frame.mask.length; v++) count += frame.mask[v];
    if (layer < 0) return count === 0;
    if (count !== this.labelmap.voxelCount(segment, this.segmentBounds(segment))) return false;
    const values = copyRegion(this.labelmap.layer(layer), this.labelmap.shape, frame);
    for (let v = 0; v < values.length; v++) if ((values[v] === segment ? 1 : 0) !== frame.mask[v]) return false;
    return true;
  }
}
