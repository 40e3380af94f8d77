// The dicom-image-loader's decode workers, started by the small main bundle as soon as the viewer route
// opens. A worker starts only while the main thread is free: created by the loader's init, after the viewer's
// code (4 MB) is evaluated, they were still loading their own code when the first frame arrived, which then
// waited for them (~100–250 ms on two slow cores). The viewer hands these to the loader (`takeDecodeWorker`).

/** Two workers: more gain nothing for uncompressed frames and cost start-up time. */
export const DECODE_WORKERS = Math.min(2, navigator.hardwareConcurrency || 1);

const started: Worker[] = [];

function newDecodeWorker(): Worker {
  // The package's exports do not name its worker module, hence the path; Vite bundles the worker only when
  // `new Worker(new URL(…))` is one expression (it is the same file as the loader's own).
  return new Worker(
    new URL("../../node_modules/@cornerstonejs/dicom-image-loader/dist/esm/decodeImageFrameWorker.js", import.meta.url),
    { type: "module" },
  );
}

export function startDecodeWorkers(): void {
  while (started.length < DECODE_WORKERS) started.push(newDecodeWorker());
}

/** A started worker, or a new one once those are taken (the loader replaces workers it terminated). */
export function takeDecodeWorker(): Worker {
  return started.shift() ?? newDecodeWorker();
}
