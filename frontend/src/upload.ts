// The upload area: pick files, a folder or a zip, or drop them; upload in batches with progress; show the
// result of every file.

import { ApiError, type ImportOutcome, type UploadFile, uploadBatch } from "./api";
import { filesFromDrop, filesFromInput, makeBatches } from "./files";
import { bytes, el, plural } from "./format";

// Below Django's default of 100 files per request, and small enough for a steady progress bar.
const BATCH_FILES = 50;
const BATCH_BYTES = 64 * 1024 * 1024;

export interface UploadElements {
  dropZone: HTMLElement;
  pickFiles: HTMLInputElement;
  pickFolder: HTMLInputElement;
  status: HTMLElement;
  progress: HTMLProgressElement;
  progressLabel: HTMLElement;
  message: HTMLElement;
  results: HTMLElement;
  summary: HTMLElement;
  onlyRejected: HTMLInputElement;
  table: HTMLTableElement;
}

export class Uploader {
  private busy = false;

  constructor(
    private readonly ui: UploadElements,
    private readonly onImported: () => void,
  ) {
    for (const input of [ui.pickFiles, ui.pickFolder]) {
      input.addEventListener("change", () => {
        const files = filesFromInput(input);
        input.value = ""; // choosing the same files again must fire "change" again
        void this.upload(files);
      });
    }
    ui.dropZone.addEventListener("dragenter", (event) => this.dragOver(event));
    ui.dropZone.addEventListener("dragover", (event) => this.dragOver(event));
    ui.dropZone.addEventListener("dragleave", (event) => {
      if (!ui.dropZone.contains(event.relatedTarget as Node | null)) ui.dropZone.classList.remove("dragging");
    });
    ui.dropZone.addEventListener("drop", (event) => {
      event.preventDefault();
      ui.dropZone.classList.remove("dragging");
      if (!event.dataTransfer) return;
      filesFromDrop(event.dataTransfer).then(
        (files) => this.upload(files),
        (error: Error) => this.say(`Could not read the dropped files: ${error.message}`, true),
      );
    });
    // A file dropped next to the zone would otherwise replace the page with the file.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => event.preventDefault());
    }
    ui.onlyRejected.addEventListener("change", () => {
      ui.table.classList.toggle("only-rejected", ui.onlyRejected.checked);
    });
  }

  private dragOver(event: DragEvent): void {
    event.preventDefault();
    if (event.dataTransfer) event.dataTransfer.dropEffect = this.busy ? "none" : "copy";
    this.ui.dropZone.classList.add("dragging");
  }

  private say(text: string, isError = false): void {
    this.ui.message.textContent = text;
    this.ui.message.classList.toggle("error", isError);
  }

  private setBusy(busy: boolean): void {
    this.busy = busy;
    this.ui.pickFiles.disabled = busy;
    this.ui.pickFolder.disabled = busy;
    this.ui.dropZone.classList.toggle("busy", busy);
    this.ui.status.hidden = !busy;
  }

  async upload(files: UploadFile[]): Promise<void> {
    if (this.busy) {
      this.say("An upload is still running: wait for it to finish.", true);
      return;
    }
    if (files.length === 0) {
      this.say("No files were found in what you chose.", true);
      return;
    }
    const { progress, progressLabel, summary, results } = this.ui;
    const body = this.ui.table.tBodies[0];
    const counts = { stored: 0, "already present": 0, rejected: 0 };
    const totalBytes = files.reduce((sum, item) => sum + item.file.size, 0) || 1;
    const batches = makeBatches(files, BATCH_FILES, BATCH_BYTES);
    let sentBytes = 0;
    let stopped = "";

    body.replaceChildren();
    results.hidden = true;
    progress.value = 0;
    this.setBusy(true);
    this.say(`Uploading ${plural(files.length, "file")} (${bytes(totalBytes)})…`);
    try {
      for (const [index, batch] of batches.entries()) {
        progressLabel.textContent = `Uploading batch ${index + 1} of ${batches.length}`;
        const batchBytes = batch.reduce((sum, item) => sum + item.file.size, 0);
        let outcomes: ImportOutcome[];
        if (stopped) {
          outcomes = batch.map((item) => failed(item, stopped));
        } else {
          try {
            const result = await uploadBatch(batch, (loaded) => {
              progress.value = Math.min(1, (sentBytes + loaded) / totalBytes);
            });
            outcomes = result.outcomes;
          } catch (error) {
            const reason = `not uploaded: ${(error as Error).message}`;
            if (error instanceof ApiError && error.signedOut) {
              stopped = "not uploaded: you are signed out";
              this.say("Your session has ended: sign in again and upload the rest.", true);
            }
            outcomes = batch.map((item) => failed(item, reason));
          }
        }
        sentBytes += batchBytes;
        progress.value = Math.min(1, sentBytes / totalBytes);
        for (const outcome of outcomes) {
          counts[outcome.status] += 1;
          body.append(resultRow(outcome));
        }
      }
    } finally {
      this.setBusy(false);
    }
    const total = counts.stored + counts["already present"] + counts.rejected;
    summary.textContent =
      `${plural(total, "file")}: ${counts.stored} stored, ${counts["already present"]} already present, ` +
      `${counts.rejected} rejected`;
    summary.classList.toggle("error", counts.rejected > 0);
    results.hidden = false;
    if (!stopped) this.say("Upload finished.");
    this.onImported();
  }
}

function failed(item: UploadFile, reason: string): ImportOutcome {
  return {
    source: item.path,
    status: "rejected",
    reason,
    sop_instance_uid: "",
    sop_class_uid: "",
    study_instance_uid: "",
    series_instance_uid: "",
  };
}

function resultRow(outcome: ImportOutcome): HTMLTableRowElement {
  const row = el("tr", "", `status-${outcome.status.replace(" ", "-")}`);
  const result = outcome.status === "rejected" ? `rejected: ${outcome.reason}` : outcome.status;
  row.append(el("td", outcome.source, "source"), el("td", result));
  return row;
}
