import "./style.css";

import { type CurrentUser, csrfToken, getJSON } from "./api";
import { StudyList } from "./studies";
import { Uploader } from "./upload";

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

async function start(): Promise<void> {
  const studies = new StudyList(
    byId<HTMLTableElement>("study-table"),
    byId("study-message"),
    byId<HTMLFormElement>("study-search"),
    byId<HTMLInputElement>("study-query"),
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
    () => void studies.load().catch(() => undefined),
  );
  try {
    await showUser();
    await studies.load();
  } catch (error) {
    // The study list shows its own error; a failed /api/me/ most likely means the session ended.
    console.error(error);
  } finally {
    // End-to-end tests wait for this before they look at the page.
    document.body.dataset.ready = "true";
  }
}

void start();
