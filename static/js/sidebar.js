// The sidebar: workspace picker, my channels (with unread counts), channels to join, and
// the new-channel form.

import { ApiError } from "./api.js";
import { h } from "./dom.js";

export class Sidebar {
  /**
   * @param {object} parts elements from index.html
   * @param {{selectWorkspace, selectChannel, join, create}} actions async callbacks
   */
  constructor(parts, actions) {
    Object.assign(this, parts);
    this.actions = actions;
    this.workspaceSelect.addEventListener("change", () =>
      this.actions.selectWorkspace(Number(this.workspaceSelect.value)),
    );
    this.createForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.create();
    });
  }

  setWorkspaces(workspaces, currentId) {
    this.workspaceSelect.replaceChildren(
      ...workspaces.map((ws) => h("option", { value: ws.id, selected: ws.id === currentId }, ws.name || ws.slug)),
    );
    this.workspaceSelect.disabled = workspaces.length < 2;
  }

  /** @param {Array} channels (with the server's unread_count, mention_count) @param {number|null} currentId */
  setChannels(channels, currentId) {
    // Re-rendering must not take the keyboard focus away from the channel it was on.
    const focused = document.activeElement;
    const refocus = this.myList.contains(focused) || this.otherList.contains(focused) ? focused.dataset.focusKey : null;
    const mine = channels.filter((c) => c.joined);
    const others = channels.filter((c) => !c.joined);
    this.myList.replaceChildren(...mine.map((c) => this.channelItem(c, c.id === currentId)));
    this.otherList.replaceChildren(...others.map((c) => this.joinItem(c)));
    this.noOthers.hidden = others.length > 0;
    if (refocus) {
      const again = [...this.myList.querySelectorAll("button"), ...this.otherList.querySelectorAll("button")].find(
        (b) => b.dataset.focusKey === refocus,
      );
      if (again) again.focus();
    }
  }

  channelItem(channel, current) {
    const unread = channel.unread_count || 0;
    const mentioned = unread > 0 && channel.mention_count > 0;
    return h(
      "li",
      {},
      h(
        "button",
        {
          type: "button",
          class: `channel${unread ? " unread" : ""}${mentioned ? " mentioned" : ""}`,
          "aria-current": current ? "page" : null,
          dataset: { focusKey: `open-${channel.id}` },
          onclick: () => this.actions.selectChannel(channel.id),
        },
        h("span", { "aria-hidden": "true", class: "hash" }, channel.private ? "🔒" : "#"),
        h("span", { class: "channel-name" }, channel.name),
        channel.private ? h("span", { class: "visually-hidden" }, " (private)") : null,
        unread
          ? h(
              "span",
              { class: mentioned ? "badge mention" : "badge" },
              String(unread),
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

  joinItem(channel) {
    return h(
      "li",
      { class: "joinable" },
      h("span", { class: "channel-name" }, `#${channel.name}`),
      h(
        "button",
        {
          type: "button",
          class: "small",
          "aria-label": `Join #${channel.name}`,
          dataset: { focusKey: `join-${channel.id}` },
          onclick: () => this.actions.join(channel.id),
        },
        "Join",
      ),
    );
  }

  async create() {
    const name = this.nameInput.value.trim();
    this.showCreateError("");
    if (!name) {
      this.showCreateError("Give the channel a name.");
      this.nameInput.focus();
      return;
    }
    const button = this.createForm.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await this.actions.create(name, this.privateInput.checked);
      this.nameInput.value = "";
      this.privateInput.checked = false;
    } catch (error) {
      this.showCreateError(error instanceof ApiError ? error.message : "The channel could not be created.");
      this.nameInput.focus();
    } finally {
      button.disabled = false;
    }
  }

  showCreateError(text) {
    this.createError.textContent = text;
    this.createError.hidden = !text;
    if (text) this.nameInput.setAttribute("aria-invalid", "true");
    else this.nameInput.removeAttribute("aria-invalid");
  }
}
