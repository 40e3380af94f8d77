import { afterEach, describe, expect, it, vi } from "vitest";

import { InteractiveConnection, InteractiveError, type ReadyInfo, type WebSocketLike } from "./connection";
import { type MaskFrame, decodeFrame, encodeFrame } from "./frame";

/** Just enough of the browser's WebSocket; the test plays the server. */
class FakeSocket {
  binaryType: BinaryType = "blob";
  readyState = 0;
  onopen: WebSocketLike["onopen"] = null;
  onclose: WebSocketLike["onclose"] = null;
  onmessage: WebSocketLike["onmessage"] = null;
  onerror: WebSocketLike["onerror"] = null;
  readonly sent: (string | Uint8Array)[] = [];
  closedWith: number | null = null;

  constructor(readonly url: string) {}

  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    this.sent.push(typeof data === "string" ? data : new Uint8Array(data as ArrayBuffer));
  }

  close(code?: number): void {
    this.closedWith = code ?? 1005;
    this.readyState = 3;
  }

  // --- the server's side ---
  accept(): void {
    this.readyState = 1;
    this.onopen?.call(this as unknown as WebSocket, new Event("open"));
  }

  json(message: object): void {
    this.onmessage?.call(this as unknown as WebSocket, { data: JSON.stringify(message) } as MessageEvent);
  }

  async frame(frame: MaskFrame): Promise<void> {
    const bytes = await encodeFrame(frame);
    this.onmessage?.call(this as unknown as WebSocket, { data: bytes.buffer } as MessageEvent);
  }

  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.call(this as unknown as WebSocket, { code, reason } as CloseEvent);
  }

  messages(): Record<string, unknown>[] {
    return this.sent.filter((item): item is string => typeof item === "string").map((text) => JSON.parse(text));
  }
}

const target = { series: "1.2.3", segmentation: 4, segment: 2 };
const ready: ReadyInfo = {
  protocol: 1,
  session: "7",
  series: "1.2.3",
  segmentation: 4,
  segment: 2,
  sequence: 0,
  geometry: { shape: [2, 3, 4], spacing: [1, 1, 2], origin: [0, 0, 0], direction: [[1, 0, 0], [0, 1, 0], [0, 0, 1]] },
  model: { name: "m", version: "1", license: "MIT", device: "cpu" },
  timings: { total: 0.1 },
};
const whole = (request: number, value = 1): MaskFrame => ({
  request,
  start: [0, 0, 0],
  stop: [2, 3, 4],
  mask: new Uint8Array(24).fill(value),
  replace: true,
});

function setUp(options: ConstructorParameters<typeof InteractiveConnection>[0] = {}) {
  const sockets: FakeSocket[] = [];
  const connection = new InteractiveConnection({
    url: "ws://example.test/ws/interactive/",
    createSocket: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket;
    },
    random: () => 1,
    ...options,
  });
  const statuses: string[] = [];
  connection.on("status", ({ status }) => statuses.push(status));
  return { connection, sockets, statuses };
}

async function opened() {
  const setup = setUp();
  const opening = setup.connection.open(target);
  const socket = setup.sockets[0];
  socket.accept();
  socket.json({ type: "ready", ...ready });
  await socket.frame(whole(0, 0));
  await opening;
  return { ...setup, socket };
}

const result = (request: number, extra = {}) => ({
  type: "result",
  request,
  sequence: request,
  bytes: 50,
  rebuilt: false,
  timings: { queue: 0.01, inference: 0.2, encoding: 0.01, total: 0.25 },
  ...extra,
});

/** Lets the client's send queue run. */
const sent = () => new Promise((resolve) => setTimeout(resolve, 0));

afterEach(() => {
  vi.useRealTimers();
});

describe("InteractiveConnection", () => {
  it("opens a segment: ready, then the mask", async () => {
    const { connection, sockets, statuses } = setUp();
    const opening = connection.open({ ...target, model: "nnInteractive-v1.0" });
    const socket = sockets[0];
    expect(socket.url).toBe("ws://example.test/ws/interactive/");
    socket.accept();
    expect(socket.binaryType).toBe("arraybuffer");
    expect(socket.messages()).toEqual([{ type: "open", ...target, model: "nnInteractive-v1.0" }]);
    socket.json({ type: "ready", ...ready });
    await socket.frame(whole(0));
    const { ready: info, frame } = await opening;
    expect(info.geometry.shape).toEqual([2, 3, 4]);
    expect(frame.replace).toBe(true);
    expect(connection.ready).toEqual(info);
    expect(statuses).toEqual(["connecting", "open"]);
  });

  it("matches results to prompts by request id, in any order", async () => {
    const { connection, socket } = await opened();
    const queued: unknown[] = [];
    connection.on("queued", (info) => queued.push(info));
    const first = connection.prompt({ kind: "point", positive: true, index: [1, 2, 3] });
    const second = connection.prompt({ kind: "box", positive: false, start: [0, 0, 0], stop: [1, 2, 2] });
    await sent();
    expect(socket.messages().slice(1)).toEqual([
      { type: "prompt", request: 1, kind: "point", positive: true, index: [1, 2, 3] },
      { type: "prompt", request: 2, kind: "box", positive: false, start: [0, 0, 0], stop: [1, 2, 2] },
    ]);
    socket.json({ type: "queued", request: 2, position: 1 });
    await socket.frame({ request: 2, start: [0, 0, 0], stop: [1, 1, 1], mask: Uint8Array.from([1]), replace: false });
    socket.json(result(2));
    await socket.frame({ request: 1, start: [1, 1, 1], stop: [2, 2, 3], mask: Uint8Array.from([0, 1]), replace: false });
    socket.json(result(1));
    const [one, two] = await Promise.all([first, second]);
    expect(one.frame?.start).toEqual([1, 1, 1]);
    expect([...one.frame!.mask]).toEqual([0, 1]);
    expect(two.frame?.stop).toEqual([1, 1, 1]);
    expect(two.timings.inference).toBe(0.2);
    expect(one.latency.client).toBeGreaterThanOrEqual(0);
    expect(connection.lastLatency?.request).toBe(1);
    expect(queued).toEqual([{ request: 2, position: 1 }]);
  });

  it("rejects a request with the server's error, and keeps working", async () => {
    const { connection, socket } = await opened();
    const failing = connection.prompt({ kind: "point", positive: true, index: [9, 9, 9] });
    socket.json({ type: "error", code: "out_of_bounds", message: "the point [9, 9, 9] lies outside", request: 1 });
    const error = await failing.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InteractiveError);
    expect(error).toMatchObject({ code: "out_of_bounds", request: 1, message: "the point [9, 9, 9] lies outside" });
    const undo = connection.undo();
    await sent();
    expect(socket.messages().at(-1)).toEqual({ type: "undo", request: 2 });
    await socket.frame({ request: 2, start: [0, 0, 0], stop: [0, 0, 0], mask: new Uint8Array(0), replace: false });
    socket.json(result(2));
    expect((await undo).request).toBe(2);
  });

  it("answers a rebuilt session's requests: one whole-mask frame for the latest, results for all", async () => {
    const { connection, socket } = await opened();
    const first = connection.prompt({ kind: "point", positive: true, index: [0, 0, 0] });
    const second = connection.reset();
    await socket.frame(whole(2));
    socket.json({ type: "result", request: 1, sequence: 1, rebuilt: true, timings: { total: 6 } });
    socket.json({ type: "result", request: 2, sequence: 2, rebuilt: true, timings: { total: 6 } });
    expect((await first).frame).toBeNull();
    expect(await second).toMatchObject({ rebuilt: true, frame: { replace: true } });
  });

  it("sends an initial mask as a REPLACE frame with its request id", async () => {
    const { connection, socket } = await opened();
    const mask = Uint8Array.from({ length: 24 }, (_, n) => n % 2);
    const answer = connection.initialMask(mask, { start: [0, 0, 0], stop: [2, 3, 4] });
    await vi.waitFor(() => expect(socket.sent.length).toBe(2));
    const frame = await decodeFrame(socket.sent[1] as Uint8Array);
    expect(frame).toEqual({ request: 1, start: [0, 0, 0], stop: [2, 3, 4], mask, replace: true });
    // The server refuses a frame without naming the request: the pending initial mask gets the error.
    socket.json({ type: "error", code: "bad_frame", message: "broken", request: 0 });
    await expect(answer).rejects.toMatchObject({ code: "bad_frame", request: 1 });
  });

  it("sends in order: a prompt waits for an initial mask being compressed", async () => {
    const { connection, socket } = await opened();
    void connection.initialMask(new Uint8Array(24).fill(1), { start: [0, 0, 0], stop: [2, 3, 4] });
    void connection.prompt({ kind: "point", positive: true, index: [0, 0, 0] });
    await vi.waitFor(() => expect(socket.sent.length).toBe(3));
    expect(typeof socket.sent[1]).not.toBe("string");
    expect(JSON.parse(socket.sent[2] as string)).toMatchObject({ type: "prompt", request: 2 });
  });

  it("keeps request ids within 1 … 2³²−1", async () => {
    const { connection, socket } = await opened();
    (connection as unknown as { lastRequest: number }).lastRequest = 2 ** 32 - 2;
    void connection.undo().catch(() => undefined);
    void connection.undo().catch(() => undefined);
    await sent();
    expect(socket.messages().slice(1).map((m) => m.request)).toEqual([2 ** 32 - 1, 1]);
  });

  it("refuses requests before a segment is open", async () => {
    const { connection } = setUp();
    await expect(connection.prompt({ kind: "point", positive: true, index: [0, 0, 0] })).rejects.toMatchObject({ code: "disconnected" });
  });

  it("rejects a failed open with the server's message", async () => {
    const { connection, sockets } = setUp();
    const opening = connection.open(target);
    sockets[0].accept();
    sockets[0].json({ type: "error", code: "not_found", message: "no segment 2 in segmentation 4", request: 0 });
    await expect(opening).rejects.toMatchObject({ code: "not_found", message: "no segment 2 in segmentation 4" });
    expect(connection.ready).toBeNull();
  });

  it("ignores the answer to an open that a newer open replaced", async () => {
    const { connection, sockets } = setUp();
    const first = connection.open(target);
    const socket = sockets[0];
    socket.accept();
    const second = connection.open({ ...target, segment: 3 });
    await expect(first).rejects.toMatchObject({ code: "superseded" });
    const frames: unknown[] = [];
    connection.on("frame", (frame) => frames.push(frame));
    socket.json({ type: "ready", ...ready }); // segment 2's
    await socket.frame(whole(0, 1));
    socket.json({ type: "ready", ...ready, segment: 3 });
    await socket.frame(whole(0, 0));
    const { ready: info, frame } = await second;
    expect(info.segment).toBe(3);
    expect(frame.mask.every((v) => v === 0)).toBe(true);
    expect(frames).toEqual([]);
  });

  it("takes a ready nobody asked for (a rebuilt session) as a resumption", async () => {
    const { connection, socket } = await opened();
    const resumed = new Promise((resolve) => connection.on("resumed", resolve));
    socket.json({ type: "ready", ...ready, sequence: 3 });
    await socket.frame(whole(0));
    expect(await resumed).toMatchObject({ ready: { sequence: 3 }, frame: { replace: true } });
  });

  it("reconnects with backoff and resumes the segment, whose whole mask comes as REPLACE", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const { connection, socket, sockets, statuses } = await opened();
    const delays: number[] = [];
    // "reconnecting" comes with the delay while waiting, and without one as each attempt starts.
    connection.on("status", (info) => info.delayMs !== undefined && delays.push(info.delayMs));
    const lost = connection.prompt({ kind: "point", positive: true, index: [0, 0, 0] });
    socket.drop(1006);
    await expect(lost).rejects.toMatchObject({ code: "connection_lost" });
    expect(statuses.at(-1)).toBe("reconnecting");
    await expect(connection.undo()).rejects.toMatchObject({ code: "disconnected" });

    vi.advanceTimersByTime(500);
    expect(sockets).toHaveLength(2);
    sockets[1].drop(1006); // the server is still down
    vi.advanceTimersByTime(999);
    expect(sockets).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(sockets).toHaveLength(3);
    expect(delays).toEqual([500, 1000]);

    const resumed = new Promise((resolve) => connection.on("resumed", resolve));
    sockets[2].accept();
    expect(sockets[2].messages()).toEqual([{ type: "open", ...target }]);
    sockets[2].json({ type: "ready", ...ready, sequence: 5 });
    await sockets[2].frame(whole(0));
    expect(await resumed).toMatchObject({ ready: { sequence: 5 }, frame: { replace: true, request: 0 } });
    expect(connection.ready?.sequence).toBe(5);
    expect(statuses.at(-1)).toBe("open");
  });

  it("stops on 4401 and 4403 with a readable reason", async () => {
    const { connection, sockets, statuses } = setUp();
    const opening = connection.open(target);
    sockets[0].accept();
    sockets[0].drop(4401);
    await expect(opening).rejects.toMatchObject({ code: "unauthenticated", message: expect.stringContaining("sign in") });
    expect(statuses.at(-1)).toBe("closed");
    expect(sockets).toHaveLength(1);
  });

  it("closes the session and then the socket", async () => {
    const { connection, socket, statuses } = await opened();
    const closing = connection.close();
    expect(socket.messages().at(-1)).toEqual({ type: "close" });
    socket.json({ type: "closed", session: "7" });
    await closing;
    expect(socket.closedWith).toBe(1000);
    expect(statuses.at(-1)).toBe("closed");
  });

  it("reports frames that cannot be decoded to the request they answer", async () => {
    const { connection, socket } = await opened();
    const answer = connection.prompt({ kind: "point", positive: true, index: [0, 0, 0] });
    await sent();
    // A region outside the volume of the ready message.
    await socket.frame({ request: 1, start: [0, 0, 0], stop: [3, 1, 1], mask: new Uint8Array(3), replace: false });
    await expect(answer).rejects.toMatchObject({ code: "bad_frame", message: expect.stringContaining("outside the volume") });
  });
});
