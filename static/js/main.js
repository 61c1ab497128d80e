// Wiring: views, state, and what each server event does to them.

import { copyText, messageLink, parseMessageLink, setUpDeleteDialog } from "./actions.js";
import { ApiError, api, onUnauthorized } from "./api.js";
import { setUpAwareness } from "./awareness.js";
import { setUpBrowseDialog, setUpCreateDialog, setUpDirectDialog, setUpEditDialog } from "./channel_dialogs.js";
import { Composer } from "./composer.js";
import { showConnection } from "./connection.js";
import { $ } from "./dom.js";
import { setUpDrawer } from "./drawer.js";
import { setUpLogin } from "./login.js";
import { MessageList } from "./messages.js";
import { ReadTracker, applyReadState, countArrival, firstUnreadId } from "./reads.js";
import { Sidebar } from "./sidebar.js";
import { LiveSocket } from "./socket.js";
import { setUpTheme } from "./theme.js";
import { setUpViewer } from "./viewer.js";

const PAGE = 50;
const MAX_GAP_PAGES = 10;
const STORED_WORKSPACE = "echora.workspace";
const storedChannelKey = (workspaceId) => `echora.channel.${workspaceId}`;

const state = {
  me: null,
  workspaces: [],
  workspaceId: null,
  channels: [],
  dms: [], // my direct messages, as rooms (see roomOfDirect)
  channelId: null,
  lastSeenId: 0, // the highest message id seen anywhere: what a reconnect resumes after
  loading: null, // {channelId, buffered: []} while a channel's first page is on its way
  loadedChannelId: null, // the channel whose latest page is shown
  generation: 0, // bumped on every channel switch: late answers for another channel are dropped
};

const views = { boot: $("#boot-view"), login: $("#login-view"), chat: $("#chat-view") };

setUpTheme($("#theme-select"));
const drawer = setUpDrawer({
  chat: views.chat,
  drawer: $("#sidebar"),
  button: $("#menu-button"),
  closeButton: $("#drawer-close"),
  backdrop: $("#drawer-backdrop"),
  outside: [$(".topbar"), $("#room"), $("#member-panel")],
});

function show(name) {
  for (const [key, el] of Object.entries(views)) el.hidden = key !== name;
  updateTitle();
}

/** "(3) #general — Echora": the unread messages of my channels in this workspace first. */
function updateTitle() {
  const channel = views.chat.hidden ? null : currentChannel();
  const rooms = [...state.channels, ...state.dms];
  const unread = rooms.reduce((sum, c) => sum + (c.joined ? c.unread_count || 0 : 0), 0);
  const label = channel && channel.kind === "dm" ? channel.name : channel && `#${channel.name}`;
  const name = channel ? `${label} — Echora` : "Echora";
  document.title = unread ? `(${unread}) ${name}` : name;
}

const socket = new LiveSocket({
  path: "/api/ws?presence=1",
  lastSeenId: () => state.lastSeenId,
  canRetry: async () => {
    try {
      await api.me();
      return true;
    } catch (error) {
      return !(error instanceof ApiError && error.status === 401);
    }
  },
});
showConnection(socket);
const awareness = setUpAwareness(socket);

const openImage = setUpViewer(() => messages.images());
const confirmDelete = setUpDeleteDialog({
  dialog: $("#delete-dialog"),
  preview: $("#delete-preview"),
  error: $("#delete-error"),
  cancel: $("#delete-cancel"),
  confirm: $("#delete-confirm"),
  fallbackFocus: $("#messages"),
});
const messages = new MessageList({
  scroller: $("#messages"),
  list: $("#message-list"),
  olderButton: $("#load-older"),
  jumpButton: $("#jump-latest"),
  empty: $("#no-messages"),
  onOpenImage: openImage,
  onNearTop: () => loadOlder(),
  actions: {
    edit: (id) => messages.edit(id),
    save: (id, content) => api.editMessage(id, content),
    remove: (id) => {
      const message = messages.message(id);
      if (!message) return;
      confirmDelete(message, async () => {
        await api.deleteMessage(id);
        messages.remove(id); // the event may come later (or, for a cut socket, not at all)
      });
    },
    react: (id, emoji) => react(id, emoji, true),
    toggleReaction: (id, emoji, mine) => react(id, emoji, !mine),
    copyLink: async (message, button) => {
      const copied = await copyText(messageLink(message));
      announce(copied ? "Link copied." : "The link could not be copied.");
      if (button.isConnected) {
        button.textContent = copied ? "Link copied" : "Not copied";
        setTimeout(() => {
          if (button.isConnected) button.textContent = "Copy link";
        }, 2000);
      }
    },
  },
});

/** Add (or remove) my reaction; the answer's count shows at once, events bring others'. */
async function react(messageId, emoji, add) {
  try {
    if (add) {
      const answer = await api.react(messageId, emoji);
      messages.applyReaction({ messageId, emoji, count: answer.count, mine: true });
    } else {
      await api.unreact(messageId, emoji);
      // Unless the event was here first (it carries the count after the change).
      const current = messages.message(messageId)?.reactions?.find((r) => r.emoji === emoji);
      if (current?.mine) messages.applyReaction({ messageId, emoji, count: current.count - 1, mine: false });
    }
  } catch (error) {
    announce(`The reaction was not saved: ${error.message || "the server refused it."}`);
  }
}

function announce(text) {
  const live = $("#announcer");
  live.textContent = "";
  setTimeout(() => {
    live.textContent = text;
  }, 50); // a change the screen reader notices, even for the same words twice
}

const composer = new Composer(
  {
    form: $("#composer"),
    textarea: $("#message-input"),
    sendButton: $("#send"),
    attachButton: $("#attach"),
    fileInput: $("#file-input"),
    pendingList: $("#pending"),
    dropHint: $("#drop-hint"),
    outboxList: $("#outbox"),
    scroller: $("#messages"),
    hintEl: $("#composer-hint"),
    liveEl: $("#composer-live"),
    errorEl: $("#composer-error"),
  },
  async (channelId, body) => {
    const message = await api.postMessage(channelId, body);
    seen(message);
    composer.delivered(message);
    if (channelId === state.channelId) {
      messages.upsert(message);
      messages.reveal(message.id);
      checkRead();
    }
    return message;
  },
);

composer.onRefused = () => loadLimits(state.workspaceId);
composer.onSubmitted = () => messages.toBottom();

/** The workspace's upload limits, for the composer to judge files by before sending.
 * Unknown (null) when they cannot be read: the one-step upload, judged by the server. */
async function loadLimits(workspaceId) {
  if (!workspaceId) return;
  let limits = null;
  try {
    limits = await api.limits(workspaceId);
  } catch (error) {
    console.warn("limits unavailable", error);
  }
  if (workspaceId === state.workspaceId) composer.setLimits(limits);
}

const sidebar = new Sidebar(
  {
    workspaceSelect: $("#workspace-select"),
    myList: $("#my-channels"),
    dmList: $("#dm-list"),
    noDms: $("#no-dms"),
  },
  {
    selectWorkspace: (id) => openWorkspace(id),
    selectChannel: (id) => {
      drawer.close();
      return selectChannel(id);
    },
  },
);

async function joinChannel(id) {
  await api.joinChannel(id);
  await refreshChannels();
  await selectChannel(id);
}

const browseDialog = setUpBrowseDialog(
  {
    dialog: $("#browse-dialog"),
    search: $("#browse-search"),
    list: $("#browse-list"),
    empty: $("#browse-empty"),
    error: $("#browse-error"),
    close: $("#browse-close"),
  },
  {
    channels: () => state.channels,
    join: (id) => api.joinChannel(id),
    open: async (id) => {
      drawer.close();
      await refreshChannels();
      await selectChannel(id);
    },
  },
);
const createDialog = setUpCreateDialog(
  {
    dialog: $("#create-dialog"),
    form: $("#create-channel"),
    name: $("#channel-name"),
    topic: $("#channel-new-topic"),
    privateBox: $("#channel-private"),
    error: $("#create-channel-error"),
    cancel: $("#create-cancel"),
  },
  {
    create: async (name, topic, isPrivate) => {
      const channel = await api.createChannel(state.workspaceId, name, isPrivate, topic);
      drawer.close();
      await refreshChannels();
      await selectChannel(channel.id);
    },
  },
);
const directDialog = setUpDirectDialog(
  {
    dialog: $("#dm-dialog"),
    form: $("#dm-form"),
    search: $("#dm-search"),
    people: $("#dm-people"),
    error: $("#dm-error"),
    cancel: $("#dm-cancel"),
  },
  {
    members: async () => {
      const { members } = await api.workspaceMembers(state.workspaceId);
      return members.filter((m) => m.id !== state.me?.id);
    },
    start: async (userIds) => {
      const dm = await api.openDirectMessage(state.workspaceId, userIds);
      drawer.close();
      await refreshChannels();
      await selectChannel(dm.id);
    },
  },
);
const editDialog = setUpEditDialog(
  {
    dialog: $("#edit-dialog"),
    form: $("#edit-form"),
    name: $("#edit-name"),
    topic: $("#edit-topic"),
    archivedNote: $("#edit-archived"),
    error: $("#edit-error"),
    cancel: $("#edit-cancel"),
    save: $("#edit-save"),
    manage: $("#edit-manage"),
    archive: $("#edit-archive"),
    remove: $("#edit-delete"),
    confirmBox: $("#edit-delete-confirm"),
    confirmText: $("#edit-delete-text"),
    confirmYes: $("#edit-delete-yes"),
  },
  {
    save: async (channel, changes) => upsertChannel(await api.updateChannel(channel.id, changes)),
    archive: async (channel, archived) => upsertChannel(await api.archiveChannel(channel.id, archived)),
    remove: async (channel) => {
      await api.deleteChannel(channel.id);
      state.channels = state.channels.filter((c) => c.id !== channel.id);
      announce(`#${channel.name} was deleted.`);
      await afterChannelGone(channel.id);
    },
  },
);
$("#browse-channels").addEventListener("click", () => browseDialog.open());
$("#new-channel").addEventListener("click", () => createDialog.open());
$("#new-dm").addEventListener("click", () => directDialog.open());
$("#edit-channel").addEventListener("click", () => {
  const channel = currentChannel();
  if (channel && channel.kind !== "dm") editDialog.open(channel, allowed(channel));
});
$("#leave-channel").addEventListener("click", async () => {
  const channel = currentChannel();
  if (!channel) return;
  try {
    await api.leaveChannel(channel.id);
    await refreshChannels();
    afterChannelGone(channel.id);
    announce(`You left #${channel.name}.`);
  } catch (error) {
    showRoomError(`Could not leave: ${error.message}`);
  }
});

const login = setUpLogin(() => enterChat());

function findRoom(id) {
  return state.channels.find((c) => c.id === id) || state.dms.find((dm) => dm.id === id) || null;
}

function currentChannel() {
  return findRoom(state.channelId);
}

function isManager() {
  const workspace = state.workspaces.find((w) => w.id === state.workspaceId);
  return Boolean(workspace && (workspace.role === "owner" || workspace.role === "admin"));
}

/** A direct message shown like a channel: named after the others in it. */
function roomOfDirect(dm) {
  const others = dm.members.filter((m) => m.id !== state.me?.id);
  const names = (others.length ? others : dm.members).map((m) => m.display_name || m.username);
  return { ...dm, kind: "dm", name: names.join(", "), topic: "", private: true, joined: true, archived: false };
}

function seen(message) {
  if (message && message.id > state.lastSeenId) state.lastSeenId = message.id;
}

function renderSidebar() {
  sidebar.setChannels(state.channels, state.dms, state.channelId);
  browseDialog.refresh();
  updateTitle();
}

const byName = (a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()) || a.id - b.id;

/** A channel as an event or an answer shows it now; whether I am in it is kept. */
function upsertChannel(channel) {
  if (channel.workspace_id !== state.workspaceId || channel.kind === "dm") return;
  const known = state.channels.find((c) => c.id === channel.id);
  const joined = channel.joined ?? (known ? known.joined : false);
  const updated = { ...known, ...channel, joined }; // its read state (unread counts) kept
  state.channels = [...state.channels.filter((c) => c.id !== channel.id), updated].sort(byName);
  if (channel.id === state.channelId) showRoomHeader(currentChannel());
  renderSidebar();
}

/** The shown channel was left or deleted: show another of mine, or none. */
function afterChannelGone(channelId) {
  if (channelId !== state.channelId) return renderSidebar();
  const next = state.channels.find((c) => c.joined) || state.dms[0];
  return next ? selectChannel(next.id) : selectNothing();
}

const reads = new ReadTracker((answer) => readStateChanged(answer));

function readStateChanged(frame) {
  if (applyReadState(findRoom(frame.channel_id), frame)) renderSidebar();
}

/** The newest message of the channel shown is in view in a visible tab: it is read. */
function checkRead() {
  const channel = currentChannel();
  if (!channel || state.loadedChannelId !== channel.id || document.visibilityState !== "visible") return;
  if (messages.atBottom() && reads.seen(channel, messages.newestId)) renderSidebar();
}

$("#messages").addEventListener("scroll", checkRead, { passive: true });
document.addEventListener("visibilitychange", checkRead);
window.addEventListener("focus", checkRead);

// ----- entering and leaving -----

async function boot() {
  try {
    await enterChat();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      leaveChat();
      return;
    }
    views.boot.querySelector("p").textContent = `The server cannot be reached (${error.message}). Reload to try again.`;
    views.boot.removeAttribute("aria-busy");
  }
}

/** The room is busy (aria-busy) until its channel's first page is shown. */
function roomBusy(on) {
  const room = $("#room");
  if (on) room.setAttribute("aria-busy", "true");
  else room.removeAttribute("aria-busy");
}

async function enterChat() {
  roomBusy(true);
  const me = await api.me();
  state.me = me.user;
  state.workspaces = me.workspaces;
  messages.meId = me.user.id;
  composer.authorName = me.user.display_name || me.user.username;
  $("#me-name").textContent = me.user.display_name || me.user.username;
  show("chat");
  awareness.setMe(me.user);
  socket.start();
  const stored = Number(localStorage.getItem(STORED_WORKSPACE));
  const workspace = me.workspaces.find((w) => w.id === stored) || me.workspaces[0];
  sidebar.setWorkspaces(me.workspaces, workspace ? workspace.id : null);
  try {
    const link = parseMessageLink(location.hash);
    if (link && me.workspaces.some((w) => w.id === link.workspace)) await followLink(link);
    else if (workspace) await openWorkspace(workspace.id);
    else selectNothing();
  } catch (error) {
    showRoomError(`Channels could not be loaded: ${error.message}`); // the chat view is up already
  } finally {
    roomBusy(false);
  }
}

/** A copied message link: its workspace, its channel, older pages until it shows. */
async function followLink(link) {
  if (state.workspaceId !== link.workspace) {
    if (!state.workspaces.some((w) => w.id === link.workspace)) return;
    sidebar.setWorkspaces(state.workspaces, link.workspace);
    localStorage.setItem(storedChannelKey(link.workspace), String(link.channel));
    await openWorkspace(link.workspace);
  }
  const channel = findRoom(link.channel);
  if (!channel) {
    showRoomError("The linked message is in a channel you cannot see.");
    return;
  }
  if (state.channelId !== link.channel || state.loadedChannelId !== link.channel) await selectChannel(link.channel);
  const generation = state.generation;
  for (let pages = 0; !messages.highlight(link.message); pages += 1) {
    if (!messages.hasMore || pages === MAX_GAP_PAGES) {
      showRoomError("The linked message is not there any more.");
      return;
    }
    const page = await api.messages(link.channel, { before: messages.oldestId, limit: PAGE });
    if (generation !== state.generation) return;
    messages.showOlder(page.messages, page.has_more);
  }
}

window.addEventListener("hashchange", () => {
  const link = parseMessageLink(location.hash);
  if (link && state.me) followLink(link).catch((error) => showRoomError(`The link could not be opened: ${error.message}`));
});

function leaveChat(message = "") {
  socket.stop();
  awareness.setMe(null);
  Object.assign(state, { me: null, workspaces: [], workspaceId: null, channels: [], dms: [], channelId: null });
  reads.reset();
  state.lastSeenId = 0;
  state.loading = null;
  state.loadedChannelId = null;
  state.generation += 1;
  for (const draft of composer.drafts.values()) for (const upload of draft.uploads) upload.cancel();
  composer.drafts.clear();
  composer.setChannel(null);
  messages.reset();
  show("login");
  login.show(message);
}

$("#logout").addEventListener("click", async () => {
  try {
    await api.logout();
  } finally {
    leaveChat();
  }
});

socket.addEventListener("ended", () => leaveChat("Your session ended; log in again."));
onUnauthorized(() => {
  if (state.me) leaveChat("Your session ended; log in again.");
});

// ----- workspaces and channels -----

async function openWorkspace(workspaceId) {
  state.workspaceId = workspaceId;
  const workspace = state.workspaces.find((w) => w.id === workspaceId);
  messages.canModerate = Boolean(workspace && (workspace.role === "owner" || workspace.role === "admin"));
  localStorage.setItem(STORED_WORKSPACE, String(workspaceId));
  state.channels = [];
  state.dms = [];
  composer.setLimits(null);
  await Promise.all([refreshChannels(), loadLimits(workspaceId)]);
  const stored = Number(localStorage.getItem(storedChannelKey(workspaceId)));
  const joined = [...state.channels.filter((c) => c.joined), ...state.dms];
  const channel = joined.find((c) => c.id === stored) || joined[0];
  if (channel) await selectChannel(channel.id);
  else selectNothing();
}

// An unread message edited (a mention added or taken out) or deleted changes counts only the
// server can tell: the lists are asked again, once for a burst of such events.
const RECOUNT_DELAY = 700;
let recountTimer = null;

function recountIfUnread(channelId, messageId) {
  const room = findRoom(channelId);
  if (!room || !room.joined || !room.unread_count) return;
  if (messageId <= (room.last_read_message_id || 0)) return;
  if (recountTimer) return;
  recountTimer = setTimeout(() => {
    recountTimer = null;
    refreshChannels().catch(() => {});
  }, RECOUNT_DELAY);
}

async function refreshChannels() {
  const workspaceId = state.workspaceId;
  const [{ channels }, { dms }] = await Promise.all([api.channels(workspaceId), api.directMessages(workspaceId)]);
  if (workspaceId !== state.workspaceId) return;
  state.channels = channels;
  state.dms = dms.map(roomOfDirect);
  renderSidebar();
}

function selectNothing() {
  state.channelId = null;
  state.loadedChannelId = null;
  state.generation += 1;
  $("#channel-title").textContent = "No channel";
  $("#channel-topic").textContent = "Create or join a channel to start.";
  for (const id of ["#join-channel", "#edit-channel", "#leave-channel", "#archived-note"]) $(id).hidden = true;
  messages.reset();
  composer.setChannel(null);
  awareness.setChannel(null);
  renderSidebar();
  roomBusy(false);
}

async function selectChannel(channelId) {
  const channel = findRoom(channelId);
  if (!channel) return selectNothing();
  const generation = ++state.generation;
  state.channelId = channelId;
  localStorage.setItem(storedChannelKey(state.workspaceId), String(channelId));
  showRoomHeader(channel);
  renderSidebar();
  awareness.setChannel(channel);
  messages.reset();
  state.loadedChannelId = null;
  state.loading = { channelId, buffered: [] };
  showRoomError("");
  roomBusy(true);
  try {
    const page = await api.messages(channelId, { limit: PAGE });
    if (generation !== state.generation) return;
    page.messages.forEach(seen);
    messages.showLatest(page.messages, page.has_more);
    const firstUnread = firstUnreadId(page.messages, channel, state.me);
    if (firstUnread) messages.markFirstUnread(firstUnread);
    state.loadedChannelId = channelId;
    for (const { message, edit } of state.loading.buffered) applyLive(message, edit);
    checkRead();
  } catch (error) {
    if (generation === state.generation) showRoomError(`Messages could not be loaded: ${error.message}`);
    return;
  } finally {
    if (generation === state.generation) {
      state.loading = null;
      roomBusy(false);
    }
  }
  composer.focus();
}

/** What I may do to a channel, as the server decides (channels/lifecycle.py): rename it as a
 * member of a public one or an owner or admin (in a private one, whom only its members see);
 * archive it as an owner, admin or its creator in it; delete it as an owner or admin. */
function allowed(channel) {
  if (channel.kind === "dm") return { rename: false, archive: false, remove: false };
  const manager = isManager();
  return {
    rename: !channel.archived && (manager || (channel.joined && !channel.private)),
    archive: manager || (channel.joined && channel.created_by === state.me?.id),
    remove: manager,
  };
}

/** The room's header (and what the composer allows) for the shown channel, as it is now. */
function showRoomHeader(channel) {
  const direct = channel.kind === "dm";
  const title = direct ? channel.name : `#${channel.name}`;
  $("#channel-title").textContent = title;
  $("#channel-topic").textContent = channel.topic || "";
  $("#archived-note").hidden = !channel.archived;
  $("#join-channel").hidden = channel.joined || channel.archived;
  const may = allowed(channel);
  $("#edit-channel").hidden = !(may.rename || may.archive || may.remove);
  $("#edit-channel").setAttribute("aria-label", `Edit ${title}`);
  $("#leave-channel").hidden = direct || !channel.joined;
  $("#leave-channel").setAttribute("aria-label", `Leave ${title}`);
  updateTitle();
  const previous = composer.channel;
  const writable = { ...channel, joined: channel.joined && !channel.archived };
  messages.setReadOnly(!writable.joined);
  if (!previous || previous.id !== channel.id || previous.joined !== writable.joined || previous.name !== channel.name) {
    composer.setChannel(writable);
  }
}

function showRoomError(text) {
  const el = $("#room-error");
  el.textContent = text;
  el.hidden = !text;
}

$("#join-channel").addEventListener("click", () => {
  const channel = currentChannel();
  if (channel) joinChannel(channel.id).catch((error) => showRoomError(`Could not join: ${error.message}`));
});

let loadingOlder = null; // the older page on its way, if any

/** The page before the oldest message shown: by the button, or by scrolling up to it. More
 * pages follow while the reader is still at the top (the page did not fill the view). */
function loadOlder() {
  if (loadingOlder || !messages.hasMore || !state.channelId) return loadingOlder;
  const channelId = state.channelId;
  const generation = state.generation;
  const button = $("#load-older");
  const clicked = document.activeElement === button;
  button.disabled = true;
  loadingOlder = (async () => {
    let loaded = false;
    try {
      const page = await api.messages(channelId, { before: messages.oldestId, limit: PAGE });
      if (generation !== state.generation) return;
      messages.showOlder(page.messages, page.has_more);
      loaded = true;
    } catch (error) {
      showRoomError(`Older messages could not be loaded: ${error.message}`);
    } finally {
      button.disabled = false;
      loadingOlder = null;
    }
    if (clicked && !button.hidden) button.focus(); // disabling it took the focus away
    else if (clicked) $("#messages").focus({ preventScroll: true }); // the button is gone: keep the focus nearby
    if (loaded && messages.nearTop()) loadOlder();
  })();
  return loadingOlder;
}

$("#load-older").addEventListener("click", () => loadOlder());

/** Everything after the newest message shown, over REST: after a reconnect, or when the
 * replay had more than the server sends at once. */
async function fetchGap() {
  const channelId = state.channelId;
  const generation = state.generation;
  if (!channelId || state.loadedChannelId !== channelId) return; // a first page on its way is fresh anyway
  let hasMore = true;
  for (let pages = 0; hasMore; pages += 1) {
    if (pages === MAX_GAP_PAGES) {
      await selectChannel(channelId); // a long absence: start again from the latest page
      return;
    }
    const page = await api.messages(channelId, { after: messages.newestId, limit: PAGE });
    if (generation !== state.generation) return;
    for (const message of page.messages) {
      seen(message);
      messages.upsert(message);
    }
    hasMore = page.has_more && page.messages.length > 0;
  }
}

// ----- live events -----

/** A live message of this channel: new ones are added; edits replace only what is shown
 * (an edit of a message beyond the loaded history must not pull it in out of place). */
function showLive(channelId, message, { edit = false } = {}) {
  if (state.loading && state.loading.channelId === channelId) state.loading.buffered.push({ message, edit });
  else if (channelId === state.channelId) applyLive(message, edit);
}

function applyLive(message, edit) {
  if (edit) messages.replace(message);
  else messages.upsert(message);
}

function reactionChanged(frame, added) {
  if (frame.channel_id !== state.channelId) return;
  const mine = frame.user_id === state.me.id ? added : undefined;
  messages.applyReaction({ messageId: frame.message_id, emoji: frame.emoji, count: frame.count, mine });
}

const handlers = {
  hello: () => {
    composer.reconnected();
    loadLimits(state.workspaceId);
    // Reads elsewhere, and channel events before this socket followed its workspaces (the
    // first hello too: the list was loaded before the socket was attached).
    refreshChannels().catch(() => {});
    return fetchGap().catch(() => {});
  },
  "resume.done": (frame) => {
    if (frame.has_more) fetchGap().catch(() => {});
  },
  "message.created": (frame) => {
    seen(frame.message);
    if (frame.message.author?.id === state.me?.id) composer.delivered(frame.message);
    const counted = countArrival(findRoom(frame.channel_id), frame.message, state.me);
    if (counted) renderSidebar();
    if (frame.channel_id === state.channelId) {
      showLive(frame.channel_id, frame.message);
      checkRead(); // seen at once if the reader is at the bottom
    }
  },
  "message.updated": (frame) => {
    recountIfUnread(frame.channel_id, frame.message.id);
    return showLive(frame.channel_id, frame.message, { edit: true });
  },
  "message.deleted": (frame) => {
    recountIfUnread(frame.channel_id, frame.message_id);
    if (frame.channel_id === state.channelId) messages.remove(frame.message_id);
  },
  "channel.member_added": (frame) => {
    if (frame.user?.id === state.me?.id && frame.channel?.workspace_id === state.workspaceId) {
      refreshChannels().catch(() => {});
    }
  },
  "channel.member_removed": async (frame) => {
    if (frame.user?.id !== state.me?.id) return;
    await refreshChannels();
    if (frame.channel_id === state.channelId) {
      const channel = currentChannel();
      if (channel) await selectChannel(channel.id);
      else selectNothing();
    }
  },
  "channel.created": (frame) => upsertChannel(frame.channel),
  "channel.updated": (frame) => upsertChannel(frame.channel),
  "channel.archived": (frame) => upsertChannel(frame.channel),
  "channel.unarchived": (frame) => upsertChannel(frame.channel),
  "channel.deleted": (frame) => {
    const known = state.channels.find((c) => c.id === frame.channel_id);
    if (!known) return;
    state.channels = state.channels.filter((c) => c.id !== frame.channel_id);
    if (frame.channel_id === state.channelId) announce(`#${known.name} was deleted.`);
    return afterChannelGone(frame.channel_id);
  },
  "channel.read": (frame) => readStateChanged(frame),
  "reaction.added": (frame) => reactionChanged(frame, true),
  "reaction.removed": (frame) => reactionChanged(frame, false),
  "workspace.member_removed": () => enterChat().catch(() => leaveChat()),
};

socket.addEventListener("frame", (event) => {
  const frame = event.detail;
  const handler = handlers[frame.type];
  if (handler && state.me) {
    Promise.resolve(handler(frame)).catch((error) => console.warn("event failed", frame.type, error));
  }
});

// Files dropped outside the composer must not make the browser navigate away to them.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => {
    if (event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files")) event.preventDefault();
  });
}

boot();
