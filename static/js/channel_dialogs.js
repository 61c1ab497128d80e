// The channel dialogs: browse and join (with search), new channel, new direct message, and
// editing a channel's name and topic. Each is a modal <dialog> that gives the focus back to
// what opened it; what they change goes through the actions main.js gives them.

import { ApiError } from "./api.js";
import { h } from "./dom.js";

/** A modal dialog's common behaviour: open with the focus on ``first``, back to the opener on close. */
function modal(dialog, cancel) {
  let opener = null;
  if (cancel) cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  });
  return {
    open(first) {
      opener = document.activeElement;
      dialog.showModal();
      if (first) first.focus();
    },
    close: () => dialog.close(),
    get isOpen() {
      return dialog.open;
    },
  };
}

function showError(el, text, input) {
  el.textContent = text;
  el.hidden = !text;
  if (!input) return;
  if (text) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

function failure(error, fallback) {
  return error instanceof ApiError ? error.message : fallback;
}

const matches = (query, ...texts) => texts.some((text) => (text || "").toLowerCase().includes(query));

/**
 * Every channel I may see, searched by name and topic: join one, or open it.
 * @param {{channels: () => Array, join: (id) => Promise, open: (id) => Promise}} actions
 */
export function setUpBrowseDialog(parts, actions) {
  const { dialog, search, list, empty, error, close } = parts;
  const box = modal(dialog, close);

  function render() {
    const query = search.value.trim().toLowerCase();
    const found = actions.channels().filter((c) => matches(query, c.name, c.topic));
    list.replaceChildren(...found.map(item));
    empty.hidden = found.length > 0;
  }

  function item(channel) {
    const label = `#${channel.name}`;
    const action = channel.joined ? "Open" : channel.archived ? "View" : "Join";
    return h(
      "li",
      { class: "browse-item" },
      h(
        "span",
        { class: "browse-text" },
        h("span", { class: "channel-name" }, channel.private ? `🔒 ${channel.name}` : label),
        channel.archived ? h("span", { class: "muted" }, " (archived)") : null,
        channel.joined ? h("span", { class: "muted" }, " (joined)") : null,
        channel.topic ? h("span", { class: "browse-topic" }, channel.topic) : null,
      ),
      h(
        "button",
        {
          type: "button",
          class: action === "Join" ? "small primary" : "small",
          "aria-label": `${action} ${label}`,
          onclick: (event) => choose(channel, action, event.currentTarget),
        },
        action,
      ),
    );
  }

  async function choose(channel, action, button) {
    button.disabled = true;
    showError(error, "");
    try {
      if (action === "Join") await actions.join(channel.id);
      box.close();
      await actions.open(channel.id);
    } catch (exc) {
      showError(error, failure(exc, "The channel could not be joined."));
      if (button.isConnected) button.disabled = false;
    }
  }

  search.addEventListener("input", render);
  return {
    open() {
      search.value = "";
      showError(error, "");
      render();
      box.open(search);
    },
    /** The channel list changed (live events): show it as it is now. */
    refresh() {
      if (box.isOpen) render();
    },
  };
}

/** @param {{create: (name, topic, isPrivate) => Promise}} actions */
export function setUpCreateDialog(parts, actions) {
  const { dialog, form, name, topic, privateBox, error, cancel } = parts;
  const box = modal(dialog, cancel);
  const submit = form.querySelector("button[type=submit]");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const wanted = name.value.trim();
    showError(error, "", name);
    if (!wanted) {
      showError(error, "Give the channel a name.", name);
      name.focus();
      return;
    }
    submit.disabled = true;
    try {
      await actions.create(wanted, topic.value.trim(), privateBox.checked);
      box.close();
    } catch (exc) {
      showError(error, failure(exc, "The channel could not be created."), name);
      name.focus();
    } finally {
      submit.disabled = false;
    }
  });
  return {
    open() {
      form.reset();
      showError(error, "", name);
      box.open(name);
    },
  };
}

/**
 * Pick workspace members to write to.
 * @param {{members: () => Promise<Array>, start: (userIds) => Promise}} actions
 */
export function setUpDirectDialog(parts, actions) {
  const { dialog, form, search, people, error, cancel } = parts;
  const box = modal(dialog, cancel);
  const submit = form.querySelector("button[type=submit]");
  let everyone = [];
  const picked = new Set();

  function render() {
    const query = search.value.trim().toLowerCase();
    const shown = everyone.filter((m) => picked.has(m.id) || matches(query, m.username, m.display_name));
    people.replaceChildren(
      ...shown.map((member) => {
        const id = `dm-pick-${member.id}`;
        return h(
          "li",
          {},
          h("input", {
            type: "checkbox",
            id,
            checked: picked.has(member.id),
            onchange: (event) => {
              if (event.currentTarget.checked) picked.add(member.id);
              else picked.delete(member.id);
            },
          }),
          h("label", { for: id }, member.display_name || member.username, ` (${member.username})`),
        );
      }),
    );
  }

  search.addEventListener("input", render);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(error, "");
    if (picked.size === 0) {
      showError(error, "Pick at least one person.");
      search.focus();
      return;
    }
    submit.disabled = true;
    try {
      await actions.start([...picked]);
      box.close();
    } catch (exc) {
      showError(error, failure(exc, "The conversation could not be started."));
    } finally {
      submit.disabled = false;
    }
  });
  return {
    async open() {
      search.value = "";
      picked.clear();
      everyone = [];
      showError(error, "");
      render();
      box.open(search);
      try {
        everyone = await actions.members();
      } catch (exc) {
        showError(error, failure(exc, "The members could not be loaded."));
      }
      render();
    },
  };
}

/**
 * A channel's name and topic, and (for whom the server allows it) archiving and deleting it.
 * @param {{save: (channel, changes) => Promise, archive: (channel, archived) => Promise,
 *   remove: (channel) => Promise}} actions
 */
export function setUpEditDialog(parts, actions) {
  const { dialog, form, name, topic, archivedNote, error, cancel, save } = parts;
  const { manage, archive, remove, confirmBox, confirmText, confirmYes } = parts;
  const box = modal(dialog, cancel);
  let channel = null;

  async function act(button, work, fallback) {
    button.disabled = true;
    showError(error, "");
    try {
      await work();
      box.close();
    } catch (exc) {
      showError(error, failure(exc, fallback));
    } finally {
      button.disabled = false;
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!channel || channel.archived) return;
    const changes = {};
    const wanted = name.value.trim();
    if (!wanted) {
      showError(error, "Give the channel a name.", name);
      name.focus();
      return;
    }
    if (wanted !== channel.name) changes.name = wanted;
    if (topic.value.trim() !== (channel.topic || "")) changes.topic = topic.value.trim();
    save.disabled = true;
    try {
      if (Object.keys(changes).length) await actions.save(channel, changes);
      box.close();
    } catch (exc) {
      showError(error, failure(exc, "The channel could not be changed."), name);
    } finally {
      save.disabled = false;
    }
  });
  archive.addEventListener("click", () => {
    if (!channel) return;
    const wanted = !channel.archived;
    act(archive, () => actions.archive(channel, wanted), "The channel could not be archived.");
  });
  remove.addEventListener("click", () => {
    confirmBox.hidden = false;
    confirmYes.focus();
  });
  confirmYes.addEventListener("click", () => {
    if (channel) act(confirmYes, () => actions.remove(channel), "The channel could not be deleted.");
  });
  return {
    /**
     * @param {object} shown the channel
     * @param {{rename: boolean, archive: boolean, remove: boolean}} may what I may do to it
     */
    open(shown, may) {
      channel = shown;
      name.value = shown.name;
      topic.value = shown.topic || "";
      for (const field of [name, topic, save]) field.disabled = !may.rename;
      archivedNote.hidden = !shown.archived;
      manage.hidden = !(may.archive || may.remove);
      archive.hidden = !may.archive;
      archive.textContent = shown.archived ? "Unarchive channel" : "Archive channel";
      remove.hidden = !may.remove;
      confirmBox.hidden = true;
      confirmText.textContent = `Delete #${shown.name} with all its messages and files, for everyone? This cannot be undone.`;
      showError(error, "", name);
      box.open(may.rename ? name : may.archive ? archive : cancel);
    },
  };
}
