// The composer: the message text, files attached by button, drop or paste (uploaded at
// once, each with its own progress bar), and sending. Each channel keeps its own draft,
// so switching channels loses neither text nor uploads.
//
// Sending takes a snapshot of the text and the files and empties the composer at once:
// what is typed or attached while a message is on its way belongs to the next one. The
// snapshot waits in the outbox (shown under the log as "Sending…") until the server has
// it; a refused send puts its text and files back in the composer.

import { ApiError } from "./api.js";
import { h } from "./dom.js";
import { formatSize } from "./format.js";
import { Upload, describeUploadError } from "./uploads.js";

function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs https
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function hasFiles(event) {
  return Boolean(event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files"));
}

class Draft {
  constructor(channelId) {
    this.channelId = channelId;
    this.text = "";
    this.uploads = [];
    this.clientId = null; // kept across retries of one send, so a retry posts nothing twice
    this.outbox = []; // sends in order: {text, uploads, clientId, sending, delivered}
    this.error = "";
  }
}

export class Composer {
  /**
   * @param {object} parts the form and its controls, the outbox list and the log that
   *   scrolls it (see index.html)
   * @param {(channelId: number, body: object) => Promise<object>} send posts a message
   */
  constructor(parts, send) {
    Object.assign(this, parts);
    this.sendMessage = send;
    this.authorName = "";
    this.channel = null;
    this.drafts = new Map();
    this.items = new Map(); // upload key -> its <li>
    this.blocker = null;
    this.limits = null; // the workspace's, from GET /api/workspaces/{id}/limits
    this.onRefused = () => {}; // the server refused by policy: the limits may have changed
    // A message was just queued: the log goes to its newest end (the outbox row) and stays
    // pinned there, whatever the composer's cards do to its height meanwhile.
    this.onSubmitted = () => {
      this.scroller.scrollTop = this.scroller.scrollHeight;
    };

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.textarea.addEventListener("input", () => {
      const draft = this.draft();
      if (!draft) return;
      draft.text = this.textarea.value;
      draft.clientId = null;
      this.autosize();
      this.update();
    });
    this.attachButton.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => {
      this.addFiles(this.fileInput.files);
      this.fileInput.value = "";
    });
    this.textarea.addEventListener("paste", (event) => this.onPaste(event));
    this.form.addEventListener("dragenter", (event) => this.onDragOver(event));
    this.form.addEventListener("dragover", (event) => this.onDragOver(event));
    this.form.addEventListener("dragleave", (event) => {
      if (!this.form.contains(event.relatedTarget)) this.setDropping(false);
    });
    this.form.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      this.setDropping(false);
      this.addFiles(event.dataTransfer.files);
    });
    this.setChannel(null);
  }

  /** The channel being written to: {id, name, joined} or null. */
  setChannel(channel) {
    this.channel = channel;
    const usable = Boolean(channel && channel.joined);
    this.textarea.disabled = !usable;
    this.attachButton.disabled = !usable;
    this.fileInput.disabled = !usable;
    this.textarea.placeholder = channel ? `Message ${channel.kind === "dm" ? "" : "#"}${channel.name}` : "";
    const draft = this.draft();
    this.textarea.value = draft ? draft.text : "";
    this.autosize();
    this.items.clear();
    this.pendingList.replaceChildren();
    for (const upload of draft ? draft.uploads : []) this.renderUpload(upload);
    this.renderOutbox();
    this.showError(draft ? draft.error : "");
    this.update();
  }

  draft(channelId = this.channel && this.channel.id) {
    if (!channelId) return null;
    let draft = this.drafts.get(channelId);
    if (!draft) {
      draft = new Draft(channelId);
      this.drafts.set(channelId, draft);
    }
    return draft;
  }

  /** The workspace's limits (null: unknown, the server judges alone). */
  setLimits(limits) {
    this.limits = limits;
  }

  /** Back online: uploads that failed for want of a connection go again. */
  reconnected() {
    for (const draft of this.drafts.values()) {
      for (const upload of draft.uploads) {
        if (upload.state === "failed" && upload.retryable && isConnectionError(upload.error)) upload.retry();
      }
    }
    this.update();
  }

  focus() {
    if (!this.textarea.disabled) this.textarea.focus();
  }

  // ----- attachments -----

  addFiles(fileList) {
    const draft = this.draft();
    if (!draft || !this.channel.joined) return;
    for (const file of Array.from(fileList || [])) {
      const upload = new Upload(file, this.channel.id, {
        limits: () => this.limits,
        refused: (error) => this.onRefused(error),
      });
      upload.addEventListener("change", () => this.onUploadChange(draft, upload));
      draft.uploads.push(upload);
      draft.clientId = null;
      this.renderUpload(upload);
      upload.start();
    }
    this.update();
  }

  onPaste(event) {
    const files = event.clipboardData ? Array.from(event.clipboardData.files) : [];
    if (files.length === 0) return;
    // Pasting a picture attaches it; text pasted along with it still goes in the box.
    if (!event.clipboardData.types.includes("text/plain")) event.preventDefault();
    this.addFiles(files);
  }

  onDragOver(event) {
    if (!hasFiles(event) || !this.channel || !this.channel.joined) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    this.setDropping(true);
  }

  setDropping(on) {
    this.form.classList.toggle("dropping", on);
    this.dropHint.hidden = !on;
  }

  onUploadChange(draft, upload) {
    if (upload.state === "cancelled") {
      this.forget(draft, upload);
      return;
    }
    if (this.draft() === draft && draft.uploads.includes(upload)) {
      this.renderUpload(upload);
      if (upload.state === "done") this.announce(`${upload.name} uploaded.`);
      if (upload.state === "failed") draft.clientId = null;
    }
    this.update();
  }

  forget(draft, upload) {
    upload.cancel();
    draft.uploads = draft.uploads.filter((u) => u !== upload);
    draft.clientId = null;
    if (upload.previewUrl) URL.revokeObjectURL(upload.previewUrl);
    this.dropItem(upload);
    this.update();
  }

  /** Take an upload's card out of the composer (the upload itself lives on). */
  dropItem(upload) {
    const li = this.items.get(upload.key);
    if (!li) return;
    const focusWasInside = li.contains(document.activeElement);
    li.remove();
    this.items.delete(upload.key);
    if (focusWasInside) this.textarea.focus();
  }

  renderUpload(upload) {
    let li = this.items.get(upload.key);
    if (!li) {
      li = this.buildItem(upload);
      this.items.set(upload.key, li);
      this.pendingList.append(li);
    }
    const parts = li.upload;
    li.dataset.state = upload.state;
    parts.progress.value = upload.percent;
    const failed = upload.state === "failed";
    const done = upload.state === "done";
    parts.progress.hidden = failed;
    parts.status.textContent = failed
      ? describeUploadError(upload.error)
      : done
        ? "Uploaded"
        : `Uploading… ${upload.percent}%`;
    parts.status.className = failed ? "upload-status error" : "upload-status";
    if (failed) parts.status.setAttribute("role", "alert");
    else parts.status.removeAttribute("role");
    const uploading = upload.state === "uploading";
    const retryable = upload.retryable;
    if (parts.cancel.hidden === uploading || parts.retry.hidden === retryable) {
      const hadFocus = document.activeElement === parts.cancel || document.activeElement === parts.retry;
      parts.cancel.hidden = !uploading;
      parts.remove.hidden = uploading;
      parts.retry.hidden = !retryable;
      if (hadFocus) (uploading ? parts.cancel : retryable ? parts.retry : parts.remove).focus();
    }
  }

  buildItem(upload) {
    const name = upload.name;
    const isImage = upload.file.type.startsWith("image/");
    if (isImage) upload.previewUrl = URL.createObjectURL(upload.file);
    const preview = isImage
      ? h("img", { class: "preview", src: upload.previewUrl, alt: "", width: 48, height: 48 })
      : h("span", { class: "preview file-glyph", "aria-hidden": "true" }, extension(name));
    const progress = h("progress", { max: 100, value: 0, "aria-label": `Upload of ${name}` });
    const status = h("span", { class: "upload-status" });
    const draft = this.draft();
    const cancel = h(
      "button",
      { type: "button", class: "small", "aria-label": `Cancel upload of ${name}`, onclick: () => upload.cancel() },
      "Cancel",
    );
    const retry = h(
      "button",
      { type: "button", class: "small", hidden: true, "aria-label": `Retry upload of ${name}`, onclick: () => upload.retry() },
      "Retry",
    );
    const remove = h(
      "button",
      { type: "button", class: "small", hidden: true, "aria-label": `Remove ${name}`, onclick: () => this.forget(draft, upload) },
      "Remove",
    );
    const li = h(
      "li",
      { class: "pending-item" },
      preview,
      h(
        "div",
        { class: "pending-meta" },
        h("span", { class: "pending-name", title: name }, name),
        h("span", { class: "pending-size" }, formatSize(upload.file.size)),
        progress,
        status,
      ),
      cancel,
      retry,
      remove,
    );
    li.upload = { progress, status, cancel, retry, remove };
    return li;
  }

  // ----- sending -----

  currentBlocker(draft) {
    if (!this.channel) return "Pick a channel to write in.";
    if (this.channel.archived) return "This channel is archived: it is read-only.";
    if (!this.channel.joined) return `Join #${this.channel.name} to post in it.`;
    const uploading = draft.uploads.filter((u) => u.state === "uploading").length;
    if (uploading) return `Waiting for ${uploading} ${uploading === 1 ? "upload" : "uploads"} to finish.`;
    if (draft.uploads.some((u) => u.state === "failed")) return "Retry or remove the files that failed before sending.";
    if (!draft.text.trim() && draft.uploads.length === 0) return "empty";
    return null;
  }

  update() {
    const draft = this.draft();
    const blocker = draft ? this.currentBlocker(draft) : "Pick a channel to write in.";
    this.sendButton.disabled = blocker !== null;
    const text = blocker === "empty" ? "" : blocker || "";
    if (text !== this.blocker) {
      this.blocker = text;
      this.hintEl.textContent = text;
    }
  }

  /** Snapshot what is in the composer, empty it, and queue the snapshot. */
  submit() {
    const draft = this.draft();
    if (!draft || this.currentBlocker(draft) !== null) return;
    const outgoing = {
      text: draft.uploads.length && !draft.text.trim() ? "" : draft.text,
      uploads: draft.uploads,
      clientId: draft.clientId || newClientId(),
      sending: false,
      delivered: false,
    };
    draft.text = "";
    draft.uploads = [];
    draft.clientId = null;
    draft.error = "";
    draft.outbox.push(outgoing);
    this.textarea.value = "";
    this.autosize();
    for (const upload of outgoing.uploads) this.dropItem(upload);
    this.showError("");
    this.renderOutbox();
    this.onSubmitted();
    this.update();
    this.focus();
    this.pump(draft);
  }

  /** Send the draft's outbox in order, one message at a time (ids follow the order). */
  async pump(draft) {
    if (draft.outbox.some((o) => o.sending)) return;
    const outgoing = draft.outbox[0];
    if (!outgoing) return;
    outgoing.sending = true;
    this.renderOutbox();
    const body = { content: outgoing.text, client_id: outgoing.clientId };
    if (outgoing.uploads.length) body.attachment_ids = outgoing.uploads.map((u) => u.attachment.id);
    try {
      await this.sendMessage(draft.channelId, body);
    } catch (error) {
      outgoing.sending = false;
      if (error instanceof ApiError && error.status === 401) return; // logged out: the chat is gone
      this.restore(draft, error);
      return;
    }
    draft.outbox.shift();
    for (const upload of outgoing.uploads) if (upload.previewUrl) URL.revokeObjectURL(upload.previewUrl);
    this.renderOutbox();
    this.pump(draft);
  }

  /** A send failed: it and everything queued after it go back in the composer, before
   * what was written since; nothing is lost. */
  restore(draft, error) {
    const unsent = draft.outbox.splice(0);
    const untouched = !draft.text && draft.uploads.length === 0;
    const texts = [...unsent.map((o) => o.text), draft.text].filter((t) => t.trim());
    draft.text = texts.join("\n");
    draft.uploads = [...unsent.flatMap((o) => o.uploads), ...draft.uploads];
    // The same message again keeps its client_id: if the server did store it, the retry
    // gets that message back instead of a second copy.
    draft.clientId = untouched && unsent.length === 1 ? unsent[0].clientId : null;
    const reason = error instanceof ApiError ? error.message : "The message could not be sent.";
    draft.error = `Not sent: ${reason}`;
    if (this.draft() === draft) {
      const focused = document.activeElement === this.textarea;
      this.setChannel(this.channel);
      if (focused) this.textarea.focus();
    }
    this.announce(draft.error);
  }

  /** A message of mine came in (live or as the POST's answer): its outbox row goes. */
  delivered(message) {
    const draft = this.drafts.get(message.channel_id);
    const outgoing = draft && draft.outbox.find((o) => o.clientId === message.client_id);
    if (!outgoing || outgoing.delivered) return;
    outgoing.delivered = true;
    if (this.draft() === draft) this.renderOutbox();
  }

  renderOutbox() {
    const draft = this.draft();
    const waiting = draft ? draft.outbox.filter((o) => !o.delivered) : [];
    this.outboxList.replaceChildren(...waiting.map((o) => this.outboxRow(o)));
    this.outboxList.hidden = waiting.length === 0;
  }

  outboxRow(outgoing) {
    const files = outgoing.uploads.map((u) => h("li", {}, u.name));
    return h(
      "li",
      { class: "message mine outgoing" },
      h(
        "div",
        { class: "message-meta" },
        h("span", { class: "author" }, this.authorName),
        " ",
        h("span", { class: "sending" }, outgoing.sending ? "Sending…" : "Waiting to send…"),
      ),
      outgoing.text ? h("p", { class: "content" }, outgoing.text) : null,
      files.length ? h("ul", { class: "outgoing-files", "aria-label": "Files" }, files) : null,
    );
  }

  showError(text) {
    this.errorEl.textContent = text;
    this.errorEl.hidden = !text;
  }

  announce(text) {
    this.liveEl.textContent = text;
  }

  autosize() {
    // CSSOM writes are allowed by the style-src CSP; style attributes in markup are not.
    this.textarea.style.height = "auto";
    this.textarea.style.height = `${Math.min(this.textarea.scrollHeight, 200)}px`;
  }
}

/** A failure the connection coming back may cure. */
function isConnectionError(error) {
  return Boolean(error) && (error.status === 0 || error.status >= 502 || error.code === "storage_unavailable");
}

function extension(name) {
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 ? name.slice(dot + 1, dot + 5).toUpperCase() : "";
  return ext || "FILE";
}
