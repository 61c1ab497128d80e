// The member list of the open channel: opened from the channel header, a column beside the
// room on a wide screen and a full-width panel on a phone. Each member has a presence dot;
// the list follows joins, leaves and presence changes while it is open.

import { h } from "./dom.js";
import { STATUS_TEXT, presenceDot, setDot } from "./presence.js";

export class MemberPanel {
  /**
   * @param {object} parts the chat view, the panel and its controls (see index.html)
   * @param {{presence: import("./presence.js").PresenceStore, load: (channelId: number) => Promise<Array>}} deps
   */
  constructor(parts, { presence, load }) {
    Object.assign(this, parts);
    this.presence = presence;
    this.load = load;
    this.channel = null;
    this.members = [];
    this.generation = 0;
    this.toggle.addEventListener("click", () => (this.isOpen() ? this.close() : this.open()));
    this.closeButton.addEventListener("click", () => this.close());
    this.panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        this.close();
      }
    });
    presence.addEventListener("change", (event) => this.presenceChanged(event.detail.userIds));
    this.setChannel(null);
  }

  isOpen() {
    return !this.panel.hidden;
  }

  /** The channel shown in the room: {id, name} or null. */
  setChannel(channel) {
    this.channel = channel;
    this.toggle.disabled = !channel;
    this.members = [];
    this.render();
    if (!channel) this.close({ refocus: false });
    else if (this.isOpen()) this.refresh();
  }

  open() {
    if (!this.channel) return;
    this.panel.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    this.chat.classList.add("members-open");
    this.refresh();
    this.closeButton.focus();
  }

  close({ refocus = true } = {}) {
    const wasOpen = this.isOpen();
    this.panel.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
    this.chat.classList.remove("members-open");
    if (wasOpen && refocus && !this.toggle.disabled) this.toggle.focus();
  }

  /** Read the members again (opened, or someone joined or left). */
  async refresh() {
    if (!this.channel || !this.isOpen()) return;
    const channelId = this.channel.id;
    const generation = ++this.generation;
    this.showError("");
    try {
      const members = await this.load(channelId);
      if (generation !== this.generation) return;
      this.members = members;
      this.render();
    } catch (error) {
      if (generation === this.generation) this.showError(`Members could not be loaded: ${error.message}`);
    }
  }

  /** A membership event of a channel: the list follows it when it is the one shown. */
  membershipChanged(channelId) {
    if (this.channel && this.channel.id === channelId) this.refresh();
  }

  render() {
    this.title.textContent = this.channel ? `Members of #${this.channel.name}` : "Members";
    const sorted = [...this.members].sort((a, b) => displayName(a).localeCompare(displayName(b)));
    this.list.replaceChildren(...sorted.map((member) => this.item(member)));
    this.renderSummary();
  }

  item(member) {
    const name = displayName(member);
    return h(
      "li",
      { class: "member", dataset: { userId: String(member.id) } },
      presenceDot(this.presence.status(member.id)),
      h("span", { class: "member-name" }, name),
      member.display_name && member.display_name !== member.username
        ? h("span", { class: "member-username" }, `@${member.username}`)
        : null,
    );
  }

  renderSummary() {
    if (!this.members.length) {
      this.summary.textContent = "";
      return;
    }
    const count = (status) => this.members.filter((m) => this.presence.status(m.id) === status).length;
    const noun = this.members.length === 1 ? "member" : "members";
    const parts = [`${this.members.length} ${noun}`, `${count("online")} ${STATUS_TEXT.online.toLowerCase()}`];
    const away = count("away");
    if (away) parts.push(`${away} ${STATUS_TEXT.away.toLowerCase()}`);
    this.summary.textContent = parts.join(", ");
  }

  presenceChanged(userIds) {
    if (!this.members.length) return;
    const all = userIds.length > 20;
    for (const el of this.list.querySelectorAll("li.member")) {
      const userId = Number(el.dataset.userId);
      if (all || userIds.includes(userId)) setDot(el.querySelector(".presence"), this.presence.status(userId));
    }
    this.renderSummary();
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }
}

function displayName(member) {
  return member.display_name || member.username;
}
