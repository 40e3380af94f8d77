// The REST API under /api/: session cookie plus the CSRF token from the `csrftoken` cookie.

export interface CurrentUser {
  username: string;
  full_name: string;
  is_staff: boolean;
  can_view_studies: boolean;
}

export interface Study {
  id: number;
  study_instance_uid: string;
  patient_name: string;
  patient_id: string;
  patient_birth_date: string | null;
  patient_sex: string;
  study_date: string | null;
  study_time: string;
  study_description: string;
  accession_number: string;
  modalities: string[];
  series_count: number;
  instance_count: number;
  created: string;
}

export interface Page<T> {
  count: number;
  next: string | null;
  previous: string | null;
  results: T[];
}

export type ImportStatus = "stored" | "already present" | "rejected";

export interface ImportOutcome {
  source: string;
  status: ImportStatus;
  reason: string;
  sop_instance_uid: string;
  sop_class_uid: string;
  study_instance_uid: string;
  series_instance_uid: string;
}

export interface ImportResult {
  outcomes: ImportOutcome[];
  counts: { stored: number; already_present: number; rejected: number };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }

  /** The session ended (signed out elsewhere, or expired): only signing in again helps. */
  get signedOut(): boolean {
    return this.status === 401 || this.status === 403;
  }
}

export function csrfToken(): string {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function errorMessage(status: number, body: unknown, fallback: string): string {
  if (body && typeof body === "object" && "detail" in body && typeof body.detail === "string") {
    return body.detail;
  }
  return `${fallback} (HTTP ${status})`;
}

export async function getJSON<T>(url: string): Promise<T> {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  const body: unknown = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, errorMessage(response.status, body, "The server refused the request"));
  }
  return body as T;
}

export interface UploadFile {
  file: File;
  /** Relative path for a folder upload, else the file name; the server reports outcomes by it. */
  path: string;
}

/** POST one batch to /api/studies/import/ with XHR, which (unlike fetch) reports upload progress. */
export function uploadBatch(
  files: UploadFile[],
  onProgress: (sentBytes: number) => void,
): Promise<ImportResult> {
  const form = new FormData();
  for (const { file, path } of files) {
    form.append("files", file, file.name);
    form.append("paths", path);
  }
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/studies/import/");
    xhr.responseType = "json";
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.upload.addEventListener("progress", (event) => onProgress(event.loaded));
    xhr.addEventListener("load", () => {
      if (xhr.status === 200 && xhr.response && Array.isArray(xhr.response.outcomes)) {
        resolve(xhr.response as ImportResult);
      } else {
        reject(new ApiError(xhr.status, errorMessage(xhr.status, xhr.response, "The upload was refused")));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "The connection to the server failed")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "The upload was cancelled")));
    xhr.send(form);
  });
}
