// How a message's files are shown: images (opened full size in the viewer), video and audio
// players, and cards for the rest. Filenames go in as text nodes.

import { h, localUrl } from "./dom.js";
import { formatSize } from "./format.js";

// What the server serves inline (echora_server/mediatypes.py INLINE_TYPES); the rest are cards.
const IMAGE_TYPES = new Set(["image/png", "image/apng", "image/jpeg", "image/gif", "image/webp"]);
const VIDEO_TYPES = new Set(["video/mp4", "video/webm"]);
const AUDIO_TYPES = new Set(["audio/mpeg", "audio/ogg", "audio/x-wav", "audio/wav"]);
const IMAGE_BOX = { width: 360, height: 280 };

// Each image's open button -> what it shows, for the viewer to step through.
const IMAGES = new WeakMap();

/** What an image's open button shows ({attachment, href}), or undefined for any other element. */
export function imageOf(button) {
  return IMAGES.get(button);
}

export function attachmentKind(attachment) {
  const type = String(attachment.mime_type || "").toLowerCase();
  if (IMAGE_TYPES.has(type)) return "image";
  if (VIDEO_TYPES.has(type)) return "video";
  if (AUDIO_TYPES.has(type)) return "audio";
  return "file";
}

/** The displayed size of an image: fitted in IMAGE_BOX, never enlarged. */
function fitted(width, height) {
  const scale = Math.min(1, IMAGE_BOX.width / width, IMAGE_BOX.height / height);
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

function downloadLink(attachment, href, label = "Download") {
  return h(
    "a",
    { class: "download", href, download: "", "aria-label": `Download ${attachment.filename}` },
    label,
  );
}

function caption(attachment, href) {
  return h(
    "span",
    { class: "caption" },
    h("span", { class: "caption-name", title: attachment.filename }, attachment.filename),
    h("span", { class: "caption-size" }, formatSize(attachment.size)),
    downloadLink(attachment, href),
  );
}

function renderImage(attachment, href, onOpenImage) {
  const src = localUrl(attachment.thumbnail_url) || href;
  const img = h("img", {
    src,
    alt: attachment.filename,
    loading: "lazy",
    decoding: "async",
  });
  // Bytes that begin like an image yet do not decode: shown as the file they are.
  img.addEventListener("error", () => figure.replaceWith(renderFileCard(attachment, href)), { once: true });
  if (attachment.width > 0 && attachment.height > 0) {
    const size = fitted(attachment.width, attachment.height);
    img.width = size.width;
    img.height = size.height;
  }
  const open = h(
    "button",
    {
      type: "button",
      class: "image-open",
      "aria-label": `Open ${attachment.filename} full size`,
      onclick: (event) => onOpenImage(attachment, href, event.currentTarget),
    },
    img,
  );
  IMAGES.set(open, { attachment, href });
  const figure = h("figure", { class: "attachment image" }, open, h("figcaption", {}, caption(attachment, href)));
  return figure;
}

function renderMedia(tag, attachment, href) {
  const player = h(tag, { controls: true, preload: "metadata", src: href, "aria-label": attachment.filename });
  if (tag === "video" && attachment.width > 0 && attachment.height > 0) {
    const size = fitted(attachment.width, attachment.height);
    player.width = size.width;
    player.height = size.height;
  }
  return h("figure", { class: `attachment ${tag}` }, player, h("figcaption", {}, caption(attachment, href)));
}

function renderFileCard(attachment, href) {
  const dot = attachment.filename.lastIndexOf(".");
  const ext = dot > 0 ? attachment.filename.slice(dot + 1, dot + 5).toUpperCase() : "FILE";
  return h(
    "div",
    { class: "attachment file-card" },
    h("span", { class: "file-glyph", "aria-hidden": "true" }, ext),
    h(
      "span",
      { class: "file-info" },
      h("span", { class: "file-name", title: attachment.filename }, attachment.filename),
      h("span", { class: "file-size" }, formatSize(attachment.size)),
    ),
    downloadLink(attachment, href),
  );
}

export function renderAttachment(attachment, onOpenImage) {
  const href = localUrl(attachment.url);
  if (!href) return null;
  switch (attachmentKind(attachment)) {
    case "image":
      return renderImage(attachment, href, onOpenImage);
    case "video":
      return renderMedia("video", attachment, href);
    case "audio":
      return renderMedia("audio", attachment, href);
    default:
      return renderFileCard(attachment, href);
  }
}
