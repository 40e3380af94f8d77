import { describe, expect, it } from "vitest";

import { LockedSegmentError } from "../interactive/apply";
import type { MaskFrame } from "../interactive/frame";
import { Labelmap } from "../labelmap/labelmap";
import { type Index3, type Region, wholeVolume } from "../labelmap/region";
import type { Segment } from "../segmentations/client";
import { AnnotationDocument } from "./document";
import { fillPolygon, paintStroke } from "./paint";

const shape: Index3 = [4, 6, 8];
const spacing: Index3 = [1, 1, 1];

function segment(number: number, label = `Segment ${number}`): Segment {
  const code = { value: "T-D0050", scheme: "SRT", meaning: "Tissue" };
  return {
    number,
    label,
    color: "#ff0000",
    category: code,
    type: code,
    tracking_id: label,
    tracking_uid: `2.25.${number}`,
    algorithm: { type: "MANUAL" },
  };
}

/** A document on an empty [4, 6, 8] labelmap (``layers`` layers) with segments 1, 2 and 3. */
function newDocument(layers = 1): AnnotationDocument {
  const labelmap = new Labelmap(shape);
  for (let n = 1; n < layers; n++) labelmap.addLayer();
  const doc = new AnnotationDocument(new Labelmap(shape));
  doc.load(labelmap, [segment(1), segment(2), segment(3)]);
  return doc;
}

/** A frame over ``start``..``stop`` whose mask is 1 where ``inside`` holds (volume coordinates). */
function frame(
  start: Index3,
  stop: Index3,
  inside: (k: number, j: number, i: number) => boolean,
  replace = false,
): MaskFrame {
  const mask: number[] = [];
  for (let k = start[0]; k < stop[0]; k++) {
    for (let j = start[1]; j < stop[1]; j++) for (let i = start[2]; i < stop[2]; i++) mask.push(inside(k, j, i) ? 1 : 0);
  }
  return { request: 1, start, stop, mask: Uint8Array.from(mask), replace };
}

const all = () => true;

/** Copies of every layer, to compare voxel for voxel later. */
function snapshot(doc: AnnotationDocument): number[][] {
  return doc.labelmap.layers.map((layer) => [...layer]);
}

/** The voxels of ``layer`` equal to ``value``, as "k,j,i" strings. */
function voxelsOf(doc: AnnotationDocument, value: number, layer = 0): Set<string> {
  const found = new Set<string>();
  for (let k = 0; k < shape[0]; k++) {
    for (let j = 0; j < shape[1]; j++) {
      for (let i = 0; i < shape[2]; i++) if (doc.labelmap.get(layer, k, j, i) === value) found.add(`${k},${j},${i}`);
    }
  }
  return found;
}

/** The voxels for which ``inside`` holds. */
function where(inside: (k: number, j: number, i: number) => boolean): Set<string> {
  const found = new Set<string>();
  for (let k = 0; k < shape[0]; k++) {
    for (let j = 0; j < shape[1]; j++) for (let i = 0; i < shape[2]; i++) if (inside(k, j, i)) found.add(`${k},${j},${i}`);
  }
  return found;
}

type Event = ["voxels", number, Region, number] | ["segments"] | ["history"];

function listen(doc: AnnotationDocument): Event[] {
  const events: Event[] = [];
  doc.on({
    voxels: (layer, region, segment) => events.push(["voxels", layer, region, segment]),
    segments: () => events.push(["segments"]),
    history: () => events.push(["history"]),
  });
  return events;
}

/** A brush stroke of segment ``number`` through ``points`` on slice k, recorded as a manual edit. */
function paint(
  doc: AnnotationDocument,
  number: number,
  k: number,
  points: [number, number][],
  mode: "paint" | "erase" = "paint",
) {
  const layer = doc.layerOf(number);
  const edit = paintStroke(
    doc.labelmap.layer(layer),
    shape,
    spacing,
    { axis: 0, slice: k },
    points.map(([j, i]) => [k, j, i] as const),
    1,
    number,
    mode,
    { locked: doc.locked, segmentBounds: doc.segmentBounds(number) },
  );
  if (!edit) throw new Error("the stroke changed nothing");
  return doc.record("manual", layer, edit);
}

describe("AnnotationDocument.load", () => {
  it("sets the segments, makes the first one active and starts history over", () => {
    const doc = newDocument();
    expect(doc.segments.map((s) => [s.number, s.label, s.visible, s.locked])).toEqual([
      [1, "Segment 1", true, false],
      [2, "Segment 2", true, false],
      [3, "Segment 3", true, false],
    ]);
    expect(doc.active).toBe(1);
    doc.applyAiFrame(frame([0, 0, 0], [1, 2, 2], all), 1);
    doc.undo();
    doc.applyAiFrame(frame([1, 0, 0], [2, 2, 2], all), 2);
    doc.undo();
    expect(doc.canRedo).toBe(true);
    expect(doc.unsaved).toBe(true);

    const events = listen(doc);
    const labelmap = new Labelmap(shape);
    doc.load(labelmap, [segment(2), segment(4)]);
    expect(doc.labelmap).toBe(labelmap);
    expect(doc.canUndo).toBe(false);
    expect(doc.canRedo).toBe(false);
    expect(doc.unsaved).toBe(false);
    expect(doc.undo()).toBeNull();
    expect(doc.redo()).toBeNull();
    expect(events).toEqual([["segments"], ["history"]]);
    // Segment 1 is gone: the first segment becomes active.
    expect(doc.active).toBe(2);
  });

  it("keeps visible and locked for segment numbers it had before, and defaults for new ones", () => {
    const doc = newDocument();
    doc.updateSegment(1, { visible: false });
    doc.updateSegment(2, { locked: true });
    doc.updateSegment(3, { visible: false, locked: true });
    doc.load(new Labelmap(shape), [segment(3, "renamed"), segment(2), segment(5)]);
    expect(doc.segments.map((s) => [s.number, s.label, s.visible, s.locked])).toEqual([
      [3, "renamed", false, true],
      [2, "Segment 2", true, true],
      [5, "Segment 5", true, false],
    ]);
    expect(doc.locked).toEqual(new Set([2, 3]));
  });

  it("keeps the active segment while it is still there, and takes the first one after it was cleared", () => {
    const doc = newDocument();
    doc.setActive(3);
    doc.load(new Labelmap(shape), [segment(1), segment(3)]);
    expect(doc.active).toBe(3);
    doc.active = null; // as the controller does before loading another segmentation
    doc.load(new Labelmap(shape), [segment(7), segment(3)]);
    expect(doc.active).toBe(7);
    doc.load(new Labelmap(shape), []);
    expect(doc.active).toBeNull();
  });
});

describe("AnnotationDocument.applyAiFrame", () => {
  it("writes only the segment's voxels and never another segment's", () => {
    const doc = newDocument();
    // Segment 2: the block k 0-1, j 0-2, i 0-3; segment 3: one voxel outside the frame.
    for (let k = 0; k < 2; k++) for (let j = 0; j < 3; j++) for (let i = 0; i < 4; i++) doc.labelmap.set(0, k, j, i, 2);
    doc.labelmap.set(0, 3, 5, 7, 3);
    const before = snapshot(doc);

    // Everything of k 1-2, j 1-3, i 2-5: half of it lies in segment 2.
    const entry = doc.applyAiFrame(frame([1, 1, 2], [3, 4, 6], all), 1);
    expect(entry?.kind).toBe("ai");
    expect(entry?.layer).toBe(0);
    expect(entry?.edit.segment).toBe(1);
    const inFrame = (k: number, j: number, i: number) => k >= 1 && k < 3 && j >= 1 && j < 4 && i >= 2 && i < 6;
    const inTwo = (k: number, j: number, i: number) => k < 2 && j < 3 && i < 4;
    expect(voxelsOf(doc, 1)).toEqual(where((k, j, i) => inFrame(k, j, i) && !inTwo(k, j, i)));
    expect(voxelsOf(doc, 2)).toEqual(where(inTwo));
    expect(voxelsOf(doc, 3)).toEqual(new Set(["3,5,7"]));
    // Every voxel that changed was background and is now segment 1.
    const after = snapshot(doc);
    for (let v = 0; v < after[0].length; v++) {
      if (after[0][v] !== before[0][v]) expect([before[0][v], after[0][v]]).toEqual([0, 1]);
    }
  });

  it("with REPLACE clears the segment outside the frame, still leaving other segments alone", () => {
    const doc = newDocument();
    doc.applyAiFrame(frame([0, 0, 0], [4, 6, 8], (k, j, i) => k === 0 && j < 2), 1);
    doc.labelmap.set(0, 3, 0, 0, 2);
    const entry = doc.applyAiFrame(frame([2, 2, 2], [4, 4, 4], all, true), 1);
    expect(voxelsOf(doc, 1)).toEqual(where((k, j, i) => k >= 2 && j >= 2 && j < 4 && i >= 2 && i < 4));
    expect(voxelsOf(doc, 2)).toEqual(new Set(["3,0,0"]));
    expect(entry?.edit.region).toEqual({ start: [0, 0, 0], stop: [4, 4, 8] });
  });

  it("REPLACE frames find the segment wherever earlier edits, undos and redos left it", () => {
    const doc = newDocument();
    doc.applyAiFrame(frame([0, 0, 0], [1, 2, 2], all, true), 1);
    paint(doc, 1, 3, [[5, 7]]); // far outside the first frame
    doc.applyAiFrame(frame([1, 3, 3], [2, 4, 4], all, true), 1);
    expect(voxelsOf(doc, 1)).toEqual(new Set(["1,3,3"]));
    doc.undo();
    doc.undo();
    doc.redo();
    // Now segment 1 is the first frame's block and the stroke.
    expect(voxelsOf(doc, 1).has("0,0,0")).toBe(true);
    expect(voxelsOf(doc, 1).has("3,5,7")).toBe(true);
    doc.applyAiFrame(frame([2, 0, 0], [3, 1, 1], all, true), 1);
    expect(voxelsOf(doc, 1)).toEqual(new Set(["2,0,0"]));
  });

  it("returns null and records nothing when no voxel changes", () => {
    const doc = newDocument();
    doc.applyAiFrame(frame([0, 0, 0], [1, 1, 2], all), 1);
    doc.markSaved();
    const events = listen(doc);
    expect(doc.applyAiFrame(frame([0, 0, 0], [1, 1, 2], all), 1)).toBeNull();
    expect(doc.applyAiFrame(frame([2, 2, 2], [3, 3, 3], () => false), 2)).toBeNull();
    expect(events).toEqual([]);
    expect(doc.unsaved).toBe(false);
    doc.undo();
    expect(doc.canUndo).toBe(false);
  });

  it("throws LockedSegmentError for a locked segment and changes nothing", () => {
    const doc = newDocument();
    doc.applyAiFrame(frame([0, 0, 0], [1, 2, 2], all), 1);
    doc.undo();
    doc.markSaved();
    doc.updateSegment(1, { locked: true });
    const before = snapshot(doc);
    const events = listen(doc);
    expect(() => doc.applyAiFrame(frame([0, 0, 0], [4, 6, 8], all, true), 1)).toThrow(LockedSegmentError);
    expect(() => doc.checkWritable(1)).toThrow(LockedSegmentError);
    expect(() => doc.checkWritable(2)).not.toThrow();
    expect(snapshot(doc)).toEqual(before);
    expect(events).toEqual([]);
    expect(doc.canUndo).toBe(false);
    expect(doc.canRedo).toBe(true); // the redo stack is kept
    expect(doc.unsaved).toBe(false);

    // Other segments are still writable, and a locked segment is never written by them.
    doc.labelmap.set(0, 0, 0, 0, 1);
    doc.applyAiFrame(frame([0, 0, 0], [1, 1, 2], all), 2);
    expect(doc.labelmap.get(0, 0, 0, 0)).toBe(1);
    expect(doc.labelmap.get(0, 0, 0, 1)).toBe(2);
  });

  it("writes a segment on the layer it lies on", () => {
    const doc = newDocument(2);
    doc.labelmap.set(0, 1, 1, 1, 2);
    doc.labelmap.set(1, 1, 1, 1, 3); // overlaps segment 2
    const events = listen(doc);
    const entry = doc.applyAiFrame(frame([1, 1, 1], [2, 2, 3], all), 3);
    expect(entry?.layer).toBe(1);
    expect(doc.labelmap.get(1, 1, 1, 2)).toBe(3);
    expect(doc.labelmap.get(0, 1, 1, 2)).toBe(0);
    expect(events).toEqual([["voxels", 1, { start: [1, 1, 2], stop: [2, 2, 3] }, 3], ["history"]]);
  });
});

describe("AnnotationDocument history", () => {
  it("undoes a recorded brush stroke exactly, redoes it, and drops redo on a new edit", () => {
    const doc = newDocument();
    doc.labelmap.set(0, 1, 2, 3, 2); // another segment under the stroke: never touched
    const empty = snapshot(doc);
    const entry = paint(doc, 1, 1, [[2, 2], [3, 5]]);
    expect(entry.kind).toBe("manual");
    expect(doc.labelmap.get(0, 1, 2, 3)).toBe(2);
    expect(voxelsOf(doc, 1).size).toBeGreaterThan(4);
    const painted = snapshot(doc);

    expect(doc.undo()).toBe(entry);
    expect(snapshot(doc)).toEqual(empty);
    expect(doc.canUndo).toBe(false);
    expect(doc.canRedo).toBe(true);
    expect(doc.redo()).toBe(entry);
    expect(snapshot(doc)).toEqual(painted);
    expect(doc.canRedo).toBe(false);

    doc.undo();
    const layer = doc.labelmap.layer(0);
    const outline: [number, number, number][] = [[2, 0, 0], [2, 0, 3], [2, 3, 3], [2, 3, 0]];
    const square = fillPolygon(layer, shape, { axis: 0, slice: 2 }, outline, 1, "fill");
    doc.record("manual", 0, square!);
    expect(voxelsOf(doc, 1)).toEqual(where((k, j, i) => k === 2 && j < 3 && i < 3));
    expect(doc.canRedo).toBe(false);
    expect(doc.redo()).toBeNull();
    expect(voxelsOf(doc, 1)).toEqual(where((k, j, i) => k === 2 && j < 3 && i < 3));
    doc.undo();
    expect(snapshot(doc)).toEqual(empty);
    expect(doc.canUndo).toBe(false);
  });

  it("undoes an erasing stroke", () => {
    const doc = newDocument();
    doc.applyAiFrame(frame([0, 0, 0], [2, 6, 8], all), 1);
    const full = snapshot(doc);
    paint(doc, 1, 1, [[3, 0], [3, 7]], "erase");
    expect(voxelsOf(doc, 1).has("1,3,4")).toBe(false);
    expect(voxelsOf(doc, 1).has("0,3,4")).toBe(true);
    doc.undo();
    expect(snapshot(doc)).toEqual(full);
  });

  it("takes AI results and manual edits back in one order", () => {
    const doc = newDocument();
    const states = [snapshot(doc)];
    const entries = [doc.applyAiFrame(frame([0, 0, 0], [2, 3, 4], (k, j, i) => (k + j + i) % 2 === 0), 1)];
    states.push(snapshot(doc));
    entries.push(paint(doc, 1, 1, [[1, 1], [4, 6]]));
    states.push(snapshot(doc));
    entries.push(doc.applyAiFrame(frame([1, 2, 2], [4, 6, 8], (k, j) => j < 5, true), 1));
    states.push(snapshot(doc));
    expect(entries.map((e) => e?.kind)).toEqual(["ai", "manual", "ai"]);
    // Each edit changes the labelmap (and the later ones overlap the earlier).
    expect(states[1]).not.toEqual(states[0]);
    expect(states[2]).not.toEqual(states[1]);
    expect(states[3]).not.toEqual(states[2]);

    expect(doc.undo()).toBe(entries[2]);
    expect(snapshot(doc)).toEqual(states[2]);
    expect(doc.undo()).toBe(entries[1]);
    expect(snapshot(doc)).toEqual(states[1]);
    expect(doc.undo()).toBe(entries[0]);
    expect(snapshot(doc)).toEqual(states[0]);
    expect(doc.labelmap.layer(0).every((value) => value === 0)).toBe(true);
    expect(doc.undo()).toBeNull();

    expect(doc.redo()).toBe(entries[0]);
    expect(snapshot(doc)).toEqual(states[1]);
    expect(doc.redo()).toBe(entries[1]);
    expect(snapshot(doc)).toEqual(states[2]);
    expect(doc.redo()).toBe(entries[2]);
    expect(snapshot(doc)).toEqual(states[3]);
    expect(doc.redo()).toBeNull();
  });

  it("keeps canUndo, canRedo and unsaved up to date, and markSaved clears unsaved", () => {
    const doc = newDocument();
    const flags = () => [doc.canUndo, doc.canRedo, doc.unsaved];
    expect(flags()).toEqual([false, false, false]);
    doc.applyAiFrame(frame([0, 0, 0], [1, 1, 1], all), 1);
    expect(flags()).toEqual([true, false, true]);
    paint(doc, 2, 3, [[3, 3]]);
    expect(flags()).toEqual([true, false, true]);

    const events = listen(doc);
    doc.markSaved();
    expect(flags()).toEqual([true, false, false]);
    expect(events).toEqual([["history"]]);

    doc.undo();
    expect(flags()).toEqual([true, true, true]);
    doc.markSaved();
    doc.undo();
    expect(flags()).toEqual([false, true, true]);
    doc.markSaved();
    doc.redo();
    expect(flags()).toEqual([true, true, true]);
    doc.redo();
    expect(flags()).toEqual([true, false, true]);
  });

  it("fires voxels with the edit's layer, region and segment, then history, on record, undo and redo", () => {
    const doc = newDocument(2);
    doc.labelmap.set(1, 0, 0, 0, 3); // segment 3 lies on layer 1
    const events = listen(doc);

    const ai = doc.applyAiFrame(frame([0, 1, 1], [2, 3, 4], all), 1)!;
    expect(ai.edit.region).toEqual({ start: [0, 1, 1], stop: [2, 3, 4] });
    const manual = paint(doc, 3, 2, [[4, 6]]);
    expect(manual.layer).toBe(1);
    expect(manual.edit.region.start[0]).toBe(2);
    expect(manual.edit.region.stop[0]).toBe(3);
    doc.undo();
    doc.undo();
    doc.redo();

    expect(events).toEqual([
      ["voxels", 0, ai.edit.region, 1],
      ["history"],
      ["voxels", 1, manual.edit.region, 3],
      ["history"],
      ["voxels", 1, manual.edit.region, 3],
      ["history"],
      ["voxels", 0, ai.edit.region, 1],
      ["history"],
      ["voxels", 0, ai.edit.region, 1],
      ["history"],
    ]);
    expect(doc.labelmap.get(1, 2, 4, 6)).toBe(0);
    expect(doc.labelmap.get(0, 2, 4, 6)).toBe(0);
  });

  it("fires segments on segment changes, without touching history", () => {
    const doc = newDocument();
    const events = listen(doc);
    doc.setActive(2);
    doc.updateSegment(2, { visible: false });
    doc.updateSegment(9, { visible: false }); // no such segment
    doc.setSegments([segment(2), segment(4)]);
    expect(events).toEqual([["segments"], ["segments"], ["segments"]]);
    expect(doc.segments.map((s) => [s.number, s.visible])).toEqual([[2, false], [4, true]]);
    expect(doc.unsaved).toBe(false);
  });
});

describe("AnnotationDocument masks", () => {
  it("maskOf gives the segment's bounding box and its voxels there", () => {
    const doc = newDocument();
    doc.labelmap.set(0, 1, 2, 3, 1);
    doc.labelmap.set(0, 2, 4, 5, 1);
    doc.labelmap.set(0, 2, 2, 3, 2); // another segment inside the box: 0 in the mask
    const { region, mask } = doc.maskOf(1);
    expect(region).toEqual({ start: [1, 2, 3], stop: [3, 5, 6] });
    expect(mask.length).toBe(2 * 3 * 3);
    const expected = new Uint8Array(18);
    expected[0] = 1; // [1, 2, 3]
    expected[9 + 2 * 3 + 2] = 1; // [2, 4, 5]
    expect(mask).toEqual(expected);
  });

  it("maskOf finds a segment on another layer, and gives one empty voxel for an empty segment", () => {
    const doc = newDocument(2);
    doc.labelmap.set(1, 3, 5, 7, 3);
    doc.labelmap.set(0, 3, 5, 7, 2);
    expect(doc.maskOf(3)).toEqual({ region: { start: [3, 5, 7], stop: [4, 6, 8] }, mask: Uint8Array.of(1) });
    expect(doc.maskOf(1)).toEqual({ region: { start: [0, 0, 0], stop: [1, 1, 1] }, mask: Uint8Array.of(0) });
  });

  it("maskOf stays exact through strokes, undo and redo, while it only looks near the segment", () => {
    const doc = newDocument();
    doc.labelmap.set(0, 0, 0, 0, 1);
    expect(doc.maskOf(1).region).toEqual({ start: [0, 0, 0], stop: [1, 1, 1] });
    const stroke = paint(doc, 1, 3, [[4, 6], [5, 7]]);
    const painted = doc.maskOf(1).region;
    expect(painted.start).toEqual([0, 0, 0]);
    expect(painted.stop[0]).toBe(4);
    doc.undo();
    expect(doc.maskOf(1).region).toEqual({ start: [0, 0, 0], stop: [1, 1, 1] });
    doc.redo();
    expect(doc.maskOf(1).region).toEqual(painted);
    // Erasing the first voxel: the box shrinks to the stroke.
    paint(doc, 1, 0, [[0, 0]], "erase");
    expect(doc.maskOf(1).region).toEqual(stroke.edit.region);
    const { region, mask } = doc.maskOf(1);
    expect(doc.sameMask(1, { request: 1, ...region, mask, replace: true })).toBe(true);
  });

  it("sameMask tells whether a REPLACE frame holds exactly the segment's voxels", () => {
    const doc = newDocument();
    doc.applyAiFrame(frame([1, 1, 1], [3, 4, 5], (k, j, i) => (k + j + i) % 3 !== 0), 1);
    doc.labelmap.set(0, 0, 0, 0, 2);
    const { region, mask } = doc.maskOf(1);
    const own: MaskFrame = { request: 0, ...region, mask, replace: true };
    expect(doc.sameMask(1, own)).toBe(true);
    const onSegment = (k: number, j: number, i: number) => doc.labelmap.get(0, k, j, i) === 1;
    expect(doc.sameMask(1, frame([0, 0, 0], [4, 6, 8], onSegment, true))).toBe(true);

    // One voxel more or less inside the frame.
    const more = Uint8Array.from(mask);
    more[more.indexOf(0)] = 1;
    expect(doc.sameMask(1, { ...own, mask: more })).toBe(false);
    const less = Uint8Array.from(mask);
    less[less.indexOf(1)] = 0;
    expect(doc.sameMask(1, { ...own, mask: less })).toBe(false);
    // The same count but one voxel moved.
    const moved = Uint8Array.from(mask);
    moved[moved.indexOf(1)] = 0;
    moved[moved.lastIndexOf(0)] = 1;
    expect(doc.sameMask(1, { ...own, mask: moved })).toBe(false);
    // A frame missing the segment's voxels outside it.
    expect(doc.sameMask(1, frame([1, 1, 1], [2, 4, 5], onSegment, true))).toBe(false);
    // Another segment's voxel counted as the segment's.
    const withTwo = (k: number, j: number, i: number) => onSegment(k, j, i) || (k === 0 && j === 0 && i === 0);
    expect(doc.sameMask(1, frame([0, 0, 0], [4, 6, 8], withTwo, true))).toBe(false);

    // An empty segment.
    expect(doc.sameMask(3, frame([0, 0, 0], [1, 1, 1], () => false, true))).toBe(true);
    expect(doc.sameMask(3, frame([0, 0, 0], [4, 6, 8], () => false, true))).toBe(true);
    const nothing = doc.maskOf(3);
    expect(doc.sameMask(3, { request: 0, ...nothing.region, mask: nothing.mask, replace: true })).toBe(true);
    expect(doc.sameMask(3, frame([0, 0, 0], [2, 2, 2], (k, j, i) => k + j + i === 3, true))).toBe(false);
    // An empty frame for a segment with voxels.
    expect(doc.sameMask(1, frame([0, 0, 0], [1, 1, 1], () => false, true))).toBe(false);
  });

  it("frameFullyApplied is false when the frame asked for another segment's voxels", () => {
    const doc = newDocument();
    for (let i = 0; i < 8; i++) doc.labelmap.set(0, 2, 3, i, 2);

    const free = frame([0, 0, 0], [2, 6, 8], (k, j, i) => j === i % 6);
    doc.applyAiFrame(free, 1);
    expect(doc.frameFullyApplied(1, free)).toBe(true);

    const overlapping = frame([2, 2, 2], [3, 5, 6], all);
    doc.applyAiFrame(overlapping, 1);
    expect(doc.frameFullyApplied(1, overlapping)).toBe(false);
    expect(voxelsOf(doc, 2)).toEqual(where((k, j) => k === 2 && j === 3));
    // Without the voxels of segment 2 it is fully applied.
    expect(doc.frameFullyApplied(1, frame([2, 2, 2], [3, 5, 6], (k, j) => j !== 3))).toBe(true);

    // An empty segment: applied when the frame asks for nothing.
    expect(doc.frameFullyApplied(3, frame([0, 0, 0], [1, 1, 1], () => false))).toBe(true);
    const onTwo = frame([2, 3, 0], [3, 4, 8], all);
    expect(doc.applyAiFrame(onTwo, 3)).toBeNull();
    expect(doc.frameFullyApplied(3, onTwo)).toBe(false);
  });

  it("a whole-volume REPLACE frame empties the segment, and undo brings it back", () => {
    const doc = newDocument();
    doc.applyAiFrame(frame([0, 0, 0], [4, 6, 8], (k, j, i) => (k * j * i) % 5 === 1), 1);
    const before = snapshot(doc);
    const empty = frame(wholeVolume(shape).start, wholeVolume(shape).stop, () => false, true);
    doc.applyAiFrame(empty, 1);
    expect(doc.labelmap.voxelCount(1)).toBe(0);
    expect(doc.sameMask(1, empty)).toBe(true);
    doc.undo();
    expect(snapshot(doc)).toEqual(before);
  });
});
