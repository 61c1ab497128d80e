// The message list: history pages, live inserts in id order, edits and deletes, and where
// the reader is in it (pinned to the newest message, or reading back with a way to jump).
// Everything a user wrote (text, names, filenames, link titles) goes in as text nodes.

import { actionBar, allowedActions, editInPlace, setUpLongPress } from "./actions.js";
import { imageOf, renderAttachment } from "./attachments.js";
import { h, safeUrl } from "./dom.js";
import { formatClock, fullTime } from "./format.js";
import { renderMarkup } from "./markup.js";
import { decorate as decorateRow } from "./timeline.js";
import { changedReactions, keepMine, renderReactions } from "./reactions.js";

const NEAR_BOTTOM = 80;
const NEAR_TOP = 300; // reading this close to the oldest message shown fetches older ones
const TOP_SETTLE_MS = 150;
const RELABEL_MS = 60_000;

function renderLinks(links) {
  const items = [];
  for (const link of links || []) {
    const href = safeUrl(link.url);
    if (!href) continue;
    const host = new URL(href).host;
    items.push(
      h(
        "li",
        {},
        h("a", { href, target: "_blank", rel: "noopener noreferrer nofollow ugc" }, link.title || href),
        link.title ? h("span", { class: "link-host" }, ` ${host}`) : null,
      ),
    );
  }
  return items.length ? h("ul", { class: "links", "aria-label": "Links" }, items) : null;
}

export function renderMessage(message, { meId, canModerate = false, readOnly = false, onOpenImage, actions = null }) {
  const author = message.author || {};
  const attachments = (message.attachments || [])
    .map((a) => renderAttachment(a, onOpenImage))
    .filter(Boolean);
  return h(
    "li",
    { class: author.id === meId ? "message mine" : "message", id: `message-${message.id}`, dataset: { id: message.id } },
    h(
      "div",
      { class: "message-meta" },
      h("span", { class: "author" }, author.display_name || author.username || "someone"),
      " ",
      h("time", { datetime: message.created_at, title: fullTime(message.created_at) }, formatClock(message.created_at)),
      message.edited_at ? h("span", { class: "edited" }, " (edited)") : null,
    ),
    message.content ? h("div", { class: "content" }, renderMarkup(message.content)) : null,
    attachments.length ? h("div", { class: "attachments" }, attachments) : null,
    renderLinks(message.links),
    renderReactions(message, actions && !readOnly ? actions.toggleReaction : null),
    actions ? actionBar(message, allowedActions(message, { meId, canModerate, readOnly }), actions) : null,
  );
}

/** The "New messages" line, at the top of a row (below its day heading, if any). */
function addUnreadLine(row) {
  const line = h("div", { class: "unread-line" }, h("span", {}, "New messages"));
  const heading = row.querySelector(":scope > .day-divider");
  if (heading) heading.after(line);
  else row.prepend(line);
}

export class MessageList {
  /** @param {{scroller: HTMLElement, list: HTMLOListElement, olderButton: HTMLButtonElement,
   *           jumpButton: HTMLButtonElement, empty: HTMLElement, onOpenImage: Function,
   *           onNearTop: Function, actions: {save, remove, copyLink}}} parts save(id, content)
   *           resolves to the edited message; remove(id) asks and deletes;
   *           copyLink(message, button); onNearTop() is called when the reader scrolls to
   *           the oldest message shown while there are older ones */
  constructor(parts) {
    Object.assign(this, parts);
    this.meId = null;
    this.canModerate = false; // a workspace owner or admin: may delete others' messages
    this.readOnly = false; // an archived channel, or one not joined: nothing to change
    this.rows = new Map(); // message id -> <li>
    this.data = new Map(); // message id -> the message as last known
    this.editing = null; // the id of the message being edited in place
    this.hasMore = false;
    this.unseen = 0; // messages that arrived while the reader was reading back
    this.topTimer = null;
    this.firstUnreadId = null; // the message the "New messages" line is on
    setUpLongPress(this.list);
    // Pinned to the newest message while the reader is there: when the log shrinks (the
    // composer grows with file cards or lines) it stays at the bottom instead of letting
    // the newest message slide out of view. Only the reader's scrolling unpins it: when the
    // log changes height, the browser may scroll it on its own (scroll anchoring, clamping)
    // and that scroll event comes before the ResizeObserver's turn. Measured against the
    // new height it looks like the reader left the bottom (the composer just grew by the
    // distance), so a scroll at a height the observer has not seen yet is left to it.
    this.pinned = true;
    this.observedHeight = this.scroller.clientHeight;
    this.scroller.addEventListener("scroll", () => {
      // Once the reader stays near the top a moment: not for a fling through it.
      clearTimeout(this.topTimer);
      if (this.nearTop()) this.topTimer = setTimeout(() => this.nearTop() && this.onNearTop(), TOP_SETTLE_MS);
      if (this.scroller.clientHeight !== this.observedHeight) return; // resized: the observer decides
      this.pinned = this.distanceFromBottom() < NEAR_BOTTOM;
      this.showJump();
    });
    new ResizeObserver(() => {
      this.observedHeight = this.scroller.clientHeight;
      if (this.pinned) this.toBottom();
    }).observe(this.scroller);
    // "Today" becomes "Yesterday" at midnight, for a log left open.
    setInterval(() => this.relabel(), RELABEL_MS);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.relabel();
    });
    this.jumpButton.addEventListener("click", () => {
      this.toBottom();
      this.scroller.focus({ preventScroll: true }); // the button is gone: the keyboard stays in the log
    });
  }

  /** Reading the oldest messages shown, with older ones to fetch. */
  nearTop() {
    return this.hasMore && this.rows.size > 0 && this.scroller.scrollTop < NEAR_TOP;
  }

  /** "Jump to latest" while the reader is away from the newest message, with what came since. */
  showJump() {
    if (this.pinned) this.unseen = 0;
    this.jumpButton.hidden = this.pinned || this.rows.size === 0;
    this.jumpButton.textContent = this.unseen ? `Jump to latest (${this.unseen} new)` : "Jump to latest";
  }

  distanceFromBottom() {
    return this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight;
  }

  toBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
    this.pinned = true;
    this.showJump();
  }

  /** Bring a message into view (the one just sent). */
  reveal(messageId) {
    const row = this.rows.get(messageId);
    if (!row) return;
    if (row === this.list.lastElementChild) this.toBottom();
    else row.scrollIntoView({ block: "nearest" });
  }

  reset() {
    this.rows.clear();
    this.data.clear();
    this.editing = null;
    this.firstUnreadId = null;
    this.list.replaceChildren();
    this.hasMore = false;
    this.unseen = 0;
    this.pinned = true;
    this.refresh();
    this.showJump();
  }

  get oldestId() {
    const first = this.list.firstElementChild;
    return first ? Number(first.dataset.id) : null;
  }

  get newestId() {
    const last = this.list.lastElementChild;
    return last ? Number(last.dataset.id) : 0;
  }

  /** Whether the newest message is in view (the reader has seen everything shown). */
  atBottom() {
    return this.pinned || this.distanceFromBottom() < NEAR_BOTTOM;
  }

  /** A "New messages" line above this message (a channel opened with unread ones). The view
   * stays at the newest message: reading back, the line shows where the news began. */
  markFirstUnread(messageId) {
    this.firstUnreadId = messageId;
    const row = this.rows.get(messageId);
    if (!row) return;
    const atBottom = this.pinned || this.distanceFromBottom() < NEAR_BOTTOM;
    addUnreadLine(row);
    if (atBottom) this.toBottom(); // the line pushed the newest message down
  }

  /** The first page (newest first, as the server sends it). */
  showLatest(messages, hasMore) {
    this.reset();
    this.bulk(() => messages.forEach((m) => this.insert(m)));
    this.hasMore = hasMore;
    this.refresh();
    this.toBottom();
  }

  /** An older page (newest first): keeps what the reader is looking at in place. */
  showOlder(messages, hasMore) {
    const fromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    this.bulk(() => messages.forEach((m) => this.insert(m)));
    this.hasMore = hasMore;
    this.refresh();
    this.scroller.scrollTop = this.scroller.scrollHeight - fromBottom;
  }

  /** A live or caught-up message; returns true when it was not shown yet. */
  upsert(message) {
    const atBottom = this.pinned || this.distanceFromBottom() < NEAR_BOTTOM;
    const added = this.insert(message);
    this.refresh();
    if (atBottom) this.toBottom();
    else if (added && message.author?.id !== this.meId) {
      this.unseen += 1;
      this.showJump();
    }
    return added;
  }

  /** A page of history is not news: screen readers should not read it out as live. */
  bulk(fn) {
    this.scroller.setAttribute("aria-busy", "true");
    try {
      fn();
    } finally {
      // After this task: the log's additions are settled by then.
      setTimeout(() => this.scroller.removeAttribute("aria-busy"), 0);
    }
  }

  /** An edited message, if it is shown (an event's reactions say nothing of mine). */
  replace(message) {
    const known = this.data.get(message.id);
    if (!this.rows.has(message.id)) return;
    this.insert(known ? { ...message, reactions: keepMine(message.reactions, known.reactions) } : message);
  }

  /** A reaction's new count on a shown message ({messageId, emoji, count, mine?}). */
  applyReaction(change) {
    const known = this.data.get(change.messageId);
    if (!known || !this.rows.has(change.messageId)) return;
    this.insert({ ...known, reactions: changedReactions(known.reactions, change) });
  }

  /** Whether the shown channel takes changes; the rows show only what may be done. */
  setReadOnly(readOnly) {
    if (this.readOnly === readOnly) return;
    this.readOnly = readOnly;
    for (const id of [...this.rows.keys()]) this.insert(this.data.get(id));
  }

  remove(messageId) {
    const row = this.rows.get(messageId);
    if (!row) return;
    const hadFocus = row.contains(document.activeElement);
    const next = row.nextElementSibling;
    row.remove();
    if (next) this.decorate(next);
    this.rows.delete(messageId);
    this.data.delete(messageId);
    if (this.editing === messageId) this.editing = null;
    this.refresh();
    if (hadFocus) this.scroller.focus(); // keep the keyboard in the log
  }

  message(messageId) {
    return this.data.get(messageId) || null;
  }

  /** Edit a message of mine in place; live updates meanwhile wait until it closes. */
  edit(messageId) {
    const row = this.rows.get(messageId);
    const message = this.data.get(messageId);
    if (!row || !message || this.editing !== null) return;
    this.editing = messageId;
    row.classList.remove("actions-open");
    const save = async (content) => {
      const updated = await this.actions.save(messageId, content);
      if (updated) this.data.set(messageId, updated);
    };
    editInPlace(row, message, save, () => {
      if (this.editing !== messageId) return; // deleted meanwhile
      this.editing = null;
      const latest = this.data.get(messageId);
      if (!latest || !this.rows.has(messageId)) return;
      this.insert(latest);
      const again = this.rows.get(messageId).querySelector('[data-action="edit"]');
      if (again) again.focus();
    });
  }

  /** A message a link named: brought into view, marked, and given the focus. */
  highlight(messageId) {
    const row = this.rows.get(messageId);
    if (!row) return false;
    for (const other of this.list.querySelectorAll(".message.linked")) other.classList.remove("linked");
    row.classList.add("linked");
    row.tabIndex = -1;
    row.scrollIntoView({ block: "center" });
    this.pinned = this.distanceFromBottom() < NEAR_BOTTOM;
    this.showJump();
    row.focus({ preventScroll: true });
    return true;
  }

  insert(message) {
    this.data.set(message.id, message);
    if (this.editing === message.id && this.rows.has(message.id)) return false; // shown when the editor closes
    const row = renderMessage(message, {
      meId: this.meId,
      canModerate: this.canModerate,
      readOnly: this.readOnly,
      onOpenImage: this.onOpenImage,
      actions: this.actions,
    });
    if (message.id === this.firstUnreadId) addUnreadLine(row);
    const existing = this.rows.get(message.id);
    this.rows.set(message.id, row);
    if (existing) {
      // A re-render (an edit arriving live) must not take the keyboard focus away.
      const focused = existing.contains(document.activeElement) ? document.activeElement : null;
      if (existing.classList.contains("linked")) {
        row.classList.add("linked");
        row.tabIndex = -1;
      }
      existing.replaceWith(row);
      this.decorate(row);
      if (focused) {
        const action = focused.dataset.action;
        const again = action ? row.querySelector(`[data-action="${action}"]`) : null;
        if (again) again.focus();
        else if (focused === existing) row.focus();
      }
      return false;
    }
    // Ids increase: walk back from the newest to the first smaller id.
    let before = this.list.lastElementChild;
    while (before && Number(before.dataset.id) > message.id) before = before.previousElementSibling;
    if (before) before.after(row);
    else this.list.prepend(row);
    this.decorate(row);
    if (row.nextElementSibling) this.decorate(row.nextElementSibling);
    return true;
  }

  /** A row's day heading and grouping, from the row before it. */
  decorate(row) {
    const previous = row.previousElementSibling;
    decorateRow(row, this.data.get(Number(row.dataset.id)), previous ? this.data.get(Number(previous.dataset.id)) : null);
  }

  relabel() {
    for (const heading of this.list.querySelectorAll(":scope > li > .day-divider")) this.decorate(heading.parentElement);
  }

  /** The images shown, oldest first: what the viewer steps through. */
  images() {
    const found = [];
    for (const button of this.list.querySelectorAll(".image-open")) {
      const image = imageOf(button);
      if (image) found.push({ ...image, button });
    }
    return found;
  }

  refresh() {
    this.olderButton.hidden = !this.hasMore;
    this.empty.hidden = this.rows.size > 0;
  }
}
