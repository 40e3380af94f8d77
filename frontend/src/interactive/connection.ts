// The browser's side of the interactive protocol (docs/protocol.md): one WebSocket, one open segment at a
// time, promises matched to answers by request id, and reconnection that resumes the session.

import type { Index3, Region } from "../labelmap/region";
import { type MaskFrame, FrameError, MAX_REQUEST_ID, decodeFrame, encodeFrame, frameRequest } from "./frame";

export type ConnectionStatus = "connecting" | "open" | "reconnecting" | "closed";

export interface SessionTarget {
  series: string;
  segmentation: number;
  segment: number;
  /** A registered model name; the server's configured model when absent. */
  model?: string;
}

export interface Geometry {
  shape: Index3;
  spacing: [number, number, number];
  origin: [number, number, number];
  direction: number[][];
}

export interface ReadyInfo {
  protocol: number;
  session: string;
  series: string;
  segmentation: number;
  segment: number;
  sequence: number;
  geometry: Geometry;
  model: { name: string; version: string; license: string; device: string };
  timings: { total: number };
}

export interface OpenResult {
  ready: ReadyInfo;
  /** The segment's mask as the session has it (REPLACE). */
  frame: MaskFrame;
}

export interface ServerTimings {
  queue?: number;
  inference?: number;
  encoding?: number;
  total: number;
}

export interface Latency {
  request: number;
  /** Seconds from sending the request to its result, measured here. */
  client: number;
  /** Seconds as the server measured them. */
  server: ServerTimings;
}

export interface RequestResult {
  request: number;
  sequence: number;
  bytes?: number;
  /** The session was rebuilt on another worker: the frame is the whole mask (REPLACE). */
  rebuilt: boolean;
  timings: ServerTimings;
  /**
   * The changed region. Null only for a rebuilt session's earlier requests: the server answers them all with
   * one whole-mask frame, which comes with the latest of them.
   */
  frame: MaskFrame | null;
  latency: Latency;
}

interface PromptBase {
  positive: boolean;
}
export type Prompt =
  | (PromptBase & { kind: "point"; index: Index3 })
  | (PromptBase & { kind: "box"; start: Index3; stop: Index3 })
  | (PromptBase & { kind: "scribble" | "lasso"; axis: 0 | 1 | 2; slice: number; points: Index3[] });

/** An error from the server (its code, docs/protocol.md) or of the connection (codes below). */
export class InteractiveError extends Error {
  constructor(
    /** A server error code, or: connection_lost, disconnected, superseded, timeout, unauthenticated,
     * forbidden, closed, bad_frame (from the server). */
    readonly code: string,
    message: string,
    readonly request = 0,
  ) {
    super(message);
  }
}

export interface QueuedInfo {
  request: number;
  position: number;
}

export interface StatusInfo {
  status: ConnectionStatus;
  /** Reconnection attempt (1, 2, …) while reconnecting. */
  attempt: number;
  /** Milliseconds until the next attempt, while reconnecting. */
  delayMs?: number;
  /** Why the connection closed, when it did. */
  reason?: string;
}

export interface ConnectionEvents {
  status: StatusInfo;
  /** Each ready: after open(), and after a reconnection resumed the session. */
  ready: ReadyInfo;
  /** A reconnection resumed the session: apply the frame (REPLACE, the whole mask as the server has it). */
  resumed: OpenResult;
  /** A mask frame no pending request was waiting for. */
  frame: MaskFrame;
  queued: QueuedInfo;
  /** Errors that no pending promise received. */
  error: InteractiveError;
  latency: Latency;
}

/** What the client needs of the browser's WebSocket (a fake one in unit tests). */
export type WebSocketLike = Pick<
  WebSocket,
  "binaryType" | "readyState" | "onopen" | "onclose" | "onmessage" | "onerror" | "send" | "close"
>;

export interface ConnectionOptions {
  /** Default: /ws/interactive/ on this page's host, wss: under https:. */
  url?: string;
  createSocket?: (url: string) => WebSocketLike;
  /** Reconnection backoff: the first delay, doubled per attempt up to maxDelayMs (with jitter). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Give up after this many attempts in a row (default: never). */
  maxAttempts?: number;
  /** Reject a request without an answer after this long; 0: never. CPU inference can take minutes. */
  requestTimeoutMs?: number;
  /** Wait this long for the server's "closed" in close(). */
  closeTimeoutMs?: number;
  random?: () => number;
}

const OPEN = 1; // WebSocket.OPEN, which the fake in tests has no class constant for
const CLOSE_NORMAL = 1000;
const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_FORBIDDEN = 4403;

interface PendingRequest {
  request: number;
  initialMask: boolean;
  sentAt: number;
  frame: MaskFrame | null;
  resolve: (result: RequestResult) => void;
  reject: (error: InteractiveError) => void;
  timer?: ReturnType<typeof setTimeout>;
}

interface Opening {
  target: SessionTarget;
  resume: boolean;
  ready: ReadyInfo | null;
  sent: boolean;
  resolve: (result: OpenResult) => void;
  reject: (error: InteractiveError) => void;
}

type Listener<T> = (value: T) => void;

export function defaultInteractiveUrl(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/interactive/`;
}

function sameSegment(target: SessionTarget, ready: ReadyInfo): boolean {
  return (
    target.series === ready.series && target.segmentation === ready.segmentation && target.segment === ready.segment
  );
}

function now(): number {
  return typeof performance !== "undefined" ? performance.now() : Date.now();
}

export class InteractiveConnection {
  private readonly options: Required<Omit<ConnectionOptions, "url" | "maxAttempts">> & { maxAttempts: number };
  private readonly url: string;
  private socket: WebSocketLike | null = null;
  private currentStatus: ConnectionStatus = "closed";
  private target: SessionTarget | null = null;
  private readyInfo: ReadyInfo | null = null;
  private opening: Opening | null = null;
  private readonly pending = new Map<number, PendingRequest>();
  private lastRequest = 0;
  private incoming: Promise<void> = Promise.resolve();
  private outgoing: Promise<void> = Promise.resolve();
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false; // close() or disconnect(): no more reconnection
  private closeWaiter: (() => void) | null = null;
  private staleReady = false; // drop the mask frame after a ready that answered a replaced open
  private readonly listeners = new Map<keyof ConnectionEvents, Set<Listener<never>>>();
  /** The latency of the last answered request. */
  lastLatency: Latency | null = null;

  constructor(options: ConnectionOptions = {}) {
    this.url = options.url ?? defaultInteractiveUrl();
    this.options = {
      createSocket: options.createSocket ?? ((url) => new WebSocket(url)),
      initialDelayMs: options.initialDelayMs ?? 500,
      maxDelayMs: options.maxDelayMs ?? 15_000,
      maxAttempts: options.maxAttempts ?? Infinity,
      requestTimeoutMs: options.requestTimeoutMs ?? 600_000,
      closeTimeoutMs: options.closeTimeoutMs ?? 5_000,
      random: options.random ?? Math.random,
    };
  }

  get status(): ConnectionStatus {
    return this.currentStatus;
  }

  /** The open segment's ready information, null while none is open (or while reopening). */
  get ready(): ReadyInfo | null {
    return this.readyInfo;
  }

  on<K extends keyof ConnectionEvents>(type: K, listener: Listener<ConnectionEvents[K]>): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  private emit<K extends keyof ConnectionEvents>(type: K, value: ConnectionEvents[K]): void {
    for (const listener of this.listeners.get(type) ?? []) (listener as Listener<ConnectionEvents[K]>)(value);
  }

  private setStatus(status: ConnectionStatus, extra: Omit<StatusInfo, "status" | "attempt"> = {}): void {
    this.currentStatus = status;
    this.emit("status", { status, attempt: this.attempt, ...extra });
  }

  // --- the segment -------------------------------------------------------------------------------------

  /** Opens (or resumes) the session on a segment; answers with ready and the segment's current mask. */
  open(target: SessionTarget): Promise<OpenResult> {
    this.stopped = false;
    this.failPending("superseded", "another segment was opened before the answer came");
    this.abandonOpening("superseded", "another segment was opened meanwhile");
    this.target = { ...target };
    this.readyInfo = null;
    return new Promise<OpenResult>((resolve, reject) => {
      this.opening = { target: this.target!, resume: false, ready: null, sent: false, resolve, reject };
      this.ensureSocket();
      this.sendOpening();
    });
  }

  prompt(prompt: Prompt): Promise<RequestResult> {
    return this.request(false, (request) => JSON.stringify({ type: "prompt", request, ...prompt }));
  }

  undo(): Promise<RequestResult> {
    return this.request(false, (request) => JSON.stringify({ type: "undo", request }));
  }

  reset(): Promise<RequestResult> {
    return this.request(false, (request) => JSON.stringify({ type: "reset", request }));
  }

  /** Starts the session from a mask (e.g. after manual edits): ``mask`` is 0/1 per voxel of ``region``. */
  initialMask(mask: Uint8Array, region: Region): Promise<RequestResult> {
    const { start, stop } = region;
    return this.request(true, (request) => encodeFrame({ request, start, stop, mask, replace: true }));
  }

  /** Ends the session on the server (its mask stays the segment's draft) and closes the connection. */
  async close(): Promise<void> {
    this.stop();
    const socket = this.socket;
    if (socket && socket.readyState === OPEN && this.target) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.options.closeTimeoutMs);
        this.closeWaiter = () => {
          clearTimeout(timer);
          resolve();
        };
        socket.send(JSON.stringify({ type: "close" }));
      });
      this.closeWaiter = null;
    }
    this.target = null;
    this.shutDown("closed by the client");
  }

  /** Closes the connection but leaves the session open on the server, to be resumed later. */
  disconnect(): void {
    this.stop();
    this.shutDown("closed by the client");
  }

  /** No more reconnection, and no open waiting for its answer. */
  private stop(): void {
    this.stopped = true;
    this.clearReconnect();
    this.abandonOpening("closed", "the connection was closed");
  }

  /** Rejects the open in progress; one the client made itself (a resumption) just ends. */
  private abandonOpening(code: string, message: string): void {
    const opening = this.opening;
    this.opening = null;
    if (opening && !opening.resume) opening.reject(new InteractiveError(code, message));
  }

  private shutDown(reason: string): void {
    const socket = this.socket;
    this.socket = null;
    this.readyInfo = null;
    if (socket) {
      socket.onclose = socket.onmessage = socket.onopen = socket.onerror = null;
      socket.close(CLOSE_NORMAL);
    }
    this.failPending("closed", "the connection was closed");
    this.setStatus("closed", { reason });
  }

  // --- requests ----------------------------------------------------------------------------------------

  private nextRequest(): number {
    // 1 … 2³²−1, then round again, skipping ids still waiting for an answer.
    do {
      this.lastRequest = this.lastRequest >= MAX_REQUEST_ID ? 1 : this.lastRequest + 1;
    } while (this.pending.has(this.lastRequest));
    return this.lastRequest;
  }

  private request(
    initialMask: boolean,
    message: (request: number) => string | Uint8Array | Promise<string | Uint8Array>,
  ): Promise<RequestResult> {
    return new Promise<RequestResult>((resolve, reject) => {
      const socket = this.socket;
      if (!socket || socket.readyState !== OPEN || this.currentStatus !== "open") {
        const what =
          this.currentStatus === "closed" ? "the connection is closed" : "the connection is being re-established";
        reject(new InteractiveError("disconnected", `${what}: try again when it is open`));
        return;
      }
      if (!this.readyInfo || this.opening) {
        const what = this.opening
          ? "the segment is still opening: wait for it"
          : "no segment is open: open one first";
        reject(new InteractiveError("not_ready", what));
        return;
      }
      const request = this.nextRequest();
      const pending: PendingRequest = { request, initialMask, sentAt: now(), frame: null, resolve, reject };
      if (this.options.requestTimeoutMs > 0) {
        const seconds = this.options.requestTimeoutMs / 1000;
        pending.timer = setTimeout(() => {
          const message = `no answer to request ${request} within ${seconds} s`;
          this.settle(request)?.reject(new InteractiveError("timeout", message, request));
        }, this.options.requestTimeoutMs);
      }
      this.pending.set(request, pending);
      // In order: a prompt must not overtake an initial mask that is still being compressed.
      this.outgoing = this.outgoing.then(async () => {
        let data: string | Uint8Array;
        try {
          data = await message(request);
        } catch (error) {
          const text = `the mask cannot be sent: ${String(error)}`;
          this.settle(request)?.reject(new InteractiveError("bad_frame", text, request));
          return;
        }
        if (this.pending.get(request) !== pending) return; // failed meanwhile (connection lost, superseded)
        pending.sentAt = now();
        this.socket?.send(data as string | ArrayBuffer);
      });
    });
  }

  private settle(request: number): PendingRequest | undefined {
    const pending = this.pending.get(request);
    if (!pending) return undefined;
    this.pending.delete(request);
    if (pending.timer !== undefined) clearTimeout(pending.timer);
    return pending;
  }

  private failPending(code: string, message: string): void {
    for (const request of [...this.pending.keys()]) {
      this.settle(request)?.reject(new InteractiveError(code, `request ${request}: ${message}`, request));
    }
  }

  // --- the socket --------------------------------------------------------------------------------------

  private ensureSocket(): void {
    if (this.socket || this.reconnectTimer !== null) return;
    this.setStatus(this.attempt === 0 ? "connecting" : "reconnecting");
    const socket = this.options.createSocket(this.url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      if (!this.target) this.attempt = 0;
      this.setStatus("open");
      if (this.target && !this.opening) {
        // Resume: the server finds the session (or rebuilds it) and sends the whole mask as it is.
        this.opening = this.resumption(this.target, null);
      }
      this.sendOpening();
    };
    socket.onmessage = (event: MessageEvent) => {
      if (this.socket !== socket) return;
      const data: unknown = event.data;
      // Frames decode asynchronously: handle messages one after another so that a result never overtakes
      // its frame.
      this.incoming = this.incoming.then(() => this.handle(data)).catch((error: unknown) => {
        const message = `a message from the server could not be handled: ${String(error)}`;
        this.emit("error", new InteractiveError("internal", message));
      });
    };
    socket.onerror = () => undefined; // a close event follows, which says more
    socket.onclose = (event: CloseEvent) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.readyInfo = null;
      this.staleReady = false;
      this.lost(event.code, event.reason);
    };
  }

  private lost(code: number, reason: string): void {
    this.failPending(
      "connection_lost",
      "the connection dropped before the answer came; the mask is resynchronised when it is back",
    );
    if (this.opening) this.opening.sent = false; // sent again on the next connection
    if (code === CLOSE_UNAUTHENTICATED || code === CLOSE_FORBIDDEN) {
      const error =
        code === CLOSE_UNAUTHENTICATED
          ? new InteractiveError("unauthenticated", "the server refused the connection: sign in again")
          : new InteractiveError(
              "forbidden",
              "the server refused access (another site's page, or a series you may not see)",
            );
      this.stopped = true;
      this.failOpening(error);
      this.target = null;
      this.setStatus("closed", { reason: error.message });
      return;
    }
    if (this.stopped) {
      this.setStatus("closed", { reason: reason || `closed (code ${code})` });
      return;
    }
    this.attempt += 1;
    if (this.attempt > this.options.maxAttempts) {
      const message = `the server cannot be reached (${this.options.maxAttempts} attempts)`;
      const error = new InteractiveError("connection_lost", message);
      this.stopped = true;
      this.failOpening(error);
      this.setStatus("closed", { reason: error.message });
      return;
    }
    const base = Math.min(this.options.maxDelayMs, this.options.initialDelayMs * 2 ** (this.attempt - 1));
    const delayMs = Math.round(base * (0.5 + 0.5 * this.options.random()));
    this.setStatus("reconnecting", { delayMs, reason: reason || `connection lost (code ${code})` });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (!this.stopped) this.ensureSocket();
    }, delayMs);
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  /** An open the client makes itself; its outcome goes to the "resumed" and "error" listeners. */
  private resumption(target: SessionTarget, ready: ReadyInfo | null): Opening {
    return {
      target,
      resume: true,
      ready,
      sent: ready !== null,
      resolve: (result) => this.emit("resumed", result),
      reject: (error) => this.emit("error", error),
    };
  }

  private sendOpening(): void {
    const opening = this.opening;
    const socket = this.socket;
    if (!opening || opening.sent || !socket || socket.readyState !== OPEN) return;
    const { series, segmentation, segment, model } = opening.target;
    socket.send(JSON.stringify({ type: "open", series, segmentation, segment, ...(model ? { model } : {}) }));
    opening.sent = true;
  }

  private failOpening(error: InteractiveError): void {
    const opening = this.opening;
    this.opening = null;
    opening?.reject(error);
  }

  // --- from the server ---------------------------------------------------------------------------------

  private async handle(data: unknown): Promise<void> {
    if (typeof data === "string") {
      let message: unknown;
      try {
        message = JSON.parse(data);
      } catch {
        this.emit("error", new InteractiveError("bad_json", "the server sent a message that is not JSON"));
        return;
      }
      if (message && typeof message === "object") this.handleMessage(message as Record<string, unknown>);
      return;
    }
    if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
      await this.handleFrame(data);
      return;
    }
    if (typeof Blob !== "undefined" && data instanceof Blob) await this.handleFrame(await data.arrayBuffer());
  }

  private async handleFrame(data: ArrayBuffer | ArrayBufferView): Promise<void> {
    const shape = this.readyInfo?.geometry.shape ?? this.opening?.ready?.geometry.shape;
    let frame: MaskFrame;
    try {
      frame = await decodeFrame(data, shape);
    } catch (error) {
      const request = frameRequest(data) ?? 0;
      const reason = error instanceof FrameError ? error.message : String(error);
      const failure = new InteractiveError("bad_frame", `the server sent a broken mask frame: ${reason}`, request);
      const pending = request ? this.settle(request) : undefined;
      if (pending) pending.reject(failure);
      else if (request === 0 && this.opening?.ready) this.failOpening(failure);
      else this.emit("error", failure);
      return;
    }
    if (frame.request !== 0) {
      const pending = this.pending.get(frame.request);
      if (pending) pending.frame = frame;
      return; // else a late answer to a request given up (timed out, superseded)
    }
    if (this.staleReady) {
      this.staleReady = false;
      return;
    }
    const opening = this.opening;
    if (opening?.ready) {
      this.opening = null;
      this.readyInfo = opening.ready;
      this.attempt = 0;
      this.emit("ready", opening.ready);
      opening.resolve({ ready: opening.ready, frame });
      return;
    }
    this.emit("frame", frame);
  }

  private handleMessage(message: Record<string, unknown>): void {
    const request = typeof message.request === "number" ? message.request : 0;
    switch (message.type) {
      case "ready":
        this.handleReady(message as unknown as ReadyInfo);
        return;
      case "result": {
        const pending = this.settle(request);
        if (!pending) return;
        const timings = (message.timings ?? { total: 0 }) as ServerTimings;
        const latency: Latency = { request, client: (now() - pending.sentAt) / 1000, server: timings };
        this.lastLatency = latency;
        this.emit("latency", latency);
        pending.resolve({
          request,
          sequence: message.sequence as number,
          bytes: message.bytes as number | undefined,
          rebuilt: message.rebuilt === true,
          timings,
          frame: pending.frame,
          latency,
        });
        return;
      }
      case "queued":
        this.emit("queued", { request, position: message.position as number });
        return;
      case "closed":
        this.closeWaiter?.();
        return;
      case "error":
        this.handleError(
          new InteractiveError(
            String(message.code ?? "internal"),
            String(message.message ?? "unknown error"),
            request,
          ),
        );
        return;
      default:
        return; // a newer server's message: nothing to do with it
    }
  }

  private handleReady(ready: ReadyInfo): void {
    const opening = this.opening;
    if (opening?.sent && sameSegment(opening.target, ready)) {
      opening.ready = ready;
    } else if (!opening && this.target && sameSegment(this.target, ready)) {
      // Unasked: the server rebuilt the session while nothing was outstanding. Its mask follows.
      this.opening = this.resumption(this.target, ready);
    } else {
      this.staleReady = true; // the answer to an open that another one replaced: its mask is not ours
    }
  }

  private handleError(error: InteractiveError): void {
    if (error.request !== 0) {
      const pending = this.settle(error.request);
      if (pending) pending.reject(error);
      else this.emit("error", error);
      return;
    }
    // Errors without a request id: those of open, and of an initial-mask frame the server could not accept
    // (it does not read the id out of a frame it refuses).
    if (this.opening?.sent) {
      const opening = this.opening;
      this.failOpening(error); // a resume's failure reaches the "error" listeners
      if (!opening.resume) this.target = null;
      return;
    }
    if (error.code === "not_open" && this.closeWaiter) {
      this.closeWaiter();
      return;
    }
    const mask = [...this.pending.values()].find((pending) => pending.initialMask && pending.frame === null);
    if (mask && error.code !== "rate_limited") {
      this.settle(mask.request)?.reject(new InteractiveError(error.code, error.message, mask.request));
      return;
    }
    this.emit("error", error);
  }
}
