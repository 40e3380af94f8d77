// The series picker (#/study/{study}): the study's series from QIDO-RS, each with a thumbnail of its middle
// instance (WADO-RS rendered, scaled by the server) and a link to the viewer.

import { el, personName, plural } from "./format";
import { Tag, getDicomJson, number, renderedUrl, text } from "./viewer/dicomweb";

const THUMBNAIL = 128;
/** Series the viewer cannot show as a volume. */
const NOT_IMAGES = new Set(["SEG", "RTSTRUCT", "SR", "KO", "PR", "RWV", "REG", "DOC"]);

export async function showSeriesPicker(root: HTMLElement, study: string): Promise<void> {
  const heading = el("h2", "Series");
  const back = el("a", "← Studies", "back-link") as HTMLAnchorElement;
  back.href = "#/";
  const message = el("p", "Loading…", "message");
  message.setAttribute("role", "status");
  const list = el("ul", undefined, "series-list");
  list.id = "series-list";
  const head = el("div", undefined, "panel-head");
  head.append(heading, back);
  const panel = el("section", undefined, "panel");
  panel.append(head, message, list);
  root.replaceChildren(panel);

  try {
    const [studies, series] = await Promise.all([
      getDicomJson(`/studies?StudyInstanceUID=${encodeURIComponent(study)}&includefield=StudyDescription`),
      getDicomJson(`/studies/${study}/series`),
    ]);
    const info = studies[0];
    if (info) {
      heading.textContent = [personName(text(info, Tag.PatientName)), text(info, Tag.StudyDescription)]
        .filter(Boolean)
        .join(" · ");
    }
    series.sort((a, b) => (number(a, Tag.SeriesNumber) || 0) - (number(b, Tag.SeriesNumber) || 0));
    message.textContent = series.length ? plural(series.length, "series", "series") : "This study has no series.";
    const items = series.map((s) => seriesItem(study, s));
    list.replaceChildren(...items.map(([item]) => item));
    // Thumbnails after the list is on screen: one QIDO per series for its middle instance.
    await Promise.all(items.map(([, thumbnail]) => thumbnail()));
  } catch (error) {
    message.textContent = `Could not load the series: ${(error as Error).message}`;
    message.classList.add("error");
  }
}

function seriesItem(study: string, series: Record<string, { vr: string; Value?: unknown[] } | undefined>) {
  const uid = text(series, Tag.SeriesInstanceUID);
  const modality = text(series, Tag.Modality);
  const count = number(series, Tag.NumberOfSeriesRelatedInstances) || 0;
  const item = el("li", undefined, "series-item");
  item.dataset.seriesUid = uid;
  const viewable = !NOT_IMAGES.has(modality);
  const link = el(viewable ? "a" : "div", undefined, "series-link") as HTMLElement;
  if (link instanceof HTMLAnchorElement) link.href = `#/series/${study}/${uid}`;
  const figure = el("div", undefined, "thumbnail");
  const description = text(series, Tag.SeriesDescription) || "(no description)";
  link.append(
    figure,
    el("span", `${modality} #${text(series, Tag.SeriesNumber)}`, "series-title"),
    el("span", description, "series-description"),
    el("span", plural(count, "instance"), "muted"),
  );
  item.append(link);

  async function thumbnail(): Promise<void> {
    if (!viewable) {
      figure.textContent = modality;
      return;
    }
    const instances = await getDicomJson(`/studies/${study}/series/${uid}/instances`);
    instances.sort((a, b) => (number(a, Tag.InstanceNumber) || 0) - (number(b, Tag.InstanceNumber) || 0));
    const middle = instances[Math.floor(instances.length / 2)];
    if (!middle) return;
    const img = el("img") as HTMLImageElement;
    img.alt = `${description}, middle image`;
    img.width = THUMBNAIL;
    img.height = THUMBNAIL;
    img.decoding = "async";
    img.src = renderedUrl(study, uid, text(middle, Tag.SOPInstanceUID), THUMBNAIL);
    await new Promise<void>((resolve) => {
      img.addEventListener("load", () => resolve(), { once: true });
      img.addEventListener("error", () => resolve(), { once: true });
    });
    figure.replaceChildren(img);
  }
  return [item, thumbnail] as const;
}
