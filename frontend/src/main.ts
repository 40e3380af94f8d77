import "./style.css";

import { type CurrentUser, csrfToken, getJSON } from "./api";
import { showSeriesPicker } from "./series";
import { StudyList } from "./studies";
import { Uploader } from "./upload";
import { startDecodeWorkers } from "./viewer/decode-workers";
import { seriesMetadata } from "./viewer/dicomweb";

// Hash routes, all served by the one index.html at `/`:
//   #/                          study list and upload
//   #/study/{study}             series picker
//   #/series/{study}/{series}   viewer

function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node as T;
}

async function showUser(): Promise<void> {
  // Loading the user also sets the CSRF cookie that the sign-out form and the uploads send back.
  const user = await getJSON<CurrentUser>("/api/me/");
  byId("user-name").textContent = user.full_name || user.username;
  const logout = byId<HTMLFormElement>("logout-form");
  logout.querySelector<HTMLInputElement>('input[name="csrfmiddlewaretoken"]')!.value = csrfToken();
}

let studies: StudyList | null = null;

function studyList(): StudyList {
  if (studies) return studies;
  const list = new StudyList(
    byId<HTMLTableElement>("study-table"),
    byId("study-message"),
    byId<HTMLFormElement>("study-search"),
    byId<HTMLInputElement>("study-query"),
    {
      modality: byId<HTMLSelectElement>("study-modality"),
      dateFrom: byId<HTMLInputElement>("study-date-from"),
      dateTo: byId<HTMLInputElement>("study-date-to"),
    },
  );
  new Uploader(
    {
      dropZone: byId("drop-zone"),
      pickFiles: byId<HTMLInputElement>("pick-files"),
      pickFolder: byId<HTMLInputElement>("pick-folder"),
      status: byId("upload-status"),
      progress: byId<HTMLProgressElement>("upload-progress"),
      progressLabel: byId("upload-progress-label"),
      message: byId("upload-message"),
      results: byId("upload-results"),
      summary: byId("upload-summary"),
      onlyRejected: byId<HTMLInputElement>("only-rejected"),
      table: byId<HTMLTableElement>("results-table"),
    },
    () => void list.load().catch(() => undefined),
  );
  studies = list;
  return list;
}

type Page = "studies" | "series" | "viewer";
let closeViewer: (() => void) | null = null;
let generation = 0;

function show(page: Page): void {
  byId("studies-page").hidden = page !== "studies";
  byId("series-page").hidden = page !== "series";
  byId("viewer-page").hidden = page !== "viewer";
  document.body.dataset.page = page;
}

async function route(): Promise<void> {
  const current = ++generation;
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
  closeViewer?.();
  closeViewer = null;
  // Tests wait for `data-ready` after each navigation.
  document.body.dataset.ready = "false";
  try {
    if (name === "study" && args.length === 1) {
      show("series");
      await showSeriesPicker(byId("series-page"), args[0]);
    } else if (name === "series" && args.length === 2) {
      show("viewer");
      // The series' metadata is fetched while the viewer's code loads: neither waits for the other.
      const metadata = seriesMetadata(args[0], args[1]);
      metadata.catch(() => undefined); // the viewer reports a failure
      startDecodeWorkers();
      // Cornerstone is loaded only here, so the study list stays light.
      const { openViewer } = await import("./viewer/page");
      performance.mark("annovox:viewer-code-loaded");
      if (current !== generation) return;
      closeViewer = openViewer(byId("viewer-page"), args[0], args[1], metadata).close;
    } else {
      show("studies");
      await studyList().load();
    }
  } catch (error) {
    // Each page shows its own error; a failed request most likely means the session ended.
    console.error(error);
  } finally {
    if (current === generation) document.body.dataset.ready = "true";
  }
}

window.addEventListener("hashchange", () => void route());
void showUser().catch((error: unknown) => console.error(error));
void route();
