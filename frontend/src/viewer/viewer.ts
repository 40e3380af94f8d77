// The image viewer: one series as a Cornerstone3D streaming volume in axial, sagittal and coronal views and a
// 3D view. Images come from our DICOMweb server: metadata once from WADO-RS, then one `wadors:` frame request
// per slice, decoded by the dicom-image-loader's web workers.

import {
  Enums,
  RenderingEngine,
  cache,
  eventTarget,
  getWebWorkerManager,
  imageLoadPoolManager,
  init as initCore,
  setVolumesForViewports,
  utilities as csUtils,
  volumeLoader,
  type Types,
} from "@cornerstonejs/core";
import { init as initLoader, wadors } from "@cornerstonejs/dicom-image-loader";
import {
  CrosshairsTool,
  Enums as ToolEnums,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  TrackballRotateTool,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init as initTools,
} from "@cornerstonejs/tools";

import { personName } from "../format";
import { DECODE_WORKERS, takeDecodeWorker } from "./decode-workers";
import { Tag, frameUrl, number, text } from "./dicomweb";
import {
  type DicomJson,
  type Geometry,
  type Markers,
  type Vec3,
  type VoxelIndex,
  geometryDifference,
  geometryFromInstances,
  viewportMarkers,
  volumeShape,
  voxelToWorld,
  worldToContinuousVoxel,
  worldToVoxel,
} from "./geometry";
import { CT_PRESETS, type VoiRange, automaticRange, initialPreset, presetRange } from "./presets";

export type ViewportId = "axial" | "sagittal" | "coronal" | "3d";
export const SLICE_VIEWS: ViewportId[] = ["axial", "sagittal", "coronal"];
export const ALL_VIEWS: ViewportId[] = [...SLICE_VIEWS, "3d"];
const ORIENTATION: Record<Exclude<ViewportId, "3d">, Enums.OrientationAxis> = {
  axial: Enums.OrientationAxis.AXIAL,
  sagittal: Enums.OrientationAxis.SAGITTAL,
  coronal: Enums.OrientationAxis.CORONAL,
};
const ENGINE_ID = "annovox-engine";
// Frame loads (fetch + decode) in flight once the shown slice is in, instead of Cornerstone's 1000: the
// responses then do not queue up waiting for the main thread, and the frames still stream back to back.
const FRAMES_IN_FLIGHT = 12;
const MPR_TOOLS = "annovox-mpr";
const VOLUME_TOOLS = "annovox-3d";

export interface LoadTimes {
  /** Milliseconds since navigation start (performance.now()); null until it happened. */
  metadata: number | null;
  firstImage: number | null;
  fullVolume: number | null;
}

export interface ViewerCallbacks {
  /** The metadata is in and the views are set up; `title` names the series. */
  opened(title: string): void;
  progress(loaded: number, total: number): void;
  markers(viewportId: ViewportId, markers: Markers): void;
  /** The image volume was shown or hidden in the 3D view. */
  volumeIn3d?(visible: boolean): void;
}

let initialised: Promise<void> | null = null;

/** Cornerstone, its tools and the DICOM loader, once per page. */
function initCornerstone(): Promise<void> {
  initialised ??= (async () => {
    // One WebGL context for all views ("tiled"): Cornerstone's default gives each view its own context, and so
    // its own copy of the volume's texture, uploaded and updated per view (four times the work and memory).
    initCore({ rendering: { renderingEngineMode: Enums.RenderingEngineModeEnum.Tiled } } as never);
    // The decode workers the main bundle started (decode-workers.ts); registered first, they are the loader's.
    getWebWorkerManager().registerWorker("dicomImageLoader", takeDecodeWorker, { maxWorkerInstances: DECODE_WORKERS });
    initLoader({ maxWebWorkers: DECODE_WORKERS });
    initTools();
    for (const tool of [CrosshairsTool, PanTool, StackScrollTool, TrackballRotateTool, WindowLevelTool, ZoomTool]) {
      addTool(tool);
    }
  })();
  return initialised;
}

interface SeriesInfo {
  modality: string;
  title: string;
  imageIds: string[];
  geometry: Geometry;
}

/** WADO-RS metadata of a series -> `wadors:` image ids in k order (registered with the loader) and our grid. */
async function loadSeries(study: string, series: string, metadata: Promise<DicomJson[]>): Promise<SeriesInfo> {
  const instances = await metadata;
  const images = instances.filter((instance) => instance["7FE00010"] !== undefined);
  if (images.some((instance) => number(instance, Tag.NumberOfFrames) > 1)) {
    throw new Error("multi-frame series are not supported by the viewer yet");
  }
  const { geometry, sorted } = geometryFromInstances(images);
  const imageIds = sorted.map((instance: DicomJson) => {
    const imageId = `wadors:${frameUrl(study, series, text(instance, Tag.SOPInstanceUID))}`;
    // The loader reads pixel module, plane and VOI attributes of each frame from here.
    wadors.metaDataManager.add(imageId, instance as never);
    return imageId;
  });
  const first = images[0];
  const title = [
    personName(text(first, Tag.PatientName)),
    text(first, Tag.Modality),
    text(first, Tag.SeriesNumber) && `#${text(first, Tag.SeriesNumber)}`,
    text(first, Tag.SeriesDescription),
  ].filter(Boolean);
  return { modality: text(first, Tag.Modality), title: title.join(" · "), imageIds, geometry };
}

function vec3(value: ArrayLike<number>): Vec3 {
  return [value[0], value[1], value[2]];
}

let volumesOpened = 0;

/** A named point of a load in the page's performance timeline (`annovox:NAME`), read by bench/viewer.py. */
function stage(name: string): void {
  performance.mark(`annovox:${name}`);
}

/** What a viewer's open() rejects with once the viewer was destroyed (its page left) while it was loading. */
export class ViewerClosedError extends Error {
  constructor() {
    super("the viewer was closed while it was loading");
    this.name = "ViewerClosedError";
  }
}

export class Viewer {
  readonly times: LoadTimes = { metadata: null, firstImage: null, fullVolume: null };
  /** IMAGE_RENDERED events per view, so that tests can wait for a change to be drawn. */
  readonly renders: Record<ViewportId, number> = { axial: 0, sagittal: 0, coronal: 0, "3d": 0 };
  geometry: Geometry | null = null;
  modality = "";
  private engine: RenderingEngine | null = null;
  private volume: Types.IImageVolume | null = null;
  volumeId = "";
  private elements = new Map<ViewportId, HTMLDivElement>();
  private preset: string = "auto";
  private volumeIn3d: "auto" | "on" | "off" = "auto";
  private crosshairsOnLeft = true;
  /** The actors setSurfaces put into the 3D view. */
  private readonly surfaceUids = new Set<string>();
  private autoRange: VoiRange | null = null;
  private listeners: [EventTarget, string, EventListener][] = [];
  private resizeObserver: ResizeObserver | null = null;
  private destroyed = false;
  private signalDestroyed: () => void = () => undefined;
  /** Rejects when destroy() is called: a page left while loading must not go on and touch the next one's
   * rendering engine, tool groups, cache or views (they share Cornerstone's global state). */
  private readonly whenDestroyed = new Promise<never>((_, reject) => {
    this.signalDestroyed = () => reject(new ViewerClosedError());
  });

  constructor(
    elements: Record<ViewportId, HTMLDivElement>,
    private readonly callbacks: ViewerCallbacks,
  ) {
    for (const id of ALL_VIEWS) this.elements.set(id, elements[id]);
    this.whenDestroyed.catch(() => undefined);
  }

  /** ``work``, unless the viewer is destroyed first (then ViewerClosedError). */
  private async unlessDestroyed<T>(work: Promise<T>): Promise<T> {
    const result = await Promise.race([work, this.whenDestroyed]);
    if (this.destroyed) throw new ViewerClosedError();
    return result;
  }

  /**
   * Loads the series and resolves once every frame is loaded and every view has rendered it; `metadata` is
   * its WADO-RS metadata (`seriesMetadata`).
   */
  async open(study: string, series: string, metadata: Promise<DicomJson[]>): Promise<void> {
    await this.unlessDestroyed(initCornerstone());
    const info = await this.unlessDestroyed(loadSeries(study, series, metadata));
    stage("metadata-parsed");
    this.times.metadata = performance.now();
    this.modality = info.modality;
    this.geometry = info.geometry;

    // Its own id: a viewer of the same series left while loading may still be releasing its volume.
    const volumeId = `cornerstoneStreamingImageVolume:${series}:${++volumesOpened}`;
    this.volumeId = volumeId;
    const creating = volumeLoader.createAndCacheVolume(volumeId, { imageIds: info.imageIds });
    creating.then(() => this.destroyed && cache.removeVolumeLoadObject(volumeId)).catch(() => undefined);
    const volume = await this.unlessDestroyed(creating);
    this.volume = volume;
    this.checkGeometry(volume);
    stage("volume-allocated");

    // The frames are requested now, while the views are set up: the slice the axial view will show (the
    // middle one: its camera starts at the volume's centre) first and alone, so that its response and its
    // decoding wait for no other frame's; then the others in k order, FRAMES_IN_FLIGHT at a time.
    const shownK = Math.round((info.geometry.dimensions[2] - 1) / 2);
    csUtils.imageRetrieveMetadataProvider.add(volumeId, {
      stages: [
        { id: "shown", positions: [shownK], priority: -10, requestType: Enums.RequestType.Interaction },
        { id: "all", decimate: 1, offset: 0, priority: -5, requestType: Enums.RequestType.Interaction },
      ],
    });
    imageLoadPoolManager.setMaxSimultaneousRequests(Enums.RequestType.Interaction, 1);
    let viewsSet: () => void = () => undefined;
    const views = new Promise<void>((resolve) => (viewsSet = resolve));
    const loaded = this.watchLoading(volume, volumeId, shownK, views);
    (volume as Types.IStreamingImageVolume).load();

    const sizes = this.elementSizes();
    const engine = new RenderingEngine(ENGINE_ID);
    this.engine = engine;
    engine.setViewports(
      ALL_VIEWS.map((id) => ({
        viewportId: id,
        element: this.elements.get(id)!,
        type: id === "3d" ? Enums.ViewportType.VOLUME_3D : Enums.ViewportType.ORTHOGRAPHIC,
        defaultOptions: {
          orientation: id === "3d" ? Enums.OrientationAxis.CORONAL : ORIENTATION[id],
          background: [0, 0, 0] as Types.Point3,
        },
      })),
    );
    this.setUpTools();
    for (const id of ALL_VIEWS) {
      this.listen(this.elements.get(id)!, Enums.Events.CAMERA_MODIFIED, () => this.updateMarkers(id));
      this.listen(this.elements.get(id)!, Enums.Events.IMAGE_RENDERED, () => this.renders[id]++);
    }

    await this.unlessDestroyed(setVolumesForViewports(engine, [{ volumeId }], SLICE_VIEWS));
    stage("volume-in-views");
    const initial = initialPreset(this.modality);
    this.setPreset(initial === "auto" ? "auto" : initial.id, false);
    for (const id of ALL_VIEWS) this.updateMarkers(id);
    this.callbacks.opened(info.title);
    viewsSet();
    this.resizeObserver = this.observeSizes(sizes);
    await this.unlessDestroyed(loaded);
  }

  private elementSizes(): Map<Element, string> {
    const sizes = new Map<Element, string>();
    for (const element of this.elements.values()) sizes.set(element, `${element.clientWidth}x${element.clientHeight}`);
    return sizes;
  }

  /**
   * Resizes the views when their elements differ from `sizes`, the sizes the views were made with. A
   * ResizeObserver also reports each element once when it starts observing; unless a size changed meanwhile,
   * that report is skipped: it would redraw every view (with software WebGL a few hundred ms) just while the
   * first frames come in.
   */
  private observeSizes(sizes: Map<Element, string>): ResizeObserver {
    const observer = new ResizeObserver(() => {
      const now = this.elementSizes();
      const changed = [...now].some(([element, size]) => sizes.get(element) !== size);
      sizes = now;
      if (changed) this.engine?.resize(true, true);
    });
    for (const element of this.elements.values()) observer.observe(element);
    return observer;
  }

  /** Our grid from the metadata must be Cornerstone's: masks and prompts travel in our indices. */
  private checkGeometry(volume: Types.IImageVolume): void {
    const theirs: Geometry = {
      dimensions: vec3(volume.dimensions),
      spacing: vec3(volume.spacing),
      origin: vec3(volume.origin),
      direction: Array.from(volume.direction),
    };
    const difference = geometryDifference(this.geometry!, theirs);
    if (!(difference < 1e-3)) {
      console.error("grid mismatch", this.geometry, theirs);
      throw new Error(`Cornerstone's volume grid differs from the series' grid (by ${difference})`);
    }
  }

  /** Follows the volume's loading: draws the shown slice once it is in and the views are set (`views`),
   * reports progress, and resolves once the whole volume is drawn in every view. `requestedK`: the frame
   * requested first, alone. */
  private watchLoading(
    volume: Types.IImageVolume,
    volumeId: string,
    requestedK: number,
    views: Promise<void>,
  ): Promise<void> {
    const total = volume.imageIds.length;
    const cachedFrames = (volume as unknown as { cachedFrames: number[] }).cachedFrames;
    // Cornerstone redraws every view of a streaming volume after each 2 % of its frames; with a software
    // renderer those redraws take the main thread from the frames still arriving. We draw the shown slice as
    // soon as it is in, then the slice views at most once a second until the volume is complete.
    (volume as unknown as { autoRenderOnLoad: boolean }).autoRenderOnLoad = false;
    let viewsReady = false;
    let allRequested = false;
    let redraw = 0;
    const drawFirstImage = () => {
      if (!viewsReady || this.times.firstImage !== null || !cachedFrames[this.currentSlice("axial")]) return;
      stage("shown-slice-loaded");
      this.times.firstImage = -1; // pending: stamped when the axial view has drawn it
      this.afterRender(["axial"]).then(() => {
        this.times.firstImage = performance.now();
        this.addCrosshairs();
      });
    };
    views.then(() => {
      viewsReady = true;
      drawFirstImage();
    });
    return new Promise((resolve) => {
      const onModified = ((event: CustomEvent) => {
        if (event.detail.volumeId !== volumeId) return;
        this.callbacks.progress(event.detail.framesProcessed, total);
        if (!allRequested && cachedFrames[requestedK]) {
          allRequested = true;
          imageLoadPoolManager.setMaxSimultaneousRequests(Enums.RequestType.Interaction, FRAMES_IN_FLIGHT);
        }
        if (this.times.firstImage === null) {
          drawFirstImage();
        } else if (!redraw) {
          redraw = window.setTimeout(() => {
            redraw = 0;
            if (!volume.loadStatus?.loaded) this.engine?.renderViewports(SLICE_VIEWS);
          }, 1000);
        }
      }) as EventListener;
      const onCompleted = ((event: CustomEvent) => {
        if (event.detail.volumeId !== volumeId) return;
        window.clearTimeout(redraw);
        this.callbacks.progress(total, total);
        views
          .then(() => {
            if (this.preset === "auto") this.setPreset("auto", false);
            return this.show3d(volumeId);
          })
          .then(() => this.afterRender(ALL_VIEWS))
          .then(() => {
            this.times.fullVolume = performance.now();
            if (this.times.firstImage === null || this.times.firstImage < 0) {
              this.times.firstImage = this.times.fullVolume;
            }
            this.addCrosshairs();
            resolve();
          });
      }) as EventListener;
      this.listen(eventTarget, Enums.Events.IMAGE_VOLUME_MODIFIED, onModified);
      this.listen(eventTarget, Enums.Events.IMAGE_VOLUME_LOADING_COMPLETED, onCompleted);
    });
  }

  /**
   * The 3D view gets the volume only once it is complete: every streaming update re-renders each view that
   * shows the volume, and ray casting the whole volume costs far more than a slice (seconds per frame with a
   * software renderer), which would hold up the slices still arriving.
   */
  private async show3d(volumeId: string): Promise<void> {
    const engine = this.engine!;
    await setVolumesForViewports(engine, [{ volumeId }], ["3d"]);
    const volume3d = engine.getViewport("3d") as Types.IVolumeViewport;
    volume3d.setProperties({ preset: this.modality === "CT" ? "CT-Bone" : "MR-Default" });
    this.updateMarkers("3d");
  }

  /** Renders `ids` and resolves when each has reported IMAGE_RENDERED. */
  private afterRender(ids: ViewportId[]): Promise<void> {
    const done = ids.map(
      (id) =>
        new Promise<void>((resolve) =>
          this.elements.get(id)!.addEventListener(Enums.Events.IMAGE_RENDERED, () => resolve(), { once: true }),
        ),
    );
    this.engine?.renderViewports(ids);
    return Promise.all(done).then(() => undefined);
  }

  private setUpTools(): void {
    const { MouseBindings, KeyboardBindings } = ToolEnums;
    ToolGroupManager.destroyToolGroup(MPR_TOOLS);
    ToolGroupManager.destroyToolGroup(VOLUME_TOOLS);
    const mpr = ToolGroupManager.createToolGroup(MPR_TOOLS)!;
    for (const tool of [PanTool, StackScrollTool, WindowLevelTool, ZoomTool]) mpr.addTool(tool.toolName);
    // Left: crosshairs (added once the first image is drawn: addCrosshairs; the editing tools take left in
    // their modes); Shift+left: window/level; middle: pan; right: zoom; wheel: slices.
    mpr.setToolActive(WindowLevelTool.toolName, {
      bindings: [{ mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Shift }],
    });
    mpr.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    mpr.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    mpr.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
    for (const id of SLICE_VIEWS) mpr.addViewport(id, ENGINE_ID);

    const volume = ToolGroupManager.createToolGroup(VOLUME_TOOLS)!;
    for (const tool of [TrackballRotateTool, PanTool, ZoomTool]) volume.addTool(tool.toolName);
    volume.setToolActive(TrackballRotateTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    volume.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    volume.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
    volume.addViewport("3d", ENGINE_ID);
  }

  private listen(target: EventTarget, type: string, listener: EventListener): void {
    target.addEventListener(type, listener);
    this.listeners.push([target, type, listener]);
  }

  viewport(id: ViewportId): Types.IVolumeViewport {
    const viewport = this.engine?.getViewport(id);
    if (!viewport) throw new Error(`no viewport ${id}`);
    return viewport as Types.IVolumeViewport;
  }

  /** The k of the slice a view shows (the plane through its focal point), rounded and clamped. */
  currentSlice(id: ViewportId): number {
    const k = worldToContinuousVoxel(this.geometry!, vec3(this.viewport(id).getCamera().focalPoint!))[0];
    return Math.min(this.geometry!.dimensions[2] - 1, Math.max(0, Math.round(k)));
  }

  private updateMarkers(id: ViewportId): void {
    this.callbacks.markers(id, this.markers(id));
  }

  markers(id: ViewportId): Markers {
    const camera = this.viewport(id).getCamera();
    return viewportMarkers(vec3(camera.viewUp!), vec3(camera.viewPlaneNormal!));
  }

  // --- Screen <-> voxel --------------------------------------------------------------------------------------

  /** Client (CSS viewport) coordinates of the centre of voxel [k, j, i] in a view, as `MouseEvent.clientX/Y`. */
  voxelToClient(id: ViewportId, index: VoxelIndex): { x: number; y: number } {
    const viewport = this.viewport(id);
    const [x, y] = viewport.worldToCanvas(voxelToWorld(this.geometry!, index) as Types.Point3);
    const rect = viewport.canvas.getBoundingClientRect();
    return { x: rect.left + x, y: rect.top + y };
  }

  /** The voxel under client coordinates in a slice view (on its current plane), or null outside the volume. */
  clientToVoxel(id: ViewportId, client: { x: number; y: number }): VoxelIndex | null {
    const viewport = this.viewport(id);
    const rect = viewport.canvas.getBoundingClientRect();
    const world = viewport.canvasToWorld([client.x - rect.left, client.y - rect.top]);
    return worldToVoxel(this.geometry!, vec3(world));
  }

  /** Continuous [k, j, i] under client coordinates on a slice view's current plane (may lie outside). */
  clientToContinuousVoxel(id: ViewportId, client: { x: number; y: number }): Vec3 {
    const viewport = this.viewport(id);
    const rect = viewport.canvas.getBoundingClientRect();
    const world = viewport.canvasToWorld([client.x - rect.left, client.y - rect.top]);
    return worldToContinuousVoxel(this.geometry!, vec3(world));
  }

  /** The unit normal of a view's plane (LPS). */
  viewPlaneNormal(id: ViewportId): Vec3 {
    return vec3(this.viewport(id).getCamera().viewPlaneNormal!);
  }

  /** Canvas pixels per millimetre in a view (its zoom), for drawing brush outlines. */
  pixelsPerMm(id: ViewportId): number {
    const viewport = this.viewport(id);
    const a = viewport.worldToCanvas([0, 0, 0]);
    const camera = viewport.getCamera();
    const up = vec3(camera.viewUp!);
    const b = viewport.worldToCanvas(up as Types.Point3);
    return Math.hypot(b[0] - a[0], b[1] - a[1]);
  }

  /** The loaded image values, C order [k, j, i] (Cornerstone keeps them in that layout). */
  imageValues(): ArrayLike<number> {
    const values = this.volume?.voxelManager?.getCompleteScalarDataArray?.();
    if (!values) throw new Error("the volume is not loaded");
    return values;
  }

  /** Puts each actor into the 3D view under its uid (replacing the one there; null takes it out), then redraws
   * the 3D view. */
  setSurfaces(changes: Map<string, Types.Actor | null>): void {
    const viewport = this.engine?.getViewport("3d");
    if (!viewport) return;
    for (const [uid, actor] of changes) {
      if (this.surfaceUids.delete(uid)) viewport.removeActors([uid]);
      if (actor) {
        viewport.addActor({ uid, actor });
        this.surfaceUids.add(uid);
      }
    }
    this.applyVolumeIn3d();
    viewport.render();
  }

  /** The 3D view's button: the image volume on or off there, whatever the surfaces. */
  toggleVolumeIn3d(): void {
    this.volumeIn3d = this.volumeShownIn3d() ? "off" : "on";
    this.applyVolumeIn3d();
    this.engine?.getViewport("3d")?.render();
  }

  /**
   * Whether the 3D view shows the image volume: until the annotator chooses, only while no segment surface is
   * there (ray-cast tissue would hide the surfaces inside it).
   */
  volumeShownIn3d(): boolean {
    return this.volumeIn3d === "on" || (this.volumeIn3d === "auto" && this.surfaceUids.size === 0);
  }

  private applyVolumeIn3d(): void {
    const visible = this.volumeShownIn3d();
    for (const entry of this.engine?.getViewport("3d")?.getActors() ?? []) {
      if (this.surfaceUids.has(entry.uid)) continue;
      (entry.actor as unknown as { setVisibility(visible: boolean): void }).setVisibility(visible);
    }
    this.callbacks.volumeIn3d?.(visible);
  }

  volumeMetadata(): unknown {
    return this.volume?.metadata;
  }

  /**
   * The crosshairs join the slice views after the first image is drawn: placing them reads every view's camera
   * and the metadata of every slice, and drawing them costs another pass, which with software WebGL held the
   * first image up by over 100 ms.
   */
  private addCrosshairs(): void {
    const group = ToolGroupManager.getToolGroup(MPR_TOOLS);
    if (!group || this.destroyed || group.hasTool(CrosshairsTool.toolName)) return;
    group.addTool(CrosshairsTool.toolName);
    this.setCrosshairsOnLeft(this.crosshairsOnLeft);
  }

  /**
   * Editing tools own the left button: crosshairs then stay on screen but do not take left drags
   * (Shift + left drag still sets window/level).
   */
  setCrosshairsOnLeft(active: boolean): void {
    this.crosshairsOnLeft = active;
    const group = ToolGroupManager.getToolGroup(MPR_TOOLS);
    if (!group?.hasTool(CrosshairsTool.toolName)) return;
    if (active) {
      group.setToolActive(CrosshairsTool.toolName, { bindings: [{ mouseButton: ToolEnums.MouseBindings.Primary }] });
    } else {
      group.setToolPassive(CrosshairsTool.toolName);
    }
  }

  /** performance.now() of the view's next IMAGE_RENDERED (or after a second, if nothing needed drawing). */
  nextRender(id: ViewportId): Promise<number> {
    return new Promise((resolve) => {
      const element = this.elements.get(id)!;
      const done = () => {
        window.clearTimeout(timer);
        element.removeEventListener(Enums.Events.IMAGE_RENDERED, done);
        resolve(performance.now());
      };
      const timer = window.setTimeout(done, 1000);
      element.addEventListener(Enums.Events.IMAGE_RENDERED, done);
    });
  }

  render(ids: ViewportId[] = SLICE_VIEWS): void {
    this.engine?.renderViewports(ids);
  }

  /** Moves each slice view's plane through voxel [k, j, i], keeping zoom and pan. */
  showVoxel(index: VoxelIndex): void {
    const target = voxelToWorld(this.geometry!, index);
    for (const id of SLICE_VIEWS) {
      const viewport = this.viewport(id);
      const camera = viewport.getCamera();
      const normal = vec3(camera.viewPlaneNormal!);
      const focal = vec3(camera.focalPoint!);
      const along = normal.reduce((sum, n, c) => sum + n * (target[c] - focal[c]), 0);
      const shift = (p: Types.Point3): Types.Point3 => [
        p[0] + along * normal[0],
        p[1] + along * normal[1],
        p[2] + along * normal[2],
      ];
      viewport.setCamera({ focalPoint: shift(camera.focalPoint!), position: shift(camera.position!) });
    }
    this.engine?.renderViewports(SLICE_VIEWS);
  }

  /** The loaded value of voxel [k, j, i] (HU for CT), read through Cornerstone's own index of its position. */
  voxelValue(index: VoxelIndex): number {
    const volume = this.volume!;
    const world = voxelToWorld(this.geometry!, index) as Types.Point3;
    const [i, j, k] = csUtils.transformWorldToIndex(volume.imageData!, world);
    return Number(volume.voxelManager!.getAtIJK(i, j, k));
  }

  // --- Window/level -----------------------------------------------------------------------------------------

  /** A CT preset by id, or "auto" (percentiles of the loaded volume); the 3D view keeps its own preset. */
  setPreset(id: string, render = true): void {
    const preset = CT_PRESETS.find((p) => p.id === id);
    let range: VoiRange;
    if (preset) {
      range = presetRange(preset);
    } else {
      const values = this.volume?.voxelManager?.getCompleteScalarDataArray?.();
      this.autoRange = values ? automaticRange(values) : this.autoRange;
      if (!this.autoRange) return;
      range = this.autoRange;
    }
    this.preset = preset ? preset.id : "auto";
    for (const view of SLICE_VIEWS) this.viewport(view).setProperties({ voiRange: range });
    if (render) this.engine?.renderViewports(SLICE_VIEWS);
  }

  get currentPreset(): string {
    return this.preset;
  }

  voiRange(id: ViewportId): VoiRange {
    const range = this.viewport(id).getProperties()?.voiRange;
    return { lower: range?.lower ?? NaN, upper: range?.upper ?? NaN };
  }

  /** Back to the initial cameras and window. */
  reset(): void {
    for (const id of ALL_VIEWS) this.viewport(id).resetCamera();
    const initial = initialPreset(this.modality);
    this.setPreset(initial === "auto" ? "auto" : initial.id, false);
    this.engine?.render();
  }

  volumeShape(): VoxelIndex {
    return volumeShape(this.geometry!);
  }

  destroy(): void {
    this.destroyed = true;
    this.signalDestroyed();
    // Its frames still queued would load into a purged volume, ahead of the next page's.
    imageLoadPoolManager.clearRequestStack(Enums.RequestType.Interaction);
    this.resizeObserver?.disconnect();
    for (const [target, type, listener] of this.listeners) target.removeEventListener(type, listener);
    this.listeners = [];
    ToolGroupManager.destroyToolGroup(MPR_TOOLS);
    ToolGroupManager.destroyToolGroup(VOLUME_TOOLS);
    this.engine?.destroy();
    this.engine = null;
    cache.purgeCache();
    this.volume = null;
  }
}
