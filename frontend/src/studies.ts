// The study list: /api/studies/ with a search box.

import { getJSON, type Page, type Study } from "./api";
import { el, personName, plural } from "./format";

const PAGE_SIZE = 200;

export interface StudyFilters {
  modality: HTMLSelectElement;
  dateFrom: HTMLInputElement;
  dateTo: HTMLInputElement;
}

export class StudyList {
  private readonly body: HTMLTableSectionElement;
  private readonly message: HTMLElement;
  private readonly query: HTMLInputElement;
  private readonly filters: StudyFilters;
  private timer = 0;
  private generation = 0;

  constructor(
    table: HTMLTableElement,
    message: HTMLElement,
    form: HTMLFormElement,
    query: HTMLInputElement,
    filters: StudyFilters,
  ) {
    this.body = table.tBodies[0];
    this.message = message;
    this.query = query;
    this.filters = filters;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.load();
    });
    query.addEventListener("input", () => {
      window.clearTimeout(this.timer);
      this.timer = window.setTimeout(() => void this.load(), 250);
    });
    for (const input of [filters.modality, filters.dateFrom, filters.dateTo]) {
      input.addEventListener("change", () => void this.load());
    }
  }

  /** Loads the list for the current search; an answer to an older search is dropped. */
  async load(): Promise<void> {
    const generation = ++this.generation;
    const search = this.query.value.trim();
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (search) params.set("search", search);
    if (this.filters.modality.value) params.set("modality", this.filters.modality.value);
    if (this.filters.dateFrom.value) params.set("date_from", this.filters.dateFrom.value);
    if (this.filters.dateTo.value) params.set("date_to", this.filters.dateTo.value);
    const filtered = Boolean(search || params.has("modality") || params.has("date_from") || params.has("date_to"));
    this.body.closest("table")?.setAttribute("aria-busy", "true");
    try {
      const page = await getJSON<Page<Study>>(`/api/studies/?${params}`);
      if (generation === this.generation) this.render(page, filtered);
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

  private render(page: Page<Study>, filtered: boolean): void {
    this.message.classList.remove("error");
    if (page.count === 0) {
      this.message.textContent = filtered
        ? "No study matches the search."
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
    // The patient's name opens the series picker.
    const patient = el("td");
    const link = el("a", personName(study.patient_name) || "(no name)", "study-link");
    link.href = `#/study/${study.study_instance_uid}`;
    patient.append(link);
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
