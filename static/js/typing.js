// Typing: the line under the message log ("alice is typing…") from the socket's typing
// frames, and this tab's own typing frames while the person writes. The server passes on
// at most one per socket and channel every 2 s; a name goes away SHOW_MS after its last
// frame, or at once when that person's message arrives.

export const SEND_EVERY_MS = 2500;
export const SHOW_MS = 6000;

export function typingText(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return "several people are typing…";
}

export class TypingLine {
  /** @param {HTMLElement} line where the words go */
  constructor(line) {
    this.line = line;
    this.channelId = null;
    this.meId = null;
    this.typers = new Map(); // channel id -> Map(user id -> {name, timer})
  }

  setChannel(channelId) {
    this.channelId = channelId;
    this.render();
  }

  /** A typing frame: {channel_id, user_id, username}. */
  typed(frame) {
    if (frame.user_id === this.meId) return; // my other tabs
    let channel = this.typers.get(frame.channel_id);
    if (!channel) {
      channel = new Map();
      this.typers.set(frame.channel_id, channel);
    }
    const known = channel.get(frame.user_id);
    if (known) clearTimeout(known.timer);
    const timer = setTimeout(() => this.stopped(frame.channel_id, frame.user_id), SHOW_MS);
    channel.set(frame.user_id, { name: frame.username, timer });
    if (frame.channel_id === this.channelId) this.render();
  }

  /** That person's message arrived, or their time ran out. */
  stopped(channelId, userId) {
    const channel = this.typers.get(channelId);
    const known = channel && channel.get(userId);
    if (!known) return;
    clearTimeout(known.timer);
    channel.delete(userId);
    if (!channel.size) this.typers.delete(channelId);
    if (channelId === this.channelId) this.render();
  }

  reset() {
    for (const channel of this.typers.values()) for (const { timer } of channel.values()) clearTimeout(timer);
    this.typers.clear();
    this.render();
  }

  render() {
    const channel = this.typers.get(this.channelId);
    const names = channel ? [...channel.values()].map((t) => t.name) : [];
    const text = typingText(names);
    if (this.line.textContent !== text) this.line.textContent = text;
  }
}

/** Sends {"type": "typing"} while the textarea is written in, at most every SEND_EVERY_MS. */
export function sendTypingFrom(textarea, { channelId, send }) {
  let lastSent = 0;
  let lastChannel = null;
  textarea.addEventListener("input", () => {
    const id = channelId();
    if (!id || !textarea.value.trim()) return;
    const now = Date.now();
    if (id === lastChannel && now - lastSent < SEND_EVERY_MS) return;
    if (send({ type: "typing", channel_id: id })) {
      lastSent = now;
      lastChannel = id;
    }
  });
  // After a send the next keystroke is news again.
  textarea.form?.addEventListener("submit", () => {
    lastSent = 0;
  });
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) lastSent = 0;
  });
}
