// The composer: the message text, files attached by button, drop or paste (uploaded at
// once, each with its own progress bar), and sending. Each channel keeps its own draft,
// so switching channels loses neither text nor uploads.

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
  constructor() {
    this.text = "";
    this.uploads = [];
    this.clientId = null; // kept across retries of one send, so a retry posts nothing twice
    this.sending = false;
  }
}

export class Composer {
  /**
   * @param {object} parts the form and its controls (see index.html)
   * @param {(channelId: number, body: object) => Promise<object>} send posts a message
   */
  constructor(parts, send) {
    Object.assign(this, parts);
    this.sendMessage = send;
    this.channel = null;
    this.drafts = new Map();
    this.items = new Map(); // upload key -> its <li>
    this.blocker = null;

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
    this.textarea.placeholder = channel ? `Message #${channel.name}` : "";
    const draft = this.draft();
    this.textarea.value = draft ? draft.text : "";
    this.autosize();
    this.items.clear();
    this.pendingList.replaceChildren();
    for (const upload of draft ? draft.uploads : []) this.renderUpload(upload);
    this.showError("");
    this.update();
  }

  draft(channelId = this.channel && this.channel.id) {
    if (!channelId) return null;
    let draft = this.drafts.get(channelId);
    if (!draft) {
      draft = new Draft();
      this.drafts.set(channelId, draft);
    }
    return draft;
  }

  focus() {
    if (!this.textarea.disabled) this.textarea.focus();
  }

  // ----- attachments -----

  addFiles(fileList) {
    const draft = this.draft();
    if (!draft || !this.channel.joined) return;
    for (const file of Array.from(fileList || [])) {
      const upload = new Upload(file, this.channel.id);
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
    if (this.draft() === draft) {
      this.renderUpload(upload);
      if (upload.state === "done") this.announce(`${upload.name} uploaded.`);
    }
    this.update();
  }

  forget(draft, upload) {
    upload.cancel();
    draft.uploads = draft.uploads.filter((u) => u !== upload);
    draft.clientId = null;
    if (upload.previewUrl) URL.revokeObjectURL(upload.previewUrl);
    const li = this.items.get(upload.key);
    if (li) {
      const focusWasInside = li.contains(document.activeElement);
      li.remove();
      this.items.delete(upload.key);
      if (focusWasInside) this.textarea.focus();
    }
    this.update();
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
    const uploading = upload.state === "uploading";
    if (parts.cancel.hidden === uploading) {
      const hadFocus = document.activeElement === parts.cancel;
      parts.cancel.hidden = !uploading;
      parts.remove.hidden = uploading;
      if (hadFocus) parts.remove.focus();
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
      remove,
    );
    li.upload = { progress, status, cancel, remove };
    return li;
  }

  // ----- sending -----

  currentBlocker(draft) {
    if (!this.channel) return "Pick a channel to write in.";
    if (!this.channel.joined) return `Join #${this.channel.name} to post in it.`;
    if (draft.sending) return "Sending…";
    const uploading = draft.uploads.filter((u) => u.state === "uploading").length;
    if (uploading) return `Waiting for ${uploading} ${uploading === 1 ? "upload" : "uploads"} to finish.`;
    if (draft.uploads.some((u) => u.state === "failed")) return "Remove the files that failed before sending.";
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

  async submit() {
    const draft = this.draft();
    if (!draft || this.currentBlocker(draft) !== null) return;
    const channelId = this.channel.id;
    const ids = draft.uploads.map((u) => u.attachment.id);
    const body = { content: draft.uploads.length && !draft.text.trim() ? "" : draft.text };
    draft.clientId ||= newClientId();
    body.client_id = draft.clientId;
    if (ids.length) body.attachment_ids = ids;
    draft.sending = true;
    this.showError("");
    this.update();
    try {
      await this.sendMessage(channelId, body);
      for (const upload of draft.uploads) if (upload.previewUrl) URL.revokeObjectURL(upload.previewUrl);
      this.drafts.delete(channelId);
      if (this.channel && this.channel.id === channelId) this.setChannel(this.channel);
    } catch (error) {
      const message = error instanceof ApiError ? error.message : "The message could not be sent.";
      if (this.channel && this.channel.id === channelId) this.showError(`Not sent: ${message}`);
    } finally {
      draft.sending = false;
      this.update();
    }
    this.focus();
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

function extension(name) {
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 ? name.slice(dot + 1, dot + 5).toUpperCase() : "";
  return ext || "FILE";
}
