// One file's upload. With the workspace's tickets on: ask for a ticket (POST /api/uploads),
// send the bytes where it says (a PUT to Echora with the ticket's token, or straight to the
// store: a presigned PUT of the SHA-256 hashed here, or a presigned POST form), then
// finalize; an expired ticket is replaced once.
// With tickets off: one POST /api/upload. Bytes go by XMLHttpRequest (fetch reports no
// upload progress). An Upload dispatches "change" whenever its state or progress moves:
//   uploading -> done (attachment set) | failed (error set) | cancelled; failed -> retry()

import { ApiError, errorFrom, request } from "./api.js";
import { formatSize } from "./format.js";
import { describeQuota, refusal } from "./limits.js";

let counter = 0;
// With direct uploads on, a file up to this size is hashed first (the browser's own
// SHA-256, which takes the file whole): the store then takes it by a PUT it verifies,
// faster than a form, and finalize need not read it back.
const HASHED_UP_TO = 64 * 1024 * 1024;

class Cancelled extends Error {}

export class Upload extends EventTarget {
  /**
   * @param {File} file
   * @param {number} channelId
   * @param {{limits: () => object|null, refused?: (error: ApiError) => void}} policy the
   *   workspace's limits as known now, and who to tell when the server refuses by policy
   */
  constructor(file, channelId, policy = { limits: () => null }) {
    super();
    this.key = `u${++counter}`;
    this.file = file;
    this.channelId = channelId;
    this.policy = policy;
    this.state = "idle";
    this.loaded = 0;
    this.total = file.size;
    this.attachment = null;
    this.error = null;
    this.xhr = null;
    this.aborter = null;
  }

  get name() {
    return this.file.name;
  }

  /** 0-100; a finished upload is 100 even when no progress event said so. */
  get percent() {
    if (this.state === "done") return 100;
    if (!this.total) return 0;
    return Math.min(99, Math.floor((this.loaded / this.total) * 100));
  }

  /** Whether trying again can help: not for what the workspace refuses. */
  get retryable() {
    if (this.state !== "failed" || !this.error) return false;
    const code = this.error.code;
    return !["file_too_large", "payload_too_large", "type_not_allowed", "type_mismatch"].includes(code);
  }

  /** Judge the file by the workspace's limits, then send it (nothing is sent if refused). */
  start() {
    this.state = "uploading";
    this.error = null;
    this.loaded = 0;
    this.attachment = null;
    const refused = refusal(this.file, this.policy.limits());
    if (refused) {
      this.fail(refused);
      return this;
    }
    this.changed();
    this.run();
    return this;
  }

  retry() {
    if (this.state !== "failed") return;
    this.start();
  }

  async run() {
    try {
      const limits = this.policy.limits();
      const attachment = limits && limits.tickets ? await this.viaTicket() : await this.oneStep();
      if (this.state !== "uploading") return;
      this.attachment = attachment;
      this.loaded = this.total;
      this.finish("done");
    } catch (error) {
      if (error instanceof Cancelled || this.state !== "uploading") return;
      const apiError = error instanceof ApiError ? error : errorFrom(0, null);
      if ([413, 415, 507].includes(apiError.status) && this.policy.refused) this.policy.refused(apiError);
      this.fail(apiError);
    }
  }

  async oneStep() {
    const form = new FormData();
    // The target comes first: the server decides where the files go before reading them.
    if (this.channelId) form.append("channel_id", String(this.channelId));
    form.append("file", this.file, this.file.name);
    const { status, body } = await this.send("POST", "/api/upload", { body: form });
    const attachment = body && Array.isArray(body.attachments) ? body.attachments[0] : null;
    if (status === 201 && attachment) return attachment;
    throw errorFrom(status, body);
  }

  async viaTicket() {
    const sha256 = await this.digest();
    if (this.state !== "uploading") throw new Cancelled(); // cancelled while hashing
    for (let attempt = 0; ; attempt += 1) {
      let ticket;
      try {
        ticket = await this.api("POST", "/api/uploads", {
          filename: this.file.name,
          size: this.file.size,
          content_type: this.file.type || "application/octet-stream",
          channel_id: this.channelId,
          ...(sha256 ? { sha256 } : {}),
        });
      } catch (error) {
        // Turned off since the limits were read: the one-step upload still works.
        if (error instanceof ApiError && error.code === "tickets_disabled") {
          if (this.policy.refused) this.policy.refused(error);
          return this.oneStep();
        }
        throw error;
      }
      try {
        await this.sendBytes(ticket);
        const body = await this.api("POST", `/api/uploads/${encodeURIComponent(ticket.id)}/finalize`, {
          token: ticket.token,
        });
        const attachment = body && Array.isArray(body.attachments) ? body.attachments[0] : null;
        if (!attachment) throw errorFrom(500, null);
        return attachment;
      } catch (error) {
        // An expired ticket: one new ticket, and the bytes sent again.
        if (error instanceof ApiError && error.code === "upload_expired" && attempt === 0) {
          this.loaded = 0;
          this.changed();
          continue;
        }
        throw error;
      }
    }
  }

  /** The file's SHA-256 (hex) when it may go straight to the store by a PUT; else null. */
  async digest() {
    const limits = this.policy.limits();
    const subtle = globalThis.crypto && globalThis.crypto.subtle; // secure contexts only
    if (!limits || !limits.direct_uploads || !subtle || this.file.size > HASHED_UP_TO) return null;
    try {
      const hash = await subtle.digest("SHA-256", await this.file.arrayBuffer());
      return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, "0")).join("");
    } catch (error) {
      console.warn("not hashed; sent without a digest", error);
      return null;
    }
  }

  async sendBytes(ticket) {
    const upload = ticket.upload;
    if (upload.method === "POST") {
      // Straight to the store: the policy's fields first, in order, the file last.
      const form = new FormData();
      for (const [name, value] of Object.entries(upload.fields || {})) form.append(name, value);
      form.append("file", this.file, this.file.name);
      const { status, body } = await this.send("POST", upload.url, { body: form, headers: upload.headers });
      if (status >= 200 && status < 300) return;
      throw new ApiError(status, "store_refused", `The file store refused the upload (${status}).`, body);
    }
    const { status, body } = await this.send("PUT", upload.url, { body: this.file, headers: upload.headers });
    if (status >= 200 && status < 300) return;
    if (/^https?:\/\//.test(upload.url)) {
      throw new ApiError(status, "store_refused", `The file store refused the upload (${status}).`, body);
    }
    throw errorFrom(status, body);
  }

  /** A JSON request that the Cancel button can stop. */
  async api(method, path, json) {
    this.aborter = new AbortController();
    try {
      return await request(method, path, { json, signal: this.aborter.signal });
    } catch (error) {
      if (error && error.name === "AbortError") throw new Cancelled();
      throw error;
    } finally {
      this.aborter = null;
    }
  }

  /** Bytes by XMLHttpRequest, for their progress: resolves {status, body} (JSON or null). */
  send(method, url, { body, headers = {} }) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open(method, url);
      const sameOrigin = new URL(url, location.href).origin === location.origin;
      if (sameOrigin) xhr.setRequestHeader("Accept", "application/json");
      for (const [name, value] of Object.entries(headers || {})) xhr.setRequestHeader(name, value);
      xhr.upload.addEventListener("progress", (event) => {
        this.loaded = Math.min(event.loaded, this.total);
        this.changed();
      });
      xhr.addEventListener("load", () => {
        this.xhr = null;
        let parsed = null;
        try {
          parsed = JSON.parse(xhr.responseText);
        } catch {
          parsed = null;
        }
        resolve({ status: xhr.status, body: parsed });
      });
      const lost = () => {
        this.xhr = null;
        reject(errorFrom(0, null));
      };
      xhr.addEventListener("error", lost);
      xhr.addEventListener("timeout", lost);
      xhr.addEventListener("abort", () => {
        this.xhr = null;
        reject(new Cancelled());
      });
      xhr.send(body);
    });
  }

  cancel() {
    if (this.state !== "uploading") return;
    this.state = "cancelled";
    this.xhr?.abort();
    this.aborter?.abort();
    this.changed();
  }

  fail(error) {
    if (this.state !== "uploading") return;
    this.error = error;
    this.finish("failed");
  }

  finish(state) {
    this.state = state;
    this.xhr = null;
    this.changed();
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }
}

/** What to tell the user about a failed upload, from the server's error code. */
export function describeUploadError(error) {
  const details = error.details || {};
  const limit = details.limit_bytes;
  switch (error.code) {
    case "file_too_large":
    case "payload_too_large":
      return limit ? `Too large: files may be at most ${formatSize(limit)}.` : "Too large for the server.";
    case "type_not_allowed":
      return details.type
        ? `File type refused: this workspace does not accept ${details.type} files.`
        : "File type refused: this workspace does not accept files of this type.";
    case "quota_exceeded":
      return describeQuota(details);
    case "type_mismatch":
    case "unsupported_media_type":
      return "File type refused: its contents do not match its type.";
    case "upload_expired":
      return "The upload took too long and its ticket expired; try again.";
    case "upload_in_progress":
    case "upload_finalized":
      return "This upload is already being sent; try again.";
    case "too_many_tickets":
      return "Too many uploads at once; try again in a moment.";
    case "storage_unavailable":
      return "File storage is unavailable right now; try again shortly.";
    case "upload_timeout":
      return "The upload stalled and was stopped.";
    case "network_error":
      return "The upload was interrupted: the server could not be reached.";
    case "not_channel_member":
      return "Join the channel to attach files to it.";
    case "auth_required":
    case "session_expired":
      return "You are logged out; log in again.";
    default:
      return error.message || "The upload failed.";
  }
}
