// The sidebar: workspace picker, my channels (with unread counts) and my direct messages.
// Finding, creating and starting conversations happen in dialogs (channel_dialogs.js).

import { h } from "./dom.js";

export class Sidebar {
  /**
   * @param {object} parts elements from index.html
   * @param {{selectWorkspace, selectChannel}} actions async callbacks
   */
  constructor(parts, actions) {
    Object.assign(this, parts);
    this.actions = actions;
    this.workspaceSelect.addEventListener("change", () =>
      this.actions.selectWorkspace(Number(this.workspaceSelect.value)),
    );
  }

  setWorkspaces(workspaces, currentId) {
    this.workspaceSelect.replaceChildren(
      ...workspaces.map((ws) => h("option", { value: ws.id, selected: ws.id === currentId }, ws.name || ws.slug)),
    );
    this.workspaceSelect.disabled = workspaces.length < 2;
  }

  /**
   * @param {Array} channels the workspace's channels (those I am in are listed)
   * @param {Array} dms my direct messages, as rooms ({id, name, ...})
   * @param {number|null} currentId @param {Map<number, number>} unread
   */
  setChannels(channels, dms, currentId, unread) {
    // Re-rendering must not take the keyboard focus away from the channel it was on.
    const focused = document.activeElement;
    const lists = [this.myList, this.dmList];
    const refocus = lists.some((list) => list.contains(focused)) ? focused.dataset.focusKey : null;
    const mine = channels.filter((c) => c.joined);
    this.myList.replaceChildren(...mine.map((c) => this.channelItem(c, c.id === currentId, unread.get(c.id) || 0)));
    this.dmList.replaceChildren(...dms.map((dm) => this.channelItem(dm, dm.id === currentId, unread.get(dm.id) || 0)));
    this.noDms.hidden = dms.length > 0;
    if (refocus) {
      const again = lists.flatMap((list) => [...list.querySelectorAll("button")]).find((b) => b.dataset.focusKey === refocus);
      if (again) again.focus();
    }
  }

  channelItem(channel, current, unread) {
    const direct = channel.kind === "dm";
    const classes = ["channel", unread ? "unread" : "", channel.archived ? "archived" : ""].filter(Boolean);
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: classes.join(" "),
          "aria-current": current ? "page" : null,
          dataset: { focusKey: `open-${channel.id}` },
          onclick: () => this.actions.selectChannel(channel.id),
        },
        h("span", { "aria-hidden": "true", class: "hash" }, direct ? "@" : channel.private ? "🔒" : "#"),
        h("span", { class: "channel-name" }, channel.name),
        channel.private && !direct ? h("span", { class: "visually-hidden" }, " (private)") : null,
        channel.archived ? h("span", { class: "visually-hidden" }, " (archived)") : null,
        unread
          ? h("span", { class: "badge" }, String(unread), h("span", { class: "visually-hidden" }, " unread"))
          : null,
      ),
    );
  }
}
