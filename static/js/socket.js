// The live connection: one WebSocket to /api/ws, reconnected with exponential backoff and
// jitter. Every (re)connect asks for what was missed with ?after_id=<highest id seen>; the
// server replays it and ends with resume.done (has_more: fetch the rest over REST).
//
// Events dispatched: "state" (detail: {state, retryAt}), "frame" (detail: the JSON frame),
// "ended" (detail: {code}: the server closed us for good, e.g. the session was logged out).

const BASE_DELAY = 500;
const MAX_DELAY = 15000;
const POLICY_VIOLATION = 1008; // credential revoked or removed: reconnecting cannot help

export class LiveSocket extends EventTarget {
  /** @param {{lastSeenId: () => number, canRetry?: () => Promise<boolean>}} options */
  constructor({ lastSeenId, canRetry = async () => true, path = "/api/ws" }) {
    super();
    this.lastSeenId = lastSeenId;
    this.canRetry = canRetry;
    this.path = path;
    this.state = "idle";
    this.retryAt = null;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.retrySoon = false;
    this.onOnline = () => this.retryNow();
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "bye");
    this.setState("idle");
  }

  /** Skip the rest of the backoff wait (the "Reconnect now" button, the "online" event). */
  retryNow() {
    if (this.stopped) return;
    if (this.state === "connecting") {
      this.retrySoon = true; // if this attempt fails, the next one goes at once
      return;
    }
    if (this.state !== "waiting") return;
    clearTimeout(this.timer);
    this.timer = null;
    this.connect();
  }

  send(frame) {
    if (this.ws && this.state === "open") {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  url() {
    const url = new URL(this.path, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const after = this.lastSeenId();
    if (after > 0) url.searchParams.set("after_id", String(after));
    return url.href;
  }

  connect() {
    this.setState("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "hello") {
        this.attempt = 0;
        this.setState("open");
      }
      this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return; // replaced or stopped on purpose
      this.ws = null;
      if (this.stopped) return;
      if (event.code === POLICY_VIOLATION) {
        this.stopped = true;
        this.setState("idle");
        this.dispatchEvent(new CustomEvent("ended", { detail: { code: event.code } }));
        return;
      }
      this.schedule();
    });
  }

  async schedule() {
    const delay = Math.min(MAX_DELAY, BASE_DELAY * 2 ** this.attempt);
    this.attempt += 1;
    const wait = this.retrySoon ? 0 : Math.round(delay * (0.5 + Math.random() / 2));
    this.retrySoon = false;
    this.retryAt = Date.now() + wait;
    this.setState("waiting");
    this.timer = setTimeout(async () => {
      this.timer = null;
      if (this.stopped) return;
      // A refused handshake looks like any other failure to a browser: ask over HTTP
      // whether we are still logged in before trying again.
      if (this.attempt > 1 && !(await this.canRetry())) {
        this.stop();
        this.dispatchEvent(new CustomEvent("ended", { detail: { code: 0 } }));
        return;
      }
      if (!this.stopped && this.state === "waiting") this.connect();
    }, wait);
  }

  setState(state) {
    this.state = state;
    if (state !== "waiting") this.retryAt = null;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, retryAt: this.retryAt } }));
  }
}
