// What can be done to a message: a small toolbar per message (shown on hover, on keyboard
// focus, and on a long press by touch), editing in place, deleting after a confirmation,
// and copying a link to it. The toolbar offers only what the server would allow; the
// server still decides, and its refusal is shown.

import { h } from "./dom.js";
import { openPicker } from "./reactions.js";

const LONG_PRESS_MS = 500;
const MOVE_TOLERANCE = 10;

/** The author edits; the author and workspace owners and admins delete. */
export function allowedActions(message, { meId, canModerate, readOnly = false }) {
  const mine = Boolean(message.author && message.author.id === meId);
  // Read-only (an archived channel, or one not joined): the server would refuse the rest.
  return { edit: mine && !readOnly, delete: (mine || canModerate) && !readOnly, react: !readOnly, link: true };
}

export function actionBar(message, allowed, handlers) {
  const who = (message.author && (message.author.display_name || message.author.username)) || "someone";
  const button = (label, onclick, extra = {}) =>
    h("button", { type: "button", class: "small", onclick, ...extra }, label);
  return h(
    "div",
    { class: "message-actions", role: "toolbar", "aria-label": `Message from ${who}` },
    allowed.edit ? button("Edit", () => handlers.edit(message.id), { dataset: { action: "edit" } }) : null,
    allowed.delete ? button("Delete", () => handlers.remove(message.id), { dataset: { action: "delete" } }) : null,
    allowed.react
      ? button("React", (event) => openPicker(event.currentTarget, (emoji) => handlers.react(message.id, emoji)), {
          dataset: { action: "react" },
          "aria-expanded": "false",
        })
      : null,
    button("Copy link", (event) => handlers.copyLink(message, event.currentTarget), { dataset: { action: "link" } }),
  );
}

/**
 * Replace a row's text by an editor. Enter saves, Escape cancels, Shift+Enter is a new line.
 * @param {HTMLElement} row the message's <li>
 * @param {object} message what it shows
 * @param {(content: string) => Promise<void>} save throws an Error whose message is shown
 * @param {() => void} done called when the editor closes (saved or cancelled)
 */
export function editInPlace(row, message, save, done) {
  const id = `edit-${message.id}`;
  const textarea = h("textarea", { id, rows: 2, "aria-describedby": `${id}-help` });
  textarea.value = message.content;
  const error = h("p", { class: "error", role: "alert", hidden: true });
  let busy = false;
  const submit = async () => {
    if (busy) return;
    busy = true;
    form.setAttribute("aria-busy", "true");
    error.hidden = true;
    try {
      await save(textarea.value);
      done();
    } catch (exc) {
      error.textContent = `Not saved: ${exc.message || "the server refused it."}`;
      error.hidden = false;
      textarea.focus();
    } finally {
      busy = false;
      form.removeAttribute("aria-busy");
    }
  };
  const form = h(
    "form",
    {
      class: "edit-form",
      novalidate: true,
      onsubmit: (event) => {
        event.preventDefault();
        submit();
      },
    },
    h("label", { for: id, class: "visually-hidden" }, "Edit message"),
    textarea,
    h("p", { id: `${id}-help`, class: "help" }, "Enter saves, Escape cancels, Shift+Enter starts a new line."),
    error,
    h(
      "div",
      { class: "edit-buttons" },
      h("button", { type: "submit", class: "primary small" }, "Save"),
      h("button", { type: "button", class: "small", onclick: () => done() }, "Cancel"),
    ),
  );
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      done();
    }
  });
  row.classList.add("editing");
  const content = row.querySelector(":scope > .content");
  if (content) content.replaceWith(form);
  else row.querySelector(":scope > .message-meta").after(form);
  textarea.focus();
  textarea.setSelectionRange(textarea.value.length, textarea.value.length);
}

/** A long press on a message (touch) opens its toolbar; a tap elsewhere closes it. */
export function setUpLongPress(list) {
  let timer = null;
  let start = null;
  let pressed = false;
  const cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  const closeAll = (except) => {
    for (const row of list.querySelectorAll(".message.actions-open")) if (row !== except) row.classList.remove("actions-open");
  };
  list.addEventListener("pointerdown", (event) => {
    pressed = false;
    const row = event.target.closest(".message");
    if (event.pointerType !== "touch") return;
    if (!row || !row.querySelector(".message-actions")) {
      closeAll(null);
      return;
    }
    if (!row.classList.contains("actions-open")) closeAll(null);
    start = { x: event.clientX, y: event.clientY };
    cancel();
    timer = setTimeout(() => {
      timer = null;
      pressed = true;
      closeAll(row);
      row.classList.add("actions-open");
    }, LONG_PRESS_MS);
  });
  list.addEventListener("pointermove", (event) => {
    if (timer && start && Math.hypot(event.clientX - start.x, event.clientY - start.y) > MOVE_TOLERANCE) cancel();
  });
  for (const type of ["pointerup", "pointercancel"]) list.addEventListener(type, cancel);
  // The press itself must neither open the browser's menu nor click what it was on.
  list.addEventListener("contextmenu", (event) => {
    if (timer || pressed) event.preventDefault();
  });
  list.addEventListener(
    "click",
    (event) => {
      if (!pressed) return;
      pressed = false;
      if (!event.target.closest(".message-actions")) {
        event.preventDefault();
        event.stopPropagation();
      }
    },
    true,
  );
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") closeAll(null);
  });
  document.addEventListener("pointerdown", (event) => {
    if (!list.contains(event.target)) closeAll(null);
  });
}

/**
 * The delete confirmation: a modal dialog naming what goes. Resolves when it closes.
 * @param {object} parts the dialog and its parts (see index.html), and where the focus
 *   goes when the element that opened it is gone
 */
export function setUpDeleteDialog(parts) {
  const { dialog, preview, error, cancel, confirm, fallbackFocus } = parts;
  let pending = null; // {remove, opener}
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    const opener = pending && pending.opener;
    pending = null;
    // Back where it was; when that message is gone, to the log it was in.
    if (opener && opener.isConnected) opener.focus();
    else fallbackFocus.focus();
  });
  confirm.addEventListener("click", async () => {
    if (!pending) return;
    confirm.disabled = true;
    error.hidden = true;
    try {
      await pending.remove();
      dialog.close();
    } catch (exc) {
      error.textContent = `Not deleted: ${exc.message || "the server refused it."}`;
      error.hidden = false;
    } finally {
      confirm.disabled = false;
    }
  });
  /** @param {object} message @param {() => Promise<void>} remove */
  return function ask(message, remove) {
    pending = { remove, opener: document.activeElement };
    const files = (message.attachments || []).length;
    preview.textContent = message.content || (files ? `${files} ${files === 1 ? "file" : "files"}` : "");
    preview.hidden = !preview.textContent;
    error.hidden = true;
    dialog.showModal();
    cancel.focus(); // the safe choice first
  };
}

/** Put text on the clipboard; false when the browser refuses. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard API here (an insecure origin) or no permission: the old way.
    const field = h("textarea", { class: "visually-hidden", readonly: true, "aria-hidden": "true" });
    field.value = text;
    document.body.append(field);
    field.select();
    let copied = false;
    try {
      copied = document.execCommand("copy");
    } catch {
      copied = false;
    }
    field.remove();
    return copied;
  }
}

/** A link to a message: the client opens it, in its workspace and channel. */
export function messageLink(message) {
  const params = new URLSearchParams({
    workspace: String(message.workspace_id),
    channel: String(message.channel_id),
    message: String(message.id),
  });
  return `${location.origin}/#${params}`;
}

/** The {workspace, channel, message} ids a location's hash names, or null. */
export function parseMessageLink(hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const ids = ["workspace", "channel", "message"].map((key) => Number(params.get(key)));
  if (!ids.every((id) => Number.isSafeInteger(id) && id > 0)) return null;
  const [workspace, channel, message] = ids;
  return { workspace, channel, message };
}
