// The study list: /api/studies/ with a search box.

import { getJSON, type Page, type Study } from "./api";
import { el, personName, plural } from "./format";

const PAGE_SIZE = 200;

export class StudyList {
  private readonly body: HTMLTableSectionElement;
  private readonly message: HTMLElement;
  private readonly query: HTMLInputElement;
  private timer = 0;
  private generation = 0;

  constructor(table: HTMLTableElement, message: HTMLElement, form: HTMLFormElement, query: HTMLInputElement) {
    this.body = table.tBodies[0];
    this.message = message;
    this.query = query;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.load();
    });
    query.addEventListener("input", () => {
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => void this.load(), 250);
    });
  }

  /** Loads the list for the current search; an answer to an older search is dropped. */
  async load(): Promise<void> {
    const generation = ++this.generation;
    const search = this.query.value.trim();
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (search) params.set("search", search);
    this.body.closest("table")?.setAttribute("aria-busy", "true");
    try {
      const page = await getJSON<Page<Study>>(`/api/studies/?${params}`);
      if (generation === this.generation) this.render(page, search);
    } catch (error) {
      if (generation === this.generation) {
        this.message.textContent = `Could not load the studies: ${(error as Error).message}`;
        this.message.classList.add("error");
      }
      throw error;
    } finally {
      if (generation === this.generation) this.body.closest("table")?.removeAttribute("aria-busy");
    }
  }

  private render(page: Page<Study>, search: string): void {
    this.message.classList.remove("error");
    if (page.count === 0) {
      this.message.textContent = search
        ? `No study matches “${search}”.`
        : "No studies yet: import DICOM files above.";
    } else {
      const shown = page.results.length < page.count ? ` (showing the first ${page.results.length})` : "";
      this.message.textContent = `${plural(page.count, "study", "studies")}${shown}`;
    }
    this.body.replaceChildren(...page.results.map((study) => this.row(study)));
  }

  private row(study: Study): HTMLTableRowElement {
    const row = el("tr");
    row.dataset.studyUid = study.study_instance_uid;
    const patient = el("td", personName(study.patient_name) || "(no name)");
    const description = el("td", study.study_description);
    description.title = study.study_instance_uid;
    const modalities = el("td");
    for (const modality of study.modalities) {
      modalities.append(el("span", modality, "badge"));
    }
    row.append(
      patient,
      el("td", study.patient_id),
      el("td", study.study_date ?? ""),
      modalities,
      description,
      el("td", String(study.series_count), "number"),
      el("td", String(study.instance_count), "number"),
    );
    return row;
  }
}
