// The reading aids between rows of the log: a heading where a new day starts ("Today",
// "Yesterday", a date), and consecutive messages of one author within a few minutes shown
// as one group (the author and time once). Worked out from each row and the one before.

import { h } from "./dom.js";

export const GROUP_MINUTES = 5;

const DATE = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long" });
const DATE_WITH_YEAR = new Intl.DateTimeFormat(undefined, { dateStyle: "full" });

function dayKey(date) {
  return `${date.getFullYear()}-${date.getMonth()}-${date.getDate()}`;
}

/** The heading of a day, in the reader's time zone and relative to their today. */
export function dayLabel(iso, now = new Date()) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey(date) === dayKey(now)) return "Today";
  if (dayKey(date) === dayKey(yesterday)) return "Yesterday";
  return (date.getFullYear() === now.getFullYear() ? DATE : DATE_WITH_YEAR).format(date);
}

function sameDay(a, b) {
  return dayKey(new Date(a.created_at)) === dayKey(new Date(b.created_at));
}

/** Whether `message` continues the group of `previous` (the message shown just before it). */
export function continues(previous, message) {
  if (!previous || !sameDay(previous, message)) return false;
  if (!previous.author || !message.author || previous.author.id !== message.author.id) return false;
  const gap = new Date(message.created_at) - new Date(previous.created_at);
  return gap >= 0 && gap <= GROUP_MINUTES * 60_000;
}

/**
 * Set a row's day heading and group class from the message shown before it.
 * @param {HTMLElement} row a message's <li>
 * @param {object} message what it shows
 * @param {object|null} previous the message of the row before, if any
 */
export function decorate(row, message, previous) {
  const newDay = !previous || !sameDay(previous, message);
  const label = newDay ? dayLabel(message.created_at) : "";
  let heading = row.querySelector(":scope > .day-divider");
  if (!label) heading?.remove();
  else if (!heading) row.prepend(h("h3", { class: "day-divider" }, h("span", {}, label)));
  else if (heading.textContent !== label) heading.firstChild.textContent = label;
  row.classList.toggle("day-start", Boolean(label));
  row.classList.toggle("continued", continues(previous, message));
}
