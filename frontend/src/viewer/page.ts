// The viewer page (#/series/{study}/{series}): four views, a side panel and a status bar around a Viewer, the
// keys, and the test hook `window.annovoxViewer` (documented in docs/viewer.md).

import { el } from "../format";
import type { Markers, VoxelIndex } from "./geometry";
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
}

declare global {
  interface Window {
    annovoxViewer?: ViewerHook;
  }
}

const KEYS: [string, string][] = [
  ...CT_PRESETS.map((p): [string, string] => [p.key, `${p.label} window (W ${p.width} / L ${p.center})`]),
  [AUTO_KEY, "Automatic window (from the image values)"],
  ["R", "Reset the views and the window"],
  ["?", "Show or hide this help"],
  ["Left drag", "Crosshairs: move all three planes"],
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

export function openViewer(root: HTMLElement, study: string, series: string): ViewerPage {
  delete document.body.dataset.viewerReady;
  const cells = {} as Record<ViewportId, HTMLDivElement>;
  const markerNodes = {} as Record<ViewportId, Record<keyof Markers, HTMLElement>>;
  const grid = el("div", undefined, "viewer-grid");
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
  resetButton.title = "Reset views (R)";
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
  panel.append(el("p", "Segments and tools appear here.", "muted"));

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
  const onKey = (event: KeyboardEvent): void => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) return;
    const preset = CT_PRESETS.find((p) => p.key === event.key);
    if (preset) choosePreset(preset.id);
    else if (event.key === AUTO_KEY) choosePreset("auto");
    else if (event.key === "r" || event.key === "R") resetButton.click();
    else if (event.key === "?") toggleHelp();
    else if (event.key === "Escape") toggleHelp(false);
    else return;
    event.preventDefault();
  };
  document.addEventListener("keydown", onKey);

  const ready = viewer.open(study, series).then(
    () => {
      highlightPreset();
      document.body.dataset.viewerReady = "true";
    },
    (error: unknown) => {
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

  return {
    panel,
    connection,
    latency,
    close() {
      document.removeEventListener("keydown", onKey);
      delete window.annovoxViewer;
      delete document.body.dataset.viewerReady;
      viewer.destroy();
    },
  };
}
