// Message text as DOM nodes: links for http(s) URLs and a small Markdown subset (**bold**,
// *italic*, `code`, ``` code blocks ```). Every piece of the user's text goes in as a text
// node; nothing here builds an HTML string, so no text can become markup.

import { h } from "./dom.js";

const FENCE = /```(?:([\w+#.-]*)\n)?([\s\S]*?)```/g;
// An escaped marker, inline code, bold, italic, a URL: the earliest match wins, and at one
// place the first alternative (so `**` is bold, not two italics).
const INLINE = /\\([\\`*])|`([^`\n]+)`|\*\*(?=\S)([\s\S]*?\S)\*\*|\*(?=[^\s*])([^*\n]*?[^\s*])\*|(https?:\/\/[^\s<>"]+)/gi;
const TRAILING = /[.,:;!?'*_]/;

/** @returns {Node[]} the message's text as nodes, for a container that keeps white space. */
export function renderMarkup(content) {
  const text = String(content);
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(FENCE)) {
    nodes.push(...inline(trimBreak(text.slice(at, match.index), "end")));
    const code = h("code", {}, match[2].replace(/\n$/, ""));
    if (match[1]) code.dataset.language = match[1];
    nodes.push(h("pre", { class: "code-block" }, code));
    at = match.index + match[0].length;
  }
  nodes.push(...inline(at ? trimBreak(text.slice(at), "start") : text));
  return nodes.filter((node) => node.nodeType !== Node.TEXT_NODE || node.data !== "");
}

/** A block starts on its own line already: the line break beside it would add a blank one. */
function trimBreak(text, side) {
  return side === "end" ? text.replace(/\n$/, "") : text.replace(/^\n/, "");
}

function inline(text) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(new RegExp(INLINE.source, INLINE.flags))) {
    const [whole, escaped, code, bold, italic, url] = match;
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    at = match.index + whole.length;
    if (escaped !== undefined) nodes.push(document.createTextNode(escaped));
    else if (code !== undefined) nodes.push(h("code", {}, code));
    else if (bold !== undefined) nodes.push(h("strong", {}, inline(bold)));
    else if (italic !== undefined) nodes.push(h("em", {}, inline(italic)));
    else {
      const shown = trimUrl(url);
      nodes.push(link(shown));
      at = match.index + shown.length; // what was trimmed is text again
    }
  }
  if (at < text.length) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

/** Punctuation after a URL ends the sentence, not the URL; a ")" only closes one "(". */
function trimUrl(url) {
  let end = url.length;
  for (;;) {
    const last = url[end - 1];
    const open = url.slice(0, end).split("(").length - 1;
    const close = url.slice(0, end).split(")").length - 1;
    if (TRAILING.test(last) || (last === ")" && close > open)) end -= 1;
    else return url.slice(0, end);
  }
}

function link(text) {
  let href = null;
  try {
    const url = new URL(text);
    if (url.protocol === "http:" || url.protocol === "https:") href = url.href;
  } catch {
    // not a URL after all ("https://" alone)
  }
  if (!href) return document.createTextNode(text);
  return h("a", { href, target: "_blank", rel: "noopener noreferrer" }, text);
}
