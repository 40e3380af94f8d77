// Moves the annotation between the screen, the interactive service and the segmentation API.
//
// The labelmap in the browser is what the annotator sees; the server records every change before it counts:
// AI prompts go through the session of the active segment, and each manual edit, undo and redo is sent to
// that segment's session as an initial mask (docs/protocol.md), so prompts refine what is on screen and the
// segment's draft on the server holds it. A reload loads the latest version with the newer drafts over it.
// Everything that talks to the service runs one after another (`enqueue`), in the order the annotator acted.

import { InteractiveConnection, InteractiveError, type Prompt, type ReadyInfo } from "../interactive/connection";
import type { MaskFrame } from "../interactive/frame";
import { Labelmap } from "../labelmap/labelmap";
import type { Index3 } from "../labelmap/region";
import {
  type Segment,
  type SegmentFields,
  type Segmentation,
  type Version,
  addSegment,
  createSegmentation,
  fetchWorkingLabelmap,
  listSegmentations,
  listVersions,
  restoreVersion,
  saveVersion,
  updateSegment,
} from "../segmentations/client";
import type { Viewer } from "../viewer/viewer";
import { LabelmapDisplay } from "./display";
import { AnnotationDocument, type HistoryEntry } from "./document";
import { labelChoice, spareColour } from "./labels";

/** How long a left page still tries to get its last edits to the server. */
const LEAVE_DRAIN_MS = 30_000;

export interface PromptTiming {
  /** performance.now() stamps: the prompt left, its mask arrived, the views had drawn it. */
  sent: number;
  answered: number;
  drawn: number;
  /** Seconds the server spent (total) and the engine alone (inference). */
  server: number;
  engine: number;
}

export interface ControllerEvents {
  /** A line for the status bar or the panel: what happened, or what went wrong. */
  message(text: string, level: "info" | "error"): void;
  connection(text: string, state: string): void;
  latency(timing: PromptTiming): void;
  model(ready: ReadyInfo): void;
  versions(versions: Version[]): void;
  segmentation(segmentation: Segmentation | null): void;
}

export class AnnotationController {
  readonly doc: AnnotationDocument;
  readonly display: LabelmapDisplay;
  readonly connection = new InteractiveConnection();
  segmentation: Segmentation | null = null;
  versions: Version[] = [];
  baseVersion: number | null = null;
  lastTiming: PromptTiming | null = null;
  /** Every connection status so far, in order (the status bar shows only the latest). */
  readonly statusHistory: string[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  /** Segments whose mask on screen the server's session has not been told yet. */
  private readonly needsSync = new Set<number>();
  private sessionSegment: number | null = null;
  private pending = 0;
  /** The page was left: its views are gone. */
  private left = false;
  /** The connection is closed: nothing more goes to the server. */
  private closed = false;

  constructor(
    private readonly viewer: Viewer,
    private readonly series: string,
    private readonly events: Partial<ControllerEvents>,
  ) {
    this.doc = new AnnotationDocument(new Labelmap(viewer.volumeShape() as Index3));
    this.display = new LabelmapDisplay(viewer, `annovox-${series}`);
    this.display.surfaces.boundsOf = (segment) => this.doc.segmentBounds(segment);
    this.doc.on({
      voxels: (layer, region, segment) => {
        if (!this.left) this.display.changed(layer, region, segment);
      },
    });
    this.connection.on("status", (info) => {
      this.statusHistory.push(info.status);
      const text =
        info.status === "open"
          ? "AI connected"
          : info.status === "reconnecting"
            ? `AI reconnecting (attempt ${info.attempt})…`
            : info.status === "connecting"
              ? "AI connecting…"
              : `AI disconnected${info.reason ? `: ${info.reason}` : ""}`;
      this.events.connection?.(text, info.status);
    });
    this.connection.on("ready", (ready) => this.events.model?.(ready));
    this.connection.on("resumed", ({ frame }) => this.resumed(frame));
    this.connection.on("error", (error) => this.events.message?.(error.message, "error"));
  }

  /** Opens the series' newest segmentation (if any) where the work stands, and its first segment. */
  async start(): Promise<void> {
    this.display.show(this.doc.labelmap);
    const segmentations = await listSegmentations(this.series);
    if (this.left) return;
    if (segmentations.length) await this.openSegmentation(newest(segmentations));
    else this.events.segmentation?.(null);
  }

  async openSegmentation(segmentation: Segmentation): Promise<void> {
    await this.drain();
    const working = await fetchWorkingLabelmap(segmentation.id, this.doc.labelmap.shape);
    if (this.left) return; // the page was left meanwhile: its views are gone
    this.segmentation = segmentation;
    this.baseVersion = working.baseVersion;
    this.doc.active = null;
    this.doc.load(working.labelmap, segmentation.segments);
    this.doc.unsaved = working.draftSegments.length > 0;
    this.display.show(this.doc.labelmap);
    this.colourAll();
    this.events.segmentation?.(segmentation);
    if (working.draftSegments.length) {
      this.events.message?.(`Unsaved work restored (segments ${working.draftSegments.join(", ")}).`, "info");
    }
    await this.refreshVersions();
    if (this.doc.active !== null && !this.left) this.activate(this.doc.active);
  }

  private colourAll(): void {
    for (const segment of this.doc.segments) {
      this.display.setColour(segment.number, segment.color);
      this.display.setSegmentVisible(segment.number, segment.visible);
    }
  }

  async refreshVersions(): Promise<void> {
    this.versions = this.segmentation ? await listVersions(this.segmentation.id) : [];
    this.events.versions?.(this.versions);
  }

  // --- segments --------------------------------------------------------------------------------------------

  /** Adds a segment (creating the series' segmentation on the first) and makes it active. */
  async addSegment(label?: string): Promise<Segment> {
    const count = this.doc.segments.length;
    const name = label?.trim() || `Segment ${count + 1}`;
    const known = labelChoice(name);
    const fields: SegmentFields = known
      ? { label: known.label, color: known.color, category: known.category, type: known.type }
      : { label: name, color: spareColour(count) };
    let segment: Segment;
    if (!this.segmentation) {
      this.segmentation = await createSegmentation(this.series, { label: "Segmentation", segments: [fields] });
      segment = this.segmentation.segments[0];
      this.events.segmentation?.(this.segmentation);
    } else {
      segment = await addSegment(this.segmentation.id, fields);
      this.segmentation.segments.push(segment);
    }
    this.doc.setSegments(this.segmentation.segments);
    this.display.setColour(segment.number, segment.color);
    this.activate(segment.number);
    return segment;
  }

  async changeSegment(number: number, fields: { label?: string; color?: string }): Promise<void> {
    if (!this.segmentation) return;
    const known = fields.label ? labelChoice(fields.label) : undefined;
    const change: SegmentFields = { ...fields };
    if (known) Object.assign(change, { label: known.label, category: known.category, type: known.type });
    const segment = await updateSegment(this.segmentation.id, number, change);
    const index = this.segmentation.segments.findIndex((s) => s.number === number);
    this.segmentation.segments[index] = segment;
    this.doc.updateSegment(number, segment);
    this.display.setColour(number, segment.color);
  }

  setVisible(number: number, visible: boolean): void {
    this.doc.updateSegment(number, { visible });
    this.display.setSegmentVisible(number, visible);
  }

  setLocked(number: number, locked: boolean): void {
    this.doc.updateSegment(number, { locked });
  }

  /** Makes a segment the one AI results and manual edits go to, and opens its AI session. */
  activate(number: number): void {
    this.doc.setActive(number);
    this.enqueue(() => this.openSession(number));
  }

  /** M: the next object, in a new segment. */
  async nextObject(): Promise<void> {
    await this.addSegment();
  }

  // --- AI --------------------------------------------------------------------------------------------------

  /** Runs one prompt on the active segment; resolves when its mask is on screen. */
  async prompt(prompt: Prompt): Promise<void> {
    // The first prompt on a series without segments starts one.
    if (this.doc.active === null) await this.addSegment();
    const segment = this.requireActive();
    const sent = performance.now();
    return this.enqueue(async () => {
      await this.ensureSession(segment);
      const result = await this.connection.prompt(prompt);
      const answered = performance.now();
      if (result.frame) this.applyAi(result.frame, segment);
      const drawn = await this.drawn();
      this.lastTiming = {
        sent,
        answered,
        drawn,
        server: result.timings.total,
        engine: result.timings.inference ?? result.timings.total,
      };
      this.events.latency?.(this.lastTiming);
    });
  }

  /** R: forgets the active segment's prompts and empties it (undoable). */
  resetObject(): Promise<void> {
    const segment = this.requireActive();
    return this.enqueue(async () => {
      await this.ensureSession(segment);
      const result = await this.connection.reset();
      if (result.frame) this.applyAi(result.frame, segment);
    });
  }

  private applyAi(frame: MaskFrame, segment: number): HistoryEntry | null {
    const entry = this.doc.applyAiFrame(frame, segment);
    // Another segment's voxels are never overwritten: the session must then learn the mask as it is here,
    // at once, so that its draft is what the screen shows.
    if (!this.doc.frameFullyApplied(segment, frame)) {
      this.needsSync.add(segment);
      this.enqueue(() => this.sync(segment));
    }
    return entry;
  }

  // --- manual edits and history -----------------------------------------------------------------------------

  /** Records an edit a manual tool made to the active segment and tells the server. */
  manualEdit(entry: HistoryEntry | null): void {
    if (entry) this.afterEdit(entry);
  }

  undo(): boolean {
    const entry = this.doc.undo();
    if (entry) this.afterEdit(entry);
    return entry !== null;
  }

  redo(): boolean {
    const entry = this.doc.redo();
    if (entry) this.afterEdit(entry);
    return entry !== null;
  }

  /** The screen changed a segment: its session must hear of it. */
  private afterEdit(entry: HistoryEntry): void {
    this.needsSync.add(entry.edit.segment);
    this.enqueue(() => this.sync(entry.edit.segment));
  }

  // --- sessions ---------------------------------------------------------------------------------------------

  private async ensureSession(segment: number): Promise<void> {
    if (this.sessionSegment !== segment || !this.connection.ready) await this.openSession(segment);
    if (this.needsSync.has(segment)) await this.sendMask(segment);
  }

  private async openSession(segment: number): Promise<void> {
    if (!this.segmentation || this.closed) return;
    this.sessionSegment = null;
    const { frame } = await this.connection.open({
      series: this.series,
      segmentation: this.segmentation.id,
      segment,
    });
    this.sessionSegment = segment;
    // What is on screen counts (a saved version, a restore, edits): the session starts from it.
    if (this.needsSync.has(segment) || !this.doc.sameMask(segment, frame)) await this.sendMask(segment);
  }

  private async sendMask(segment: number): Promise<void> {
    const { region, mask } = this.doc.maskOf(segment);
    this.needsSync.delete(segment);
    try {
      await this.connection.initialMask(mask, region);
    } catch (error) {
      this.needsSync.add(segment);
      throw error;
    }
  }

  /** Brings the server's session of ``segment`` up to the screen, then returns to the active segment. */
  private async sync(segment: number): Promise<void> {
    if (!this.needsSync.has(segment) || !this.segmentation) return;
    await this.ensureSession(segment);
    const active = this.doc.active;
    if (active !== null && active !== segment) await this.openSession(active);
  }

  /** A reconnection resumed the session: unsent edits win, else the server's mask (it may hold a prompt
   * whose answer the dropped connection lost). */
  private resumed(frame: MaskFrame): void {
    const segment = this.sessionSegment;
    if (segment === null) return;
    if (this.needsSync.has(segment)) {
      this.enqueue(() => this.sendMask(segment));
    } else if (!this.doc.sameMask(segment, frame)) {
      this.applyAi(frame, segment);
    }
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    this.pending++;
    const run = this.queue.then(work);
    this.queue = run.then(
      () => this.pending--,
      (error: unknown) => {
        this.pending--;
        this.report(error);
      },
    );
    return run;
  }

  /** Waits for everything sent to the service so far. */
  async drain(): Promise<void> {
    while (this.pending) await this.queue;
  }

  /** Work the server has not got yet: a prompt or an edit on its way, or edits waiting for the connection.
   * Leaving the page now would lose it (the page asks first). */
  get hasUnsentWork(): boolean {
    return this.pending > 0 || this.needsSync.size > 0;
  }

  private report(error: unknown): void {
    if (error instanceof InteractiveError && error.code === "superseded") return;
    console.error(error);
    this.events.message?.(error instanceof Error ? error.message : String(error), "error");
  }

  private requireActive(): number {
    const active = this.doc.active;
    if (active === null) throw new Error("add a segment first");
    this.doc.checkWritable(active);
    return active;
  }

  /** Resolves when the axial view has drawn the latest change. */
  private drawn(): Promise<number> {
    return this.viewer.nextRender("axial");
  }

  // --- versions ---------------------------------------------------------------------------------------------

  /** Saves what is on screen as the next version. */
  async save(description = ""): Promise<Version> {
    if (!this.segmentation) throw new Error("nothing to save: add a segment first");
    await this.drain();
    const version = await saveVersion(this.segmentation.id, this.doc.labelmap, {
      description,
      parent: this.baseVersion ?? 0,
    });
    this.baseVersion = version.number;
    this.doc.markSaved();
    await this.refreshVersions();
    return version;
  }

  /** Makes an earlier version the newest (a new version) and loads it. */
  async restore(number: number): Promise<void> {
    if (!this.segmentation) return;
    await this.drain();
    await restoreVersion(this.segmentation.id, number);
    await this.openSegmentation(this.segmentation);
  }

  /** The page is left: the views go at once; what is not yet on the server still goes there (for at most
   * LEAVE_DRAIN_MS, as the server may be down), then the connection closes. */
  async close(): Promise<void> {
    this.left = true;
    this.display.remove();
    await Promise.race([this.drain(), new Promise((resolve) => setTimeout(resolve, LEAVE_DRAIN_MS))]);
    this.closed = true;
    this.connection.disconnect();
  }
}

function newest(segmentations: Segmentation[]): Segmentation {
  return [...segmentations].sort((a, b) => b.created.localeCompare(a.created) || b.id - a.id)[0];
}
