// Reactions under a message: one button per emoji with its count (pressed when one is
// mine; pressing it adds or removes mine), and the small picker of common emoji that the
// message's actions open.

import { h } from "./dom.js";

export const COMMON_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "👀", "✅"];

/**
 * @param {object} message with reactions [{emoji, count, mine}]
 * @param {((messageId: number, emoji: string, mine: boolean) => void)|null} onToggle
 *   null: the channel is read-only here (archived, or not joined): the counts only
 */
export function renderReactions(message, onToggle) {
  const reactions = (message.reactions || []).filter((r) => r.count > 0);
  if (!reactions.length) return null;
  return h(
    "div",
    { class: "reactions", role: "group", "aria-label": "Reactions" },
    reactions.map((r) =>
      h(
        "button",
        {
          type: "button",
          class: r.mine ? "reaction mine" : "reaction",
          "aria-pressed": r.mine ? "true" : "false",
          "aria-label": `${r.emoji} ${r.count} ${r.count === 1 ? "reaction" : "reactions"}${r.mine ? ", yours among them" : ""}`,
          disabled: !onToggle,
          dataset: { action: `react-${r.emoji}` },
          onclick: onToggle ? () => onToggle(message.id, r.emoji, r.mine) : undefined,
        },
        h("span", { "aria-hidden": "true" }, `${r.emoji} ${r.count}`),
      ),
    ),
  );
}

/**
 * The reactions after a change (an event, or the answer to mine): the emoji's new count,
 * and ``mine`` when the change tells it (undefined: someone else's, mine unchanged).
 */
export function changedReactions(reactions, { emoji, count, mine }) {
  const list = (reactions || []).map((r) => ({ ...r }));
  const found = list.find((r) => r.emoji === emoji);
  if (found) {
    found.count = count;
    if (mine !== undefined) found.mine = mine;
  } else if (count > 0) {
    list.push({ emoji, count, mine: Boolean(mine) });
  }
  return list.filter((r) => r.count > 0);
}

/** Events say nothing of "mine": keep what this tab knew for each emoji. */
export function keepMine(fresh, known) {
  const mine = new Map((known || []).map((r) => [r.emoji, r.mine]));
  return (fresh || []).map((r) => ({ ...r, mine: mine.get(r.emoji) || false }));
}

/**
 * The picker, opened below the React button: Escape or a pick closes it (the focus goes
 * back to the button); arrow keys move between the emoji.
 */
export function openPicker(button, onPick) {
  const bar = button.parentElement;
  const open = bar.querySelector(".reaction-picker");
  if (open) {
    open.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  const close = () => {
    picker.remove();
    button.setAttribute("aria-expanded", "false");
    button.focus();
  };
  const choices = COMMON_EMOJI.map((emoji) =>
    h(
      "button",
      {
        type: "button",
        class: "emoji",
        "aria-label": `React with ${emoji}`,
        onclick: () => {
          close();
          onPick(emoji);
        },
      },
      emoji,
    ),
  );
  const picker = h(
    "div",
    {
      class: "reaction-picker",
      role: "group",
      "aria-label": "Pick a reaction",
      onkeydown: (event) => {
        const at = choices.indexOf(document.activeElement);
        if (event.key === "Escape") {
          event.preventDefault();
          event.stopPropagation();
          close();
        } else if ((event.key === "ArrowRight" || event.key === "ArrowLeft") && at >= 0) {
          event.preventDefault();
          const step = event.key === "ArrowRight" ? 1 : -1;
          choices[(at + step + choices.length) % choices.length].focus();
        }
      },
    },
    choices,
  );
  button.setAttribute("aria-expanded", "true");
  bar.append(picker);
  choices[0].focus();
}
