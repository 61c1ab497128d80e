// Who is around: presence dots and the member panel, the typing line, and this tab's own
// typing and idleness, all fed by the live socket's frames (it listens to them itself).

import { api } from "./api.js";
import { $ } from "./dom.js";
import { MemberPanel } from "./members.js";
import { IdleWatch, PresenceStore } from "./presence.js";
import { TypingLine, sendTypingFrom } from "./typing.js";

/** @param {import("./socket.js").LiveSocket} socket opened with ?presence=1 */
export function setUpAwareness(socket) {
  const presence = new PresenceStore();
  const typing = new TypingLine($("#typing-line"));
  const panel = new MemberPanel(
    {
      chat: $("#chat-view"),
      panel: $("#member-panel"),
      toggle: $("#members-toggle"),
      closeButton: $("#member-panel-close"),
      title: $("#member-panel-title"),
      summary: $("#member-summary"),
      list: $("#member-list"),
      error: $("#member-error"),
    },
    { presence, load: async (channelId) => (await api.channelMembers(channelId)).members },
  );
  const idle = new IdleWatch((frame) => socket.send(frame));
  let channel = null; // the open channel: {id, name, joined}
  let meId = null;

  sendTypingFrom($("#message-input"), {
    channelId: () => (channel && channel.joined ? channel.id : null),
    send: (frame) => socket.send(frame),
  });

  const handlers = {
    hello: (frame) => {
      presence.replace(frame.presence);
      idle.reconnected();
    },
    "presence.snapshot": (frame) => presence.replace(frame.presence),
    "presence.updated": (frame) => presence.set(frame.user_id, frame.status),
    typing: (frame) => typing.typed(frame),
    "message.created": (frame) => typing.stopped(frame.channel_id, frame.message?.author?.id),
    "channel.member_added": (frame) => panel.membershipChanged(frame.channel_id),
    "channel.member_removed": (frame) => panel.membershipChanged(frame.channel_id),
  };
  socket.addEventListener("frame", (event) => {
    const handler = handlers[event.detail.type];
    if (handler && meId !== null) handler(event.detail);
  });

  return {
    presence,
    /** Logged in as this user (null: logged out). */
    setMe(user) {
      meId = user ? user.id : null;
      typing.meId = meId;
      if (user) {
        idle.start();
      } else {
        idle.stop();
        presence.clear();
        typing.reset();
      }
    },
    /** The channel the room shows, or null. */
    setChannel(shown) {
      channel = shown;
      typing.setChannel(shown ? shown.id : null);
      panel.setChannel(shown);
    },
  };
}
