// One file, one XMLHttpRequest to POST /api/upload (fetch reports no upload progress).
// An Upload starts at once and dispatches "change" whenever its state or progress moves:
//   uploading -> done (attachment set) | failed (error set) | cancelled

import { errorFrom } from "./api.js";
import { formatSize } from "./format.js";

let counter = 0;

export class Upload extends EventTarget {
  constructor(file, channelId) {
    super();
    this.key = `u${++counter}`;
    this.file = file;
    this.channelId = channelId;
    this.state = "uploading";
    this.loaded = 0;
    this.total = file.size;
    this.attachment = null;
    this.error = null;
    this.xhr = null;
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

  start() {
    const form = new FormData();
    // The target comes first: the server decides where the files go before reading them.
    if (this.channelId) form.append("channel_id", String(this.channelId));
    form.append("file", this.file, this.file.name);
    const xhr = new XMLHttpRequest();
    this.xhr = xhr;
    xhr.open("POST", "/api/upload");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      this.loaded = event.loaded;
      if (event.lengthComputable) this.total = event.total;
      this.changed();
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      const attachment = body && Array.isArray(body.attachments) ? body.attachments[0] : null;
      if (xhr.status === 201 && attachment) {
        this.attachment = attachment;
        this.loaded = this.total;
        this.finish("done");
      } else {
        this.fail(errorFrom(xhr.status, body));
      }
    });
    xhr.addEventListener("error", () => this.fail(errorFrom(0, null)));
    xhr.addEventListener("timeout", () => this.fail(errorFrom(0, null)));
    xhr.addEventListener("abort", () => {
      if (this.state === "uploading") this.finish("cancelled");
    });
    xhr.send(form);
    return this;
  }

  cancel() {
    if (this.state !== "uploading") return;
    this.state = "cancelled";
    this.xhr?.abort();
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
  const limit = error.details && error.details.limit_bytes;
  switch (error.code) {
    case "file_too_large":
    case "payload_too_large":
      return limit ? `Too large: files may be at most ${formatSize(limit)}.` : "Too large for the server.";
    case "type_mismatch":
    case "unsupported_media_type":
      return "File type refused: its contents do not match its type.";
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
