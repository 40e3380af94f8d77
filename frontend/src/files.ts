// Turning what the user picked or dropped into files with relative paths, and cutting them into batches.

import type { UploadFile } from "./api";

/** Files from an <input type="file">; a folder picker (webkitdirectory) gives each its relative path. */
export function filesFromInput(input: HTMLInputElement): UploadFile[] {
  return Array.from(input.files ?? [], (file) => ({ file, path: file.webkitRelativePath || file.name }));
}

function readAllEntries(reader: FileSystemDirectoryReader): Promise<FileSystemEntry[]> {
  // readEntries answers in chunks (about 100 in Chromium) until it answers an empty list.
  return new Promise((resolve, reject) => {
    const all: FileSystemEntry[] = [];
    const next = (): void =>
      reader.readEntries((chunk) => {
        if (chunk.length === 0) {
          resolve(all);
        } else {
          all.push(...chunk);
          next();
        }
      }, reject);
    next();
  });
}

function fileOf(entry: FileSystemFileEntry): Promise<File> {
  return new Promise((resolve, reject) => entry.file(resolve, reject));
}

async function walk(entry: FileSystemEntry, out: UploadFile[]): Promise<void> {
  if (entry.isFile) {
    const file = await fileOf(entry as FileSystemFileEntry);
    out.push({ file, path: entry.fullPath.replace(/^\/+/, "") || file.name });
  } else if (entry.isDirectory) {
    const children = await readAllEntries((entry as FileSystemDirectoryEntry).createReader());
    for (const child of children) {
      await walk(child, out);
    }
  }
}

/** Files from a drop, with dropped folders walked recursively. */
export async function filesFromDrop(data: DataTransfer): Promise<UploadFile[]> {
  // The entries must be taken while the drop event runs: the list is emptied once it returns.
  const entries = Array.from(data.items, (item) => (item.kind === "file" ? item.webkitGetAsEntry() : null));
  if (entries.some((entry) => entry === null)) {
    return Array.from(data.files, (file) => ({ file, path: file.name }));
  }
  const out: UploadFile[] = [];
  for (const entry of entries) {
    await walk(entry as FileSystemEntry, out);
  }
  return out;
}

/**
 * Batches small enough for one request: the server accepts a limited number of files per request
 * (Django's DATA_UPLOAD_MAX_NUMBER_FILES, 100 by default), and smaller requests show steadier progress.
 * A file larger than maxBytes travels alone.
 */
export function makeBatches(files: UploadFile[], maxFiles: number, maxBytes: number): UploadFile[][] {
  const batches: UploadFile[][] = [];
  let current: UploadFile[] = [];
  let bytes = 0;
  for (const item of files) {
    if (current.length > 0 && (current.length >= maxFiles || bytes + item.file.size > maxBytes)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += item.file.size;
  }
  if (current.length > 0) {
    batches.push(current);
  }
  return batches;
}
