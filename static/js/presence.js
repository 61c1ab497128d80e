// Presence: who is online, away or offline (from the socket's hello snapshot, then
// presence.snapshot and presence.updated frames; see docs/websocket.md), the dot that shows
// it (a shape per state and words for screen readers, never colour alone), and this tab's
// own idleness, told to the server after IDLE_MS without input.

import { h } from "./dom.js";

export const IDLE_MS = 5 * 60 * 1000;
export const STATUS_TEXT = { online: "Online", away: "Away", offline: "Offline" };
const INPUTS = ["keydown", "pointerdown", "pointermove", "wheel", "touchstart", "focus"];

/** Everyone's status; "change" events name the users whose status may have changed. */
export class PresenceStore extends EventTarget {
  constructor() {
    super();
    this.statuses = new Map();
  }

  status(userId) {
    return this.statuses.get(userId) || "offline";
  }

  /** A full snapshot: everyone not in it is offline. */
  replace(list) {
    const changed = new Set(this.statuses.keys());
    this.statuses.clear();
    for (const { user_id: userId, status } of list || []) {
      this.statuses.set(userId, status);
      changed.add(userId);
    }
    this.emit([...changed]);
  }

  set(userId, status) {
    if (this.status(userId) === status) return;
    if (status === "offline") this.statuses.delete(userId);
    else this.statuses.set(userId, status);
    this.emit([userId]);
  }

  clear() {
    this.replace([]);
  }

  emit(userIds) {
    this.dispatchEvent(new CustomEvent("change", { detail: { userIds } }));
  }
}

/** <span class="presence" data-status="…"> with a dot and its words (visually hidden). */
export function presenceDot(status) {
  const el = h(
    "span",
    { class: "presence" },
    h("span", { class: "presence-dot", "aria-hidden": "true" }),
    h("span", { class: "visually-hidden presence-text" }),
  );
  setDot(el, status);
  return el;
}

export function setDot(el, status) {
  el.dataset.status = status;
  el.title = STATUS_TEXT[status];
  el.querySelector(".presence-text").textContent = `(${STATUS_TEXT[status].toLowerCase()})`;
}

/** Says "away" over the socket after IDLE_MS without input here, "online" at the next. */
export class IdleWatch {
  /** @param {(frame: object) => boolean} send the socket's send */
  constructor(send, idleMs = IDLE_MS) {
    this.send = send;
    this.idleMs = idleMs;
    this.idle = false;
    this.timer = null;
    this.lastReset = 0;
    this.onInput = () => this.active();
  }

  start() {
    for (const type of INPUTS) window.addEventListener(type, this.onInput, { capture: true, passive: true });
    this.idle = false;
    this.arm();
  }

  stop() {
    for (const type of INPUTS) window.removeEventListener(type, this.onInput, { capture: true });
    clearTimeout(this.timer);
    this.timer = null;
  }

  arm() {
    clearTimeout(this.timer);
    this.lastReset = Date.now();
    this.timer = setTimeout(() => {
      this.idle = true;
      this.send({ type: "presence", status: "away" });
    }, this.idleMs);
  }

  active() {
    if (this.idle) {
      this.idle = false;
      this.send({ type: "presence", status: "online" });
      this.arm();
    } else if (Date.now() - this.lastReset > 1000) {
      this.arm(); // pointer moves come often: the timer is moved at most once a second
    }
  }

  /** A new socket starts online on the server: repeat that this tab is idle. */
  reconnected() {
    if (this.idle) this.send({ type: "presence", status: "away" });
  }
}
