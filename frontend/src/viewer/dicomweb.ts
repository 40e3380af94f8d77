// Our DICOMweb server (docs/dicomweb.md) from the browser: QIDO for the series picker, WADO-RS metadata for the
// viewer. Same-origin GETs carry the session cookie and need no CSRF token.

import { ApiError } from "../api";
import type { DicomJson } from "./geometry";

export const DICOMWEB = "/dicomweb";

export async function getDicomJson(path: string): Promise<DicomJson[]> {
  const response = await fetch(`${DICOMWEB}${path}`, {
    headers: { Accept: "application/dicom+json" },
    credentials: "same-origin",
  });
  if (!response.ok) {
    const text = await response.text().catch(() => "");
    throw new ApiError(response.status, text.slice(0, 300) || `DICOMweb refused ${path} (HTTP ${response.status})`);
  }
  return (await response.json()) as DicomJson[];
}

/** WADO-RS metadata of every instance of a series. */
export function seriesMetadata(study: string, series: string): Promise<DicomJson[]> {
  return getDicomJson(`/studies/${study}/series/${series}/metadata`);
}

/** The first value of a tag as a string ("" when absent); person names give their Alphabetic form. */
export function text(data: DicomJson, tag: string): string {
  const value = data[tag]?.Value?.[0];
  if (value === undefined || value === null) return "";
  if (typeof value === "object" && "Alphabetic" in value) return String(value.Alphabetic);
  return String(value);
}

export function number(data: DicomJson, tag: string): number {
  const value = Number(data[tag]?.Value?.[0]);
  return Number.isFinite(value) ? value : NaN;
}

export const Tag = {
  SOPInstanceUID: "00080018",
  StudyDate: "00080020",
  Modality: "00080060",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  PatientName: "00100010",
  PatientID: "00100020",
  SeriesInstanceUID: "0020000E",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  NumberOfFrames: "00280008",
  NumberOfSeriesRelatedInstances: "00201209",
} as const;

/** A frame's WADO-RS URL, the address the dicom-image-loader's `wadors:` image ids carry. */
export function frameUrl(study: string, series: string, instance: string, frame = 1): string {
  return `${location.origin}${DICOMWEB}/studies/${study}/series/${series}/instances/${instance}/frames/${frame}`;
}

/** A PNG of one instance scaled to fit `size` (WADO-RS rendered), for thumbnails. */
export function renderedUrl(study: string, series: string, instance: string, size: number): string {
  return `${DICOMWEB}/studies/${study}/series/${series}/instances/${instance}/rendered?viewport=${size},${size}`;
}
