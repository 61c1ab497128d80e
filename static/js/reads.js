// Read state: the server keeps, per channel, the newest message I have read and what is left
// (unread_count, mention_count, in the channel list). What this tab shows is posted back,
// at most once per DELAY per channel and only forward; every tab hears channel.read.

import { ApiError, api } from "./api.js";

const DELAY = 500;
const RETRY_DELAY = 5000;
// As the server reads @username (echora_server/messages/mentions.py).
const MENTION = /(?<![\w@.-])@([A-Za-z0-9][A-Za-z0-9._-]{0,62})/g;

export function mentions(content, username) {
  if (!username || !content) return false;
  for (const match of String(content).matchAll(MENTION)) {
    const name = match[1].toLowerCase();
    if (name === username || name.replace(/[._-]+$/, "") === username) return true;
  }
  return false;
}

/** A channel's read fields from the server (the list, a POST answer, a channel.read frame),
 * unless they are behind what the channel already says. Returns whether they were taken. */
export function applyReadState(channel, state) {
  if (!channel || !state) return false;
  if ((state.last_read_message_id || 0) < (channel.last_read_message_id || 0)) return false;
  channel.last_read_message_id = state.last_read_message_id;
  channel.unread_count = state.unread_count;
  channel.mention_count = state.mention_count;
  return true;
}

/** A message someone else posted in a channel I am in, arriving live: one more unread. */
export function countArrival(channel, message, me) {
  if (!channel || !channel.joined || !me || message.author?.id === me.id) return false;
  if (message.id <= (channel.last_read_message_id || 0) || message.id <= (channel.countedId || 0)) return false;
  channel.countedId = message.id; // a replayed frame is not counted twice
  channel.unread_count = (channel.unread_count || 0) + 1;
  if (mentions(message.content, me.username)) channel.mention_count = (channel.mention_count || 0) + 1;
  return true;
}

/** Where the "New messages" line goes in a first page (newest first, as the server sends
 * it): before the oldest of the last unread_count messages of others after my position;
 * nowhere when that one is older than the page. */
export function firstUnreadId(page, channel, me) {
  const count = channel.unread_count || 0;
  if (!count || !me) return null;
  const after = channel.last_read_message_id || 0;
  const others = page.filter((m) => m.author?.id !== me.id && m.id > after).sort((a, b) => a.id - b.id);
  if (others.length < count) return null;
  return others[others.length - count].id;
}

export class ReadTracker {
  /** @param {(state) => void} onState called with the server's answer */
  constructor(onState) {
    this.onState = onState;
    this.pending = new Map(); // channel id -> the newest message id to post
    this.timer = null;
  }

  /** The reader has seen ``channel`` up to ``messageId``, its newest message: nothing is
   * unread there now (shown at once; the server's answer follows). Returns whether that
   * changed anything. */
  seen(channel, messageId) {
    if (!channel || !channel.joined || !messageId) return false;
    if (messageId <= (channel.last_read_message_id || 0)) return false;
    Object.assign(channel, { last_read_message_id: messageId, unread_count: 0, mention_count: 0 });
    this.pending.set(channel.id, messageId);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), DELAY);
    return true;
  }

  async flush() {
    this.timer = null;
    const batch = [...this.pending];
    this.pending.clear();
    for (const [channelId, messageId] of batch) {
      try {
        this.onState(await api.markRead(channelId, messageId));
      } catch (error) {
        // Deleted meanwhile, or the channel left: nothing to record.
        if (error instanceof ApiError && error.status === 404) continue;
        // Not saved (offline, the server busy): tried again a little later, unless a newer
        // position is waiting already. The hello after a reconnect reloads the true counts.
        console.warn("read state not saved", error);
        if (!this.pending.has(channelId)) this.pending.set(channelId, messageId);
        if (!this.timer) this.timer = setTimeout(() => this.flush(), RETRY_DELAY);
      }
    }
  }

  reset() {
    clearTimeout(this.timer);
    this.timer = null;
    this.pending.clear();
  }
}
