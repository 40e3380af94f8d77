import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { ApiError } from "../api";
import { Labelmap } from "../labelmap/labelmap";
import { readNpyFile, writeNpyFile } from "../labelmap/npy";
import {
  VersionConflictError,
  addSegment,
  apiErrorMessage,
  createSegmentation,
  fetchLabelmap,
  listSegmentations,
  openSegInstance,
  saveVersion,
} from "./client";

type Call = { url: string; init: RequestInit };
let calls: Call[];

function answer(status: number, body: unknown): Response {
  return body instanceof Uint8Array
    ? new Response(body as Uint8Array<ArrayBuffer>, { status })
    : new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}

function serve(...responses: Response[]): void {
  vi.stubGlobal("fetch", async (url: string, init: RequestInit = {}) => {
    calls.push({ url, init });
    const next = responses.shift();
    if (!next) throw new Error(`unexpected request ${url}`);
    return next;
  });
}

beforeEach(() => {
  calls = [];
  vi.stubGlobal("document", { cookie: "sessionid=x; csrftoken=tok%3D1" });
});

afterEach(() => {
  vi.unstubAllGlobals();
});

describe("segmentations client", () => {
  it("lists and creates with the CSRF token", async () => {
    serve(answer(200, []), answer(201, { id: 3 }), answer(201, { id: 4 }), answer(201, { number: 2 }));
    await listSegmentations("1.2.3/4");
    await createSegmentation("1.2.3", { label: "Liver", segments: [{ label: "Liver", color: "#ff0000" }] });
    await openSegInstance("1.2.3", "9.8.7");
    await addSegment(3, { label: "Tumour" });
    expect(calls.map((call) => [call.init.method ?? "GET", call.url])).toEqual([
      ["GET", "/api/series/1.2.3%2F4/segmentations/"],
      ["POST", "/api/series/1.2.3/segmentations/"],
      ["POST", "/api/series/1.2.3/segmentations/"],
      ["POST", "/api/segmentations/3/segments/"],
    ]);
    expect(calls[1].init.headers).toMatchObject({ "X-CSRFToken": "tok=1", "Content-Type": "application/json" });
    expect(JSON.parse(calls[2].init.body as string)).toEqual({ seg_instance: "9.8.7" });
  });

  it("saves a version as a gzip .npy upload with its parent", async () => {
    serve(answer(201, { number: 2, parent: 1 }));
    const labelmap = new Labelmap([1, 2, 3]);
    labelmap.set(0, 0, 1, 2, 5);
    const version = await saveVersion(7, labelmap, { description: "more liver", parent: 1 });
    expect(version.number).toBe(2);
    const { url, init } = calls[0];
    expect([init.method, url]).toEqual(["POST", "/api/segmentations/7/versions/"]);
    const form = init.body as FormData;
    expect(form.get("parent")).toBe("1");
    expect(form.get("description")).toBe("more liver");
    const file = form.get("labelmap") as File;
    expect(file.name).toBe("labelmap.npy.gz");
    const sent = await readNpyFile(new Uint8Array(await file.arrayBuffer()));
    expect(sent.shape).toEqual([1, 1, 2, 3]);
    expect([...sent.data]).toEqual([0, 0, 0, 0, 0, 5]);
    expect(init.headers).not.toHaveProperty("Content-Type"); // the browser writes the multipart boundary
  });

  it("turns 409 into a VersionConflictError that says what to do", async () => {
    serve(answer(409, { detail: "version 3 was saved after version 2: load it and save again" }));
    const error = await saveVersion(7, new Labelmap([1, 1, 1]), { parent: 2 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(VersionConflictError);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 409, parent: 2 });
    expect((error as Error).message).toContain("version 3 was saved after version 2");
  });

  it("fetches a version's labelmap and checks it against the grid", async () => {
    const file = await writeNpyFile({ dtype: "uint16", shape: [2, 1, 1, 2], data: Uint16Array.from([1, 0, 0, 300]) });
    serve(answer(200, file), answer(200, file));
    const labelmap = await fetchLabelmap(7, 2, [1, 1, 2]);
    expect(calls[0].url).toBe("/api/segmentations/7/versions/2/labelmap/");
    expect(labelmap.layers.map((layer) => [...layer])).toEqual([[1, 0], [0, 300]]);
    await expect(fetchLabelmap(7, 2, [1, 2, 2])).rejects.toThrow("series' grid");
  });

  it("gives readable messages for DRF's errors", async () => {
    expect(apiErrorMessage(400, { label: ["This field is required."] }, "x")).toBe("label: This field is required.");
    expect(apiErrorMessage(400, { non_field_errors: ["give either seg_instance, or label"] }, "x")).toBe(
      "give either seg_instance, or label",
    );
    expect(apiErrorMessage(502, null, "The server refused the request")).toBe("The server refused the request (HTTP 502)");
    serve(answer(400, { detail: "labelmap: not a NumPy .npy file" }));
    await expect(saveVersion(1, new Labelmap([1, 1, 1]))).rejects.toThrow("labelmap: not a NumPy .npy file");
  });
});
