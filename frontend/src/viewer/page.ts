// The viewer page (#/series/{study}/{series}): four views, a side panel and a status bar around a Viewer, the
// keys, and the test hook `window.annovoxViewer` (documented in docs/viewer.md).

import { AnnotationController } from "../annotation/controller";
import type { SurfaceInfo } from "../annotation/surfaces";
import { AnnotationPanel } from "../annotation/panel";
import { EditingTools, TOOLS } from "../annotation/tools";
import { packBits } from "../interactive/frame";
import { el } from "../format";
import type { DicomJson, Markers, VoxelIndex } from "./geometry";
import { AUTO_KEY, CT_PRESETS, type VoiRange } from "./presets";
import { ALL_VIEWS, type LoadTimes, type ViewportId, Viewer } from "./viewer";

const TITLES: Record<ViewportId, string> = { axial: "Axial", sagittal: "Sagittal", coronal: "Coronal", "3d": "3D" };

/** What end-to-end tests (and part 2's tools) may call; coordinates are client (CSS viewport) pixels. */
export interface ViewerHook {
  ready: Promise<void>;
  viewportIds: ViewportId[];
  volumeShape(): VoxelIndex;
  voxelToClient(viewportId: ViewportId, index: VoxelIndex): { x: number; y: number };
  clientToVoxel(viewportId: ViewportId, client: { x: number; y: number }): VoxelIndex | null;
  showVoxel(index: VoxelIndex): void;
  currentSlice(viewportId: ViewportId): number;
  voxelValue(index: VoxelIndex): number;
  orientationMarkers(viewportId: ViewportId): Markers;
  setPreset(id: string): void;
  voiRange(viewportId: ViewportId): VoiRange;
  loadTimes(): LoadTimes;
  /** How often a view has been drawn: wait for it to grow after a change before reading the screen. */
  renderCount(viewportId: ViewportId): number;
  /** Segments, tools and masks; set once the viewer is ready (docs/viewer.md). */
  annotation?: AnnotationHook;
}

export interface AnnotationHook {
  ready: Promise<void>;
  segments(): { number: number; label: string; color: string; visible: boolean; locked: boolean }[];
  activeSegment(): number | null;
  tool(): string;
  positive(): boolean;
  /** The segment's voxels over its bounding box: numpy.packbits of the 0/1 mask, base64; null when empty. */
  segmentMask(segment: number): { start: number[]; stop: number[]; bits: string } | null;
  voxelCount(segment: number): number;
  /** SHA-256 (hex) of the labelmap's layers as saved ([layer, k, j, i], its dtype) and their shape. */
  labelmapDigest(): Promise<string>;
  /** Resolves when everything sent to the interactive service has been answered. */
  idle(): Promise<void>;
  lastPromptTiming(): { sent: number; answered: number; drawn: number; server: number; engine: number } | null;
  canUndo(): boolean;
  canRedo(): boolean;
  unsaved(): boolean;
  versions(): number[];
  /** The open segmentation's id, null before the first segment. */
  segmentationId(): number | null;
  connectionStatus(): string;
  /** Every status the connection went through (connecting, open, reconnecting, closed). */
  connectionHistory(): string[];
  /** False while V hides every mask. */
  masksVisible(): boolean;
  /** The segments drawn as surfaces in the 3D view (SegmentSurfaces.surfaces). */
  surfaces(): SurfaceInfo[];
}

declare global {
  interface Window {
    annovoxViewer?: ViewerHook;
  }
}

const KEYS: [string, string][] = [
  ...CT_PRESETS.map((p): [string, string] => [p.key, `${p.label} window (W ${p.width} / L ${p.center})`]),
  [AUTO_KEY, "Automatic window (from the image values)"],
  ["Home", "Reset the views and the window"],
  ...TOOLS.map((t): [string, string] => [t.key === "C" ? "C / Esc" : t.key, `${t.label}: ${t.help}`]),
  ["T", "Toggle positive / negative prompts (and scissors: fill / cut)"],
  ["R", "Reset the current object (forget its prompts, empty it)"],
  ["M", "Next object: a new segment"],
  ["V", "Show or hide all masks"],
  ["[ / ]", "Smaller / larger brush"],
  ["Ctrl+Z / Ctrl+Shift+Z", "Undo / redo (AI results and manual edits)"],
  ["Ctrl+S", "Save a new version"],
  ["?", "Show or hide this help"],
  ["Left drag", "Crosshairs: move all three planes (or the chosen tool)"],
  ["Shift + left drag", "Window/level"],
  ["Middle drag / right drag", "Pan / zoom"],
  ["Wheel", "Scroll through slices"],
  ["Left drag in 3D", "Rotate"],
];

export interface ViewerPage {
  /** Hand-over to part 2: the side panel (segments, tools) and the status bar fields. */
  panel: HTMLElement;
  connection: HTMLElement;
  latency: HTMLElement;
  close(): void;
}

/** `metadata`: the series' WADO-RS metadata (`seriesMetadata`), requested by the caller as early as it can. */
export function openViewer(
  root: HTMLElement,
  study: string,
  series: string,
  metadata: Promise<DicomJson[]>,
): ViewerPage {
  delete document.body.dataset.viewerReady;
  const cells = {} as Record<ViewportId, HTMLDivElement>;
  const markerNodes = {} as Record<ViewportId, Record<keyof Markers, HTMLElement>>;
  const grid = el("div", undefined, "viewer-grid");
  // The image volume in the 3D view, on or off (it hides segment surfaces inside it).
  const volumeToggle = el("button", "Volume", "button small viewport-toggle") as HTMLButtonElement;
  volumeToggle.type = "button";
  volumeToggle.id = "volume-in-3d";
  volumeToggle.title = "Show or hide the image volume in the 3D view";
  volumeToggle.setAttribute("aria-pressed", "true");
  volumeToggle.addEventListener("click", () => viewer.toggleVolumeIn3d());
  for (const id of ALL_VIEWS) {
    const cell = el("div", undefined, "viewport-cell");
    cell.dataset.viewport = id;
    const element = el("div", undefined, "viewport") as HTMLDivElement;
    element.id = `viewport-${id}`;
    element.addEventListener("contextmenu", (event) => event.preventDefault());
    const markers = {
      top: el("span", "", "marker marker-top"),
      bottom: el("span", "", "marker marker-bottom"),
      left: el("span", "", "marker marker-left"),
      right: el("span", "", "marker marker-right"),
    };
    cell.append(element, el("span", TITLES[id], "viewport-title"), ...Object.values(markers));
    if (id === "3d") cell.append(volumeToggle);
    grid.append(cell);
    cells[id] = element;
    markerNodes[id] = markers;
  }

  const presetBar = el("div", undefined, "preset-bar");
  const presetButtons = new Map<string, HTMLButtonElement>();
  for (const [id, label, key] of [
    ...CT_PRESETS.map((p) => [p.id, p.label, p.key]),
    ["auto", "Auto", AUTO_KEY],
  ] as [string, string, string][]) {
    const button = el("button", label, "button small") as HTMLButtonElement;
    button.type = "button";
    button.title = `${label} window (key ${key})`;
    button.dataset.preset = id;
    button.addEventListener("click", () => choosePreset(id));
    presetButtons.set(id, button);
    presetBar.append(button);
  }
  const resetButton = el("button", "Reset", "button small") as HTMLButtonElement;
  resetButton.type = "button";
  resetButton.title = "Reset views (Home)";
  const helpButton = el("button", "?", "button small") as HTMLButtonElement;
  helpButton.type = "button";
  helpButton.title = "Keys (?)";
  presetBar.append(resetButton, helpButton);

  const back = el("a", "← Series", "back-link") as HTMLAnchorElement;
  back.href = `#/study/${study}`;
  const title = el("span", "", "viewer-title");
  const toolbar = el("div", undefined, "viewer-toolbar");
  toolbar.append(back, title, presetBar);

  // Part 2 fills the panel (segments, AI and manual tools, save) and the connection/latency fields.
  const panel = el("aside", undefined, "viewer-panel");
  panel.id = "viewer-panel";
  panel.append(el("p", "Segments and tools appear when the series is loaded.", "muted"));

  const progress = el("progress", undefined, "viewer-progress") as HTMLProgressElement;
  progress.max = 1;
  progress.value = 0;
  const progressLabel = el("span", "Loading metadata…", "status-item");
  progressLabel.id = "viewer-progress-label";
  const connection = el("span", "", "status-item");
  connection.id = "status-connection";
  const latency = el("span", "", "status-item");
  latency.id = "status-latency";
  const status = el("footer", undefined, "status-bar");
  status.id = "viewer-status";
  status.append(progress, progressLabel, el("span", "", "status-spacer"), connection, latency);

  const help = el("div", undefined, "help-overlay");
  help.id = "help-overlay";
  help.hidden = true;
  const helpTable = el("table");
  for (const [key, what] of KEYS) {
    const row = el("tr");
    row.append(el("th", key), el("td", what));
    helpTable.append(row);
  }
  help.append(el("h2", "Keys and mouse"), helpTable, el("p", "Press ? or Esc to close.", "muted"));

  const body = el("div", undefined, "viewer-body");
  body.append(grid, panel);
  root.replaceChildren(toolbar, body, status, help);

  const viewer = new Viewer(cells, {
    opened(description) {
      title.textContent = description;
      progressLabel.textContent = "Loading slices…";
      highlightPreset();
    },
    progress(loaded, total) {
      progress.value = total ? loaded / total : 0;
      progressLabel.textContent = loaded < total ? `Loading ${loaded} / ${total} slices` : `${total} slices`;
    },
    volumeIn3d(visible) {
      volumeToggle.setAttribute("aria-pressed", String(visible));
    },
    markers(id, markers) {
      for (const side of ["top", "bottom", "left", "right"] as const) {
        markerNodes[id][side].textContent = markers[side];
      }
    },
  });

  function highlightPreset(): void {
    for (const [id, button] of presetButtons) button.classList.toggle("active", id === viewer.currentPreset);
  }
  function choosePreset(id: string): void {
    viewer.setPreset(id);
    highlightPreset();
  }
  function toggleHelp(show = help.hidden): void {
    help.hidden = !show;
  }
  resetButton.addEventListener("click", () => {
    viewer.reset();
    highlightPreset();
  });
  helpButton.addEventListener("click", () => toggleHelp());
  let annotation: { controller: AnnotationController; tools: EditingTools; panel: AnnotationPanel } | null = null;
  const onKey = (event: KeyboardEvent): void => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) return;
    if (event.altKey) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (event.ctrlKey || event.metaKey) {
      if (!annotation) return;
      if (key === "z" && event.shiftKey) annotation.controller.redo();
      else if (key === "z" || (key === "y" && !event.shiftKey)) {
        if (key === "y") annotation.controller.redo();
        else annotation.controller.undo();
      } else if (key === "s") annotation.panel.saveNow();
      else return;
      event.preventDefault();
      return;
    }
    const preset = CT_PRESETS.find((p) => p.key === event.key);
    const tool = TOOLS.find((t) => t.key.toLowerCase() === key);
    if (preset) choosePreset(preset.id);
    else if (event.key === AUTO_KEY) choosePreset("auto");
    else if (event.key === "Home") resetButton.click();
    else if (event.key === "?") toggleHelp();
    else if (event.key === "Escape" && !help.hidden) toggleHelp(false);
    else if (!annotation) return;
    else if (event.key === "Escape") annotation.tools.choose("navigate");
    else if (tool) annotation.tools.choose(tool.id);
    else if (key === "t") annotation.tools.togglePolarity();
    else if (key === "r") void annotation.panel.run(() => annotation!.controller.resetObject());
    else if (key === "m") void annotation.panel.run(() => annotation!.controller.nextObject());
    else if (key === "v") annotation.controller.display.setAllVisible(!annotation.controller.display.allVisible);
    else if (key === "[") annotation.tools.setBrushRadius(annotation.tools.brushRadiusMm - 0.5);
    else if (key === "]") annotation.tools.setBrushRadius(annotation.tools.brushRadiusMm + 0.5);
    else return;
    event.preventDefault();
  };
  document.addEventListener("keydown", onKey);
  // Reloading or closing the page now would lose edits still on their way to the server: the browser asks.
  const onBeforeUnload = (event: BeforeUnloadEvent) => {
    if (!annotation?.controller.hasUnsentWork) return;
    event.preventDefault();
    event.returnValue = ""; // older browsers ask only when this is set
  };
  window.addEventListener("beforeunload", onBeforeUnload);

  const cellsByView = new Map<ViewportId, HTMLElement>();
  for (const id of ALL_VIEWS) cellsByView.set(id, cells[id].parentElement!);
  let closed = false;

  async function startAnnotation(): Promise<void> {
    const controller = new AnnotationController(viewer, series, {
      message: (text, level) => annotation?.panel.show(text, level),
      connection(text, state) {
        connection.textContent = text;
        connection.dataset.state = state;
      },
      latency(timing) {
        const total = Math.round(timing.drawn - timing.sent);
        latency.textContent = `Last prompt ${total} ms (AI ${Math.round(timing.engine * 1000)} ms)`;
      },
      model(ready) {
        annotation?.panel.setModel(`Model: ${ready.model.name} ${ready.model.version} · ${ready.model.device} · licence ${ready.model.license}`);
      },
      versions: (versions) => annotation?.panel.renderVersions(versions),
    });
    const tools = new EditingTools(viewer, controller, cellsByView, {
      changed: () => annotation?.panel.renderTools(),
      refused: (message) => annotation?.panel.show(message, "error"),
    });
    const panelView = new AnnotationPanel(panel, controller, tools);
    annotation = { controller, tools, panel: panelView };
    await controller.start();
    if (closed) return;
    await panelView.offerStoredSegs(series);
  }

  // A page left while loading stops there: what it would do next (flags, hooks) belongs to the next page.
  const ready = viewer.open(study, series, metadata).then(
    () => {
      if (closed) return;
      highlightPreset();
      document.body.dataset.viewerReady = "true";
      const annotationReady = startAnnotation().then(
        () => {
          if (!closed) document.body.dataset.annotationReady = "true";
        },
        (error: unknown) => {
          if (closed) return;
          console.error(error);
          annotation?.panel.show(`The segmentation could not be loaded: ${(error as Error).message}`, "error");
          document.body.dataset.annotationReady = "error";
          throw error;
        },
      );
      annotationReady.catch(() => undefined);
      window.annovoxViewer!.annotation = annotationHook(annotationReady);
    },
    (error: unknown) => {
      if (closed) return;
      console.error(error);
      progressLabel.textContent = `Could not open the series: ${(error as Error).message}`;
      progressLabel.classList.add("error");
      document.body.dataset.viewerReady = "error";
      throw error;
    },
  );
  ready.catch(() => undefined);

  window.annovoxViewer = {
    ready,
    viewportIds: ALL_VIEWS,
    volumeShape: () => viewer.volumeShape(),
    voxelToClient: (id, index) => viewer.voxelToClient(id, index),
    clientToVoxel: (id, client) => viewer.clientToVoxel(id, client),
    showVoxel: (index) => viewer.showVoxel(index),
    currentSlice: (id) => viewer.currentSlice(id),
    voxelValue: (index) => viewer.voxelValue(index),
    orientationMarkers: (id) => viewer.markers(id),
    setPreset: (id) => choosePreset(id),
    voiRange: (id) => viewer.voiRange(id),
    loadTimes: () => ({ ...viewer.times }),
    renderCount: (id) => viewer.renders[id],
  };

  function annotationHook(annotationReady: Promise<void>): AnnotationHook {
    const state = () => {
      if (!annotation) throw new Error("the annotation tools are not ready");
      return annotation;
    };
    return {
      ready: annotationReady,
      segments: () =>
        state().controller.doc.segments.map(({ number, label, color, visible, locked }) => ({
          number,
          label,
          color,
          visible,
          locked,
        })),
      activeSegment: () => state().controller.doc.active,
      tool: () => state().tools.tool,
      positive: () => state().tools.positive,
      segmentMask(segment) {
        const doc = state().controller.doc;
        if (!doc.labelmap.boundingBox(segment)) return null;
        const { region, mask } = doc.maskOf(segment);
        const bits = packBits(mask);
        let text = "";
        for (let n = 0; n < bits.length; n += 0x8000) text += String.fromCharCode(...bits.subarray(n, n + 0x8000));
        return { start: region.start, stop: region.stop, bits: btoa(text) };
      },
      voxelCount: (segment) => state().controller.doc.labelmap.voxelCount(segment),
      async labelmapDigest() {
        const array = state().controller.doc.labelmap.toNpy();
        const data = new Uint8Array(array.data.buffer, array.data.byteOffset, array.data.byteLength);
        const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
        const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
        return `${array.dtype}:${array.shape.join("x")}:${hex}`;
      },
      idle: () => state().controller.drain(),
      lastPromptTiming: () => state().controller.lastTiming,
      canUndo: () => state().controller.doc.canUndo,
      canRedo: () => state().controller.doc.canRedo,
      unsaved: () => state().controller.doc.unsaved,
      versions: () => state().controller.versions.map((v) => v.number),
      segmentationId: () => state().controller.segmentation?.id ?? null,
      connectionStatus: () => state().controller.connection.status,
      connectionHistory: () => [...state().controller.statusHistory],
      masksVisible: () => state().controller.display.allVisible,
      surfaces: () => state().controller.display.surfaces.surfaces(),
    };
  }

  return {
    panel,
    connection,
    latency,
    close() {
      closed = true;
      if (annotation) {
        annotation.tools.destroy();
        void annotation.controller.close();
      }
      delete document.body.dataset.annotationReady;
      document.removeEventListener("keydown", onKey);
      window.removeEventListener("beforeunload", onBeforeUnload);
      delete window.annovoxViewer;
      delete document.body.dataset.viewerReady;
      viewer.destroy();
    },
  };
}
