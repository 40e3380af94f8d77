// The viewer's side panel: segments (add, rename, colour, show/hide, lock, active), the tools, save and the
// version list, and the stored SEGs of the series that can be opened.

import { el } from "../format";
import {
  type SegInstance,
  type Version,
  getSegmentation,
  listSegInstances,
  openSegInstance,
} from "../segmentations/client";
import type { AnnotationController } from "./controller";
import { LABELS } from "./labels";
import { type EditingTools, TOOLS } from "./tools";

const LABEL_LIST_ID = "annovox-label-list";

function button(text: string, title: string, className = "button small"): HTMLButtonElement {
  const node = el("button", text, className) as HTMLButtonElement;
  node.type = "button";
  node.title = title;
  return node;
}

function when(iso: string): string {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export class AnnotationPanel {
  private readonly segmentList = el("ul", undefined, "segment-list");
  private readonly toolButtons = new Map<string, HTMLButtonElement>();
  private readonly polarity = button("", "Positive or negative prompts (T)");
  private readonly undoButton = button("Undo", "Undo (Ctrl+Z)");
  private readonly redoButton = button("Redo", "Redo (Ctrl+Shift+Z)");
  private readonly brushSize = el("input") as HTMLInputElement;
  private readonly brushLabel = el("span", "", "muted");
  private readonly saveButton = button("Save", "Save a new version (Ctrl+S)", "button");
  private readonly saveState = el("span", "", "muted");
  private readonly description = el("input") as HTMLInputElement;
  private readonly versionList = el("ol", undefined, "version-list");
  private readonly segs = el("div", undefined, "stored-segs");
  readonly message = el("p", "", "panel-message");
  private readonly model = el("p", "", "muted model-line");

  constructor(
    private readonly root: HTMLElement,
    private readonly controller: AnnotationController,
    private readonly tools: EditingTools,
  ) {
    const labelList = el("datalist");
    labelList.id = LABEL_LIST_ID;
    for (const choice of LABELS) {
      const option = el("option");
      option.value = choice.label;
      labelList.append(option);
    }

    const addForm = el("form", undefined, "segment-add");
    const addInput = el("input") as HTMLInputElement;
    addInput.placeholder = "New segment label";
    addInput.setAttribute("list", LABEL_LIST_ID);
    addInput.id = "segment-new-label";
    const addButton = button("Add", "Add a segment (M adds the next object)");
    addButton.type = "submit";
    addButton.id = "segment-add";
    addForm.append(addInput, addButton);
    addForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const label = addInput.value;
      addInput.value = "";
      void this.run(() => controller.addSegment(label));
    });

    const aiTools = el("div", undefined, "tool-row");
    const manualTools = el("div", undefined, "tool-row");
    for (const tool of TOOLS) {
      const node = button(tool.label, `${tool.help} (${tool.key})`);
      node.dataset.tool = tool.id;
      node.addEventListener("click", () => tools.choose(tool.id));
      this.toolButtons.set(tool.id, node);
      (tool.kind === "manual" ? manualTools : aiTools).append(node);
    }
    this.polarity.id = "tool-polarity";
    this.polarity.addEventListener("click", () => tools.togglePolarity());
    const reset = button("Reset object", "Forget the prompts of the active segment and empty it (R)");
    reset.addEventListener("click", () => void this.run(() => controller.resetObject()));
    const next = button("Next object", "Start the next object in a new segment (M)");
    next.addEventListener("click", () => void this.run(() => controller.nextObject()));
    aiTools.append(this.polarity, reset, next);

    this.brushSize.type = "range";
    this.brushSize.min = "1";
    this.brushSize.max = "30";
    this.brushSize.step = "0.5";
    this.brushSize.id = "brush-size";
    this.brushSize.title = "Brush radius ([ and ])";
    this.brushSize.addEventListener("input", () => tools.setBrushRadius(Number(this.brushSize.value)));
    const brushRow = el("label", "Brush ", "brush-row");
    brushRow.append(this.brushSize, this.brushLabel);

    this.undoButton.id = "undo";
    this.redoButton.id = "redo";
    this.undoButton.addEventListener("click", () => controller.undo());
    this.redoButton.addEventListener("click", () => controller.redo());
    const history = el("div", undefined, "tool-row");
    history.append(this.undoButton, this.redoButton);

    this.description.placeholder = "What changed (optional)";
    this.description.id = "save-description";
    this.saveButton.id = "save";
    this.saveButton.addEventListener("click", () => void this.save());
    const saveRow = el("div", undefined, "save-row");
    saveRow.append(this.description, this.saveButton, this.saveState);

    this.message.id = "panel-message";
    this.message.setAttribute("role", "status");
    this.segmentList.id = "segment-list";
    this.versionList.id = "version-list";
    this.segs.id = "stored-segs";

    root.replaceChildren(
      labelList,
      el("h3", "Segments"),
      this.segmentList,
      addForm,
      el("h3", "AI tools"),
      aiTools,
      el("h3", "Manual tools"),
      manualTools,
      brushRow,
      history,
      this.model,
      el("h3", "Save"),
      saveRow,
      this.message,
      el("h3", "Versions"),
      this.versionList,
      this.segs,
    );
    controller.doc.on({ segments: () => this.renderSegments(), history: () => this.renderHistory() });
    this.renderSegments();
    this.renderHistory();
    this.renderTools();
  }

  async run(work: () => Promise<unknown>): Promise<void> {
    try {
      await work();
    } catch (error) {
      this.show((error as Error).message, "error");
    }
  }

  show(text: string, level: "info" | "error"): void {
    this.message.textContent = text;
    this.message.classList.toggle("error", level === "error");
  }

  private async save(): Promise<void> {
    this.saveButton.disabled = true;
    this.saveState.textContent = "Saving…";
    try {
      const version = await this.controller.save(this.description.value);
      this.description.value = "";
      this.show(`Saved as version ${version.number}.`, "info");
    } catch (error) {
      this.show((error as Error).message, "error");
    } finally {
      this.saveButton.disabled = false;
      this.renderHistory();
    }
  }

  saveNow(): void {
    if (!this.saveButton.disabled) void this.save();
  }

  setModel(text: string): void {
    this.model.textContent = text;
  }

  renderTools(): void {
    for (const [id, node] of this.toolButtons) node.classList.toggle("active", id === this.tools.tool);
    this.polarity.textContent = this.tools.positive ? "+ Positive" : "− Negative";
    this.polarity.classList.toggle("negative", !this.tools.positive);
    this.brushSize.value = String(this.tools.brushRadiusMm);
    this.brushLabel.textContent = `${this.tools.brushRadiusMm} mm`;
  }

  private renderHistory(): void {
    const doc = this.controller.doc;
    this.undoButton.disabled = !doc.canUndo;
    this.redoButton.disabled = !doc.canRedo;
    if (this.saveState.textContent !== "Saving…" || !this.saveButton.disabled) {
      this.saveState.textContent = doc.unsaved ? "Unsaved changes" : "All saved";
    }
    this.saveState.dataset.unsaved = String(doc.unsaved);
  }

  private renderSegments(): void {
    const doc = this.controller.doc;
    const rows = doc.segments.map((segment) => {
      const row = el("li", undefined, "segment-row");
      row.dataset.segment = String(segment.number);
      row.classList.toggle("active", segment.number === doc.active);
      const colour = el("input") as HTMLInputElement;
      colour.type = "color";
      colour.value = segment.color;
      colour.title = "Colour";
      colour.addEventListener("change", () =>
        void this.run(() => this.controller.changeSegment(segment.number, { color: colour.value })),
      );
      const name = el("input", undefined, "segment-name") as HTMLInputElement;
      name.value = segment.label;
      name.setAttribute("list", LABEL_LIST_ID);
      name.title = "Label (pick one from the list or type your own)";
      name.addEventListener("change", () =>
        void this.run(() => this.controller.changeSegment(segment.number, { label: name.value })),
      );
      const visible = button(segment.visible ? "Hide" : "Show", "Show or hide this segment", "icon-button");
      visible.dataset.action = "visibility";
      visible.addEventListener("click", (event) => {
        event.stopPropagation();
        this.controller.setVisible(segment.number, !segment.visible);
      });
      const lock = button(segment.locked ? "Unlock" : "Lock", "Locked segments are never changed", "icon-button");
      lock.classList.toggle("on", segment.locked);
      lock.dataset.action = "lock";
      lock.addEventListener("click", (event) => {
        event.stopPropagation();
        this.controller.setLocked(segment.number, !segment.locked);
      });
      row.addEventListener("click", (event) => {
        if (event.target === name || event.target === colour) return;
        this.controller.activate(segment.number);
      });
      name.addEventListener("focus", () => {
        if (doc.active !== segment.number) this.controller.activate(segment.number);
      });
      row.append(colour, name, visible, lock);
      return row;
    });
    if (!rows.length) rows.push(el("li", "No segments yet: add one, or pick an AI tool and click.", "muted"));
    this.segmentList.replaceChildren(...rows);
  }

  renderVersions(versions: Version[]): void {
    const id = this.controller.segmentation?.id;
    const rows = versions.map((version) => {
      const row = el("li", undefined, "version-row");
      row.dataset.version = String(version.number);
      const who = version.created_by ? version.created_by.full_name || version.created_by.username : "—";
      const what = version.description || `${version.segments.length} segments`;
      row.append(el("strong", `v${version.number}`), el("span", ` ${who} · ${when(version.created)} · ${what}`));
      if (id !== undefined) {
        const seg = el("a", "SEG", "small-link") as HTMLAnchorElement;
        seg.href = `/api/segmentations/${id}/versions/${version.number}/seg/`;
        seg.title = "Download this version as DICOM SEG";
        const restore = button("Restore", "Make this version the newest again (a new version)");
        restore.addEventListener("click", () => void this.run(() => this.controller.restore(version.number)));
        row.append(" ", seg);
        if (version.number !== versions[0].number) row.append(" ", restore);
      }
      return row;
    });
    if (!rows.length) rows.push(el("li", "Not saved yet.", "muted"));
    this.versionList.replaceChildren(...rows);
  }

  /** Stored SEGs of the series that are not open yet: offered to be loaded. */
  async offerStoredSegs(series: string): Promise<SegInstance[]> {
    const instances = await listSegInstances(series);
    const current = this.controller.segmentation?.id;
    const offered = instances.filter((instance) => instance.segmentation !== current);
    const unique = new Map<string, SegInstance>();
    for (const instance of offered) unique.set(instance.sop_instance_uid, instance);
    if (!unique.size) {
      this.segs.replaceChildren();
      return [];
    }
    const list = el("ul", undefined, "seg-offers");
    for (const instance of unique.values()) {
      const row = el("li");
      row.dataset.sop = instance.sop_instance_uid;
      const label = instance.content_description || instance.content_label || instance.sop_instance_uid;
      const open = button("Open", "Load this segmentation");
      open.addEventListener("click", () =>
        void this.run(async () => {
          const segmentation =
            instance.segmentation !== null
              ? await getSegmentation(instance.segmentation)
              : await openSegInstance(series, instance.sop_instance_uid);
          await this.controller.openSegmentation(segmentation);
          await this.offerStoredSegs(series);
        }),
      );
      row.append(el("span", `${label} (${instance.segment_count} segments) `), open);
      list.append(row);
    }
    this.segs.replaceChildren(el("h3", "Stored segmentations of this series"), list);
    return [...unique.values()];
  }
}
