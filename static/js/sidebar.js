// The sidebar: workspace picker, my channels and my direct messages (with unread counts).
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
   * @param {Array} channels the workspace's channels (those I am in are listed), with the
   *   server's unread_count and mention_count
   * @param {Array} dms my direct messages, as rooms ({id, name, unread_count, ...})
   * @param {number|null} currentId
   */
  setChannels(channels, dms, currentId) {
    // Re-rendering must not take the keyboard focus away from the channel it was on.
    const focused = document.activeElement;
    const lists = [this.myList, this.dmList];
    const refocus = lists.some((list) => list.contains(focused)) ? focused.dataset.focusKey : null;
    const mine = channels.filter((c) => c.joined);
    this.myList.replaceChildren(...mine.map((c) => this.channelItem(c, c.id === currentId)));
    this.dmList.replaceChildren(...dms.map((dm) => this.channelItem(dm, dm.id === currentId)));
    this.noDms.hidden = dms.length > 0;
    if (refocus) {
      const again = lists.flatMap((list) => [...list.querySelectorAll("button")]).find((b) => b.dataset.focusKey === refocus);
      if (again) again.focus();
    }
  }

  channelItem(channel, current) {
    const direct = channel.kind === "dm";
    const unread = channel.unread_count || 0;
    const mentioned = unread > 0 && channel.mention_count > 0;
    const classes = ["channel", unread ? "unread" : "", mentioned ? "mentioned" : "", channel.archived ? "archived" : ""];
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: classes.filter(Boolean).join(" "),
          "aria-current": current ? "page" : null,
          dataset: { focusKey: `open-${channel.id}` },
          onclick: () => this.actions.selectChannel(channel.id),
        },
        h("span", { "aria-hidden": "true", class: "hash" }, direct ? "@" : channel.private ? "🔒" : "#"),
        h("span", { class: "channel-name" }, channel.name),
        channel.private && !direct ? h("span", { class: "visually-hidden" }, " (private)") : null,
        channel.archived ? h("span", { class: "visually-hidden" }, " (archived)") : null,
        unread
          ? h(
              "span",
              { class: mentioned ? "badge mention" : "badge" },
              unread >= 1000 ? "999+" : String(unread), // the server counts up to 1000
              h(
                "span",
                { class: "visually-hidden" },
                mentioned ? ` unread, ${channel.mention_count} mentioning you` : " unread",
              ),
            )
          : null,
      ),
    );
  }
}
