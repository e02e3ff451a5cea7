// Prism's browser client: the REST API and the WebSocket API, as the Rust
// client (`prism_cloud::client`, `prism_cloud::live`) speaks them. No
// dependencies; import it as an ES module:
//
//   import { PrismClient } from "./prism-client.js";
//   const prism = new PrismClient({ apiUrl, websocketUrl, token });
//   const { job, upload } = await prism.submitFile(file);
//   await prism.upload(upload, file, (sent, total) => ...);
//   const live = prism.live((job, message) => ...);
//   live.follow(job);            // snapshot, then every event after job.seq
//
// Live events are resequenced per job: duplicates (at-least-once delivery)
// are dropped, events are released in `seq` order, and a gap that lasts asks
// the server for a replay from the last event seen. A dropped connection
// reconnects and resumes each job from its last seq, so nothing is missed.

/** An error the API answered with (RFC 9457 problem details). */
export class PrismError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || problem?.message || `HTTP ${status}`);
    this.status = status;
    this.code = problem?.code || problem?.type || String(status);
    this.problem = problem;
  }
}

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

export class PrismClient {
  constructor({ apiUrl, websocketUrl, token }) {
    this.apiUrl = apiUrl.replace(/\/$/, "");
    this.websocketUrl = websocketUrl;
    this.token = token;
  }

  async request(method, path, body) {
    const headers = { authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    const send = () => fetch(this.apiUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let resp = await send();
    // A function throttled past its concurrency reaches us as API Gateway's
    // 500 (or a 429/503): reads are safe to send again after a backoff.
    for (let delay = 200; method === "GET" && [429, 500, 502, 503, 504].includes(resp.status) && delay <= 1600; delay *= 2) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      resp = await send();
    }
    const text = await resp.text();
    const value = text ? JSON.parse(text) : null;
    if (!resp.ok) throw new PrismError(resp.status, value);
    return value;
  }

  /** `{ status }`; for an operator's token, `lanes` too: each lane's state, `paused`, `waiting`, `in_flight`. */
  health() {
    return this.request("GET", "/v1/health");
  }

  /** Pauses or resumes a lane (`video-bulk`) or a modality's lanes (an operator's token): `{ lanes }` after the change. */
  setLanePaused(lane, paused) {
    return this.request("POST", `/v1/ops/lanes/${encodeURIComponent(lane)}/${paused ? "pause" : "resume"}`);
  }

  /** `{ jobs, next_cursor }`, newest first; filters: status, modality, limit, cursor. */
  listJobs(filters = {}) {
    const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v !== undefined && v !== ""));
    return this.request("GET", `/v1/jobs${query.size ? `?${query}` : ""}`);
  }

  /** The job's snapshot, with a presigned `links` entry per output. */
  getJob(id) {
    return this.request("GET", `/v1/jobs/${encodeURIComponent(id)}`);
  }

  cancel(id) {
    return this.request("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`);
  }

  /** Creates the job for a file: `{ job, upload }`, the upload a presigned PUT. */
  submitFile(file, { priority, workflow, metadata } = {}) {
    return this.request("POST", "/v1/jobs", { file_name: file.name, size: file.size, priority, workflow, metadata });
  }

  /** PUTs the file to its presigned URL, reporting `(sent, total)` bytes as it goes. */
  upload(target, file, onProgress = () => {}) {
    // fetch() cannot report upload progress; XMLHttpRequest can.
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open(target.method || "PUT", target.url);
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
      xhr.onload = () => (xhr.status < 300 ? resolve() : reject(new PrismError(xhr.status, { detail: `upload refused: ${xhr.status} ${xhr.responseText.slice(0, 200)}` })));
      xhr.onerror = () => reject(new PrismError(0, { detail: "upload failed: network error" }));
      xhr.send(file);
    });
  }

  /** A live connection; `onUpdate(job, message)` is called with the job as each event leaves it. */
  live(onUpdate, options) {
    return new LiveJobs(this, onUpdate, options);
  }
}

/** Puts one job's pushed events back in `seq` order and drops duplicates. */
export class Resequencer {
  constructor(lastSeq) {
    this.lastSeq = lastSeq;
    this.pending = new Map();
  }

  /** Takes pushed event `seq` (which superseded the seqs listed) and returns the events now in order. */
  accept(seq, superseded, event) {
    if (seq > this.lastSeq) this.pending.set(seq, { event, superseded: superseded || [] });
    const ready = [];
    for (;;) {
      const next = Math.min(...this.pending.keys());
      if (!Number.isFinite(next)) break;
      const { event: e, superseded: skipped } = this.pending.get(next);
      for (let s = this.lastSeq + 1; s < next; s++) if (!skipped.includes(s)) return ready;
      this.pending.delete(next);
      this.lastSeq = next;
      ready.push(e);
    }
    return ready;
  }

  get hasGap() {
    return this.pending.size > 0;
  }
}

/** Applies an event to a job as the server's state machine does, for display. */
export function applyEvent(job, event) {
  const p = event.payload || {};
  const next = { ...job, seq: event.seq, updated_at: event.timestamp };
  switch (event.event_type) {
    case "job.uploaded": next.input = p.input; break;
    case "job.classified": Object.assign(next, { modality: p.modality, mime: p.mime }); break;
    case "job.started": Object.assign(next, { status: "processing", phase: p.phase }); break;
    case "job.progress": Object.assign(next, { phase: p.phase, progress: p.progress, eta_s: p.eta_s }); break;
    case "job.cancel_requested": next.cancel_requested = true; break;
    case "job.completed": Object.assign(next, { status: "completed", progress: 100, result: p.result, outputs: p.outputs }); break;
    case "job.failed": Object.assign(next, { status: "failed", error: p }); break;
    case "job.cancelled": next.status = "cancelled"; break;
    default: break;
  }
  return next;
}

/** Jobs followed over one WebSocket, resumed across reconnects. */
export class LiveJobs {
  constructor(client, onUpdate, { gapMs = 2000, reconnectMs = 1000, onState = () => {} } = {}) {
    this.client = client;
    this.onUpdate = onUpdate;
    this.gapMs = gapMs;
    this.reconnectMs = reconnectMs;
    this.onState = onState;
    this.jobs = new Map(); // id -> { job, seq: Resequencer, gapTimer }
    this.closed = false;
    this.connect();
  }

  /** Follows `job` from its `seq`: the server sends its snapshot, then every later event. */
  follow(job) {
    if (this.jobs.has(job.id) || TERMINAL.has(job.status)) return;
    this.jobs.set(job.id, { job, order: new Resequencer(job.seq || 0), gapTimer: null });
    this.subscribe(job.id);
  }

  unfollow(id) {
    const followed = this.jobs.get(id);
    if (!followed) return;
    clearTimeout(followed.gapTimer);
    this.jobs.delete(id);
    this.send({ action: "unsubscribe", job_id: id });
  }

  close() {
    this.closed = true;
    this.socket?.close();
  }

  subscribe(id) {
    const followed = this.jobs.get(id);
    this.send({ action: "subscribe", job_id: id, after_seq: followed.order.lastSeq });
  }

  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  connect() {
    const url = `${this.client.websocketUrl}?token=${encodeURIComponent(this.client.token)}`;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.onState("live");
      for (const id of this.jobs.keys()) this.subscribe(id);
    };
    socket.onmessage = (m) => this.receive(JSON.parse(m.data));
    socket.onclose = () => {
      this.onState("reconnecting");
      if (!this.closed) setTimeout(() => this.connect(), this.reconnectMs);
    };
  }

  receive(message) {
    const id = message.type === "snapshot" ? message.job?.id : message.job_id;
    const followed = this.jobs.get(id);
    if (!followed) return;
    if (message.type === "snapshot") {
      // Newer than what we hold (a resubscription after a gap): take it whole.
      if ((message.job.seq || 0) >= followed.order.lastSeq) {
        followed.job = { ...followed.job, ...message.job };
        followed.order = new Resequencer(message.job.seq || 0);
        this.update(id, followed, message);
      }
      return;
    }
    if (message.type === "error") {
      this.update(id, followed, message);
      return;
    }
    if (message.type !== "event" || message.seq === undefined) return;
    for (const event of followed.order.accept(message.seq, message.superseded, message)) {
      followed.job = applyEvent(followed.job, event);
      this.update(id, followed, event);
    }
    clearTimeout(followed.gapTimer);
    if (followed.order.hasGap) {
      // A missing event did not arrive in time: replay from the last one seen.
      followed.gapTimer = setTimeout(() => this.jobs.has(id) && this.subscribe(id), this.gapMs);
    }
  }

  update(id, followed, message) {
    this.onUpdate(followed.job, message);
    if (TERMINAL.has(followed.job.status)) this.unfollow(id);
  }
}
