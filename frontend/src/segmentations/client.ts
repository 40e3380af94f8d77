// The segmentations REST API (docs/segmentations.md): segmentations of a series, their segments and versions.

import { ApiError, csrfToken, getJSON } from "../api";
import { Labelmap } from "../labelmap/labelmap";
import { type NpyArray, readNpyFile, writeNpyFile } from "../labelmap/npy";
import type { Index3 } from "../labelmap/region";

export interface Code {
  value: string;
  scheme: string;
  meaning: string;
}

export interface Algorithm {
  type?: "MANUAL" | "SEMIAUTOMATIC" | "AUTOMATIC";
  name?: string;
  version?: string;
}

export interface Segment {
  number: number;
  label: string;
  /** "#rrggbb" */
  color: string;
  category: Code;
  type: Code;
  tracking_id: string;
  tracking_uid: string;
  algorithm: Algorithm;
}

/** What a client may set on a segment (number: only when creating, for a given number). */
export interface SegmentFields {
  label?: string;
  color?: string;
  category?: Code;
  type?: Code;
  tracking_id?: string;
  number?: number;
}

export interface Segmentation {
  id: number;
  series_instance_uid: string;
  label: string;
  description: string;
  created: string;
  created_by: string | null;
  seg_series_instance_uid: string;
  segments: Segment[];
  latest_version: number | null;
}

export interface VersionSegment extends Segment {
  layer: number;
  voxels: number;
}

export interface Version {
  number: number;
  parent: number | null;
  restored_from: number | null;
  created: string;
  created_by: { username: string; full_name: string } | null;
  description: string;
  segments: VersionSegment[];
  layer_count: number;
  changed_voxels: Record<string, unknown>;
  sop_instance_uid: string;
  seg_series_instance_uid: string;
}

export interface SegInstance {
  sop_instance_uid: string;
  series_instance_uid: string;
  content_label: string;
  content_description: string;
  segment_count: number;
  /** The segmentation it is a version of, if any. */
  segmentation: number | null;
}

/** 409 on save: another version was saved after the one the edits started from. */
export class VersionConflictError extends ApiError {
  constructor(
    message: string,
    readonly parent: number | undefined,
  ) {
    super(409, message);
  }
}

const enc = encodeURIComponent;

/** A readable message from DRF's error bodies: {"detail": …} or {"field": ["…"], "non_field_errors": […]}. */
export function apiErrorMessage(status: number, body: unknown, fallback: string): string {
  if (body && typeof body === "object") {
    if ("detail" in body && typeof body.detail === "string") return body.detail;
    const parts = Object.entries(body as Record<string, unknown>).map(([field, problem]) => {
      const text = Array.isArray(problem)
        ? problem.map(String).join(" ")
        : typeof problem === "string"
          ? problem
          : JSON.stringify(problem);
      return field === "non_field_errors" ? text : `${field}: ${text}`;
    });
    if (parts.length) return parts.join("; ");
  }
  return `${fallback} (HTTP ${status})`;
}

async function send<T>(method: "POST" | "PATCH", url: string, body?: unknown | FormData): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json", "X-CSRFToken": csrfToken() };
  let payload: BodyInit | undefined;
  if (body instanceof FormData) payload = body; // the browser sets the multipart boundary
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response: Response;
  try {
    response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "The connection to the server failed");
  }
  const answer: unknown = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, apiErrorMessage(response.status, answer, "The server refused the request"));
  }
  return answer as T;
}

export function listSegmentations(seriesUid: string): Promise<Segmentation[]> {
  return getJSON(`/api/series/${enc(seriesUid)}/segmentations/`);
}

export function createSegmentation(
  seriesUid: string,
  fields: { label: string; description?: string; segments?: SegmentFields[] },
): Promise<Segmentation> {
  return send("POST", `/api/series/${enc(seriesUid)}/segmentations/`, fields);
}

/** SEG instances in the study database that refer to the series. */
export function listSegInstances(seriesUid: string): Promise<SegInstance[]> {
  return getJSON(`/api/series/${enc(seriesUid)}/seg-instances/`);
}

/** Opens a stored SEG as a new segmentation (the SEG is its version 1). */
export function openSegInstance(seriesUid: string, sopInstanceUid: string): Promise<Segmentation> {
  return send("POST", `/api/series/${enc(seriesUid)}/segmentations/`, { seg_instance: sopInstanceUid });
}

export function getSegmentation(id: number): Promise<Segmentation> {
  return getJSON(`/api/segmentations/${id}/`);
}

export function updateSegmentation(
  id: number,
  fields: { label?: string; description?: string },
): Promise<Segmentation> {
  return send("PATCH", `/api/segmentations/${id}/`, fields);
}

/** Adds a segment: the next free number unless ``fields.number`` is given. */
export function addSegment(id: number, fields: SegmentFields): Promise<Segment> {
  return send("POST", `/api/segmentations/${id}/segments/`, fields);
}

export function updateSegment(id: number, number: number, fields: Omit<SegmentFields, "number">): Promise<Segment> {
  return send("PATCH", `/api/segmentations/${id}/segments/${number}/`, fields);
}

/** The versions, newest first. */
export function listVersions(id: number): Promise<Version[]> {
  return getJSON(`/api/segmentations/${id}/versions/`);
}

export function getVersion(id: number, number: number): Promise<Version> {
  return getJSON(`/api/segmentations/${id}/versions/${number}/`);
}

/**
 * Saves the labelmap as the next version. ``parent``: the version the edits started from (0: none), so that a
 * save on top of someone else's newer version is refused (VersionConflictError) instead of overwriting it.
 */
export async function saveVersion(
  id: number,
  labelmap: Labelmap | NpyArray,
  options: { description?: string; parent?: number } = {},
): Promise<Version> {
  const array = labelmap instanceof Labelmap ? labelmap.toNpy() : labelmap;
  const file = await writeNpyFile(array, { compress: true });
  const form = new FormData();
  const upload = new Blob([file as Uint8Array<ArrayBuffer>], { type: "application/gzip" });
  form.append("labelmap", upload, "labelmap.npy.gz");
  if (options.description !== undefined) form.append("description", options.description);
  if (options.parent !== undefined) form.append("parent", String(options.parent));
  try {
    return await send<Version>("POST", `/api/segmentations/${id}/versions/`, form);
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      throw new VersionConflictError(
        `Not saved: someone saved a newer version meanwhile (${error.message}). Load the newest version, ` +
          "redo the changes on it and save again.",
        options.parent,
      );
    }
    throw error;
  }
}

export function restoreVersion(id: number, number: number): Promise<Version> {
  return send("POST", `/api/segmentations/${id}/versions/${number}/restore/`);
}

async function fetchLabelmapFile(url: string, shape?: Index3): Promise<{ labelmap: Labelmap; headers: Headers }> {
  let response: Response;
  try {
    response = await fetch(url, { credentials: "same-origin" });
  } catch {
    throw new ApiError(0, "The connection to the server failed");
  }
  if (!response.ok) {
    const body: unknown = await response.json().catch(() => null);
    throw new ApiError(response.status, apiErrorMessage(response.status, body, "The labelmap could not be loaded"));
  }
  const array = await readNpyFile(new Uint8Array(await response.arrayBuffer()));
  return { labelmap: Labelmap.fromNpy(array, shape), headers: response.headers };
}

/** The version's labelmap ([layer, k, j, i]); checked against the series' grid ``shape`` when given. */
export async function fetchLabelmap(id: number, number: number, shape?: Index3): Promise<Labelmap> {
  return (await fetchLabelmapFile(versionFileUrl(id, number, "labelmap"), shape)).labelmap;
}

export interface WorkingLabelmap {
  labelmap: Labelmap;
  /** The latest saved version it starts from (null: nothing saved yet). */
  baseVersion: number | null;
  /** Segments whose unsaved draft (AI prompts, edits) is newer than that version. */
  draftSegments: number[];
}

/** Where the work stands: the latest version with every newer draft laid over it (what a reload resumes). */
export async function fetchWorkingLabelmap(id: number, shape?: Index3): Promise<WorkingLabelmap> {
  const { labelmap, headers } = await fetchLabelmapFile(`/api/segmentations/${id}/draft/`, shape);
  const base = headers.get("X-Annovox-Base-Version") ?? "";
  const drafts = headers.get("X-Annovox-Draft-Segments") ?? "";
  return {
    labelmap,
    baseVersion: base ? Number(base) : null,
    draftSegments: drafts ? drafts.split(",").map(Number) : [],
  };
}

/** Where a version's files are downloaded: the labelmap (.npy.gz), the DICOM SEG, or a NIfTI zip. */
export function versionFileUrl(id: number, number: number, kind: "labelmap" | "seg" | "nifti"): string {
  return `/api/segmentations/${id}/versions/${number}/${kind}/`;
}
