// Building DOM nodes without HTML strings: text always goes in as text nodes, so user
// text and filenames can never become markup (see /work/shared/notes/security.md).

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "textContent", "max"]);

/**
 * h("button", {type: "button", class: "x", onclick: fn}, "Label", childNode)
 * Attributes are set with setAttribute (never innerHTML); on* keys must be functions.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) {
      if (typeof value !== "function") throw new TypeError(`${key} must be a function`);
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (PROPERTIES.has(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(parent, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function $(selector, root = document) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`missing element ${selector}`);
  return el;
}

/** Only http(s) URLs or paths on this server may become links or media sources. */
export function safeUrl(raw) {
  if (typeof raw !== "string" || raw === "") return null; // new URL(undefined) is ".../undefined"
  try {
    const url = new URL(raw, location.origin);
    if (url.protocol === "http:" || url.protocol === "https:") return url.href;
  } catch {
    // not a URL at all
  }
  return null;
}

/** Same-origin URLs only (attachments are served by this server). */
export function localUrl(raw) {
  const href = safeUrl(raw);
  return href && new URL(href).origin === location.origin ? href : null;
}
