// What a workspace accepts, from GET /api/workspaces/{id}/limits, judged before a byte is
// sent. The server still sniffs the bytes: a file judged here by its declared type or its
// extension may be refused there (415), never the other way round.

import { ApiError } from "./api.js";
import { formatSize } from "./format.js";

// The spellings the server folds together (echora_server/files/mediatypes.py _ALIASES).
const ALIASES = {
  "image/jpg": "image/jpeg",
  "image/pjpeg": "image/jpeg",
  "image/x-png": "image/png",
  "audio/wav": "audio/x-wav",
  "audio/wave": "audio/x-wav",
  "audio/vnd.wave": "audio/x-wav",
  "audio/mp3": "audio/mpeg",
  "image/vnd.microsoft.icon": "image/x-icon",
  "image/x-ms-bmp": "image/bmp",
  "image/tif": "image/tiff",
  "image/heif": "image/heic",
};
const UNINFORMATIVE = new Set(["", "application/octet-stream", "binary/octet-stream", "application/x-www-form-urlencoded"]);
// For files the browser gives no type: what the extension says, as the server's table does.
const EXTENSIONS = {
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp",
  bmp: "image/bmp", tif: "image/tiff", tiff: "image/tiff", ico: "image/x-icon", heic: "image/heic",
  avif: "image/avif", svg: "image/svg+xml", mp3: "audio/mpeg", wav: "audio/x-wav", aac: "audio/aac",
  opus: "audio/opus", mid: "audio/midi", midi: "audio/midi", mp4: "video/mp4", webm: "video/webm",
  mov: "video/quicktime", avi: "video/x-msvideo", mpeg: "video/mpeg", mpg: "video/mpeg",
  pdf: "application/pdf", txt: "text/plain", csv: "text/csv", rtf: "application/rtf",
  doc: "application/msword", xls: "application/vnd.ms-excel", ppt: "application/vnd.ms-powerpoint",
  zip: "application/zip", tar: "application/x-tar", tgz: "application/x-tar", json: "application/json",
  html: "text/html", htm: "text/html", js: "application/javascript", xml: "text/xml", sh: "application/x-sh",
};

/** The type the workspace's lists would judge, as far as the browser can tell; null: unknown. */
export function judgedType(file) {
  const declared = String(file.type || "").split(";", 1)[0].trim().toLowerCase();
  if (!UNINFORMATIVE.has(declared)) return ALIASES[declared] || declared;
  const dot = file.name.lastIndexOf(".");
  const extension = dot >= 0 ? file.name.slice(dot + 1).toLowerCase() : "";
  return EXTENSIONS[extension] || null;
}

/** Why the workspace would refuse this file before a byte is sent (an ApiError), or null. */
export function refusal(file, limits) {
  if (!limits) return null;
  if (file.size > limits.max_file_size) {
    return new ApiError(0, "file_too_large", "Too large.", { limit_bytes: limits.max_file_size, local: true });
  }
  const type = judgedType(file);
  if (type === null) return null; // only the bytes can tell: the server judges
  const denied = limits.denied_types.includes(type);
  const allowed = limits.allowed_types === null || limits.allowed_types.includes(type);
  if (denied || !allowed) {
    return new ApiError(0, "type_not_allowed", "Type refused.", { type, local: true });
  }
  return null;
}

/** What to say about a quota refusal (507 quota_exceeded), with its figures. */
export function describeQuota(details) {
  const whose = { workspace: "This workspace's", member: "Your", bot: "This bot's" }[details?.quota] || "The";
  const used = Number(details?.bytes_used);
  const allowed = Number(details?.bytes_allowed);
  if (!Number.isFinite(used) || !Number.isFinite(allowed)) return `${whose} storage quota is full.`;
  return `${whose} storage quota is full: ${formatSize(used)} of ${formatSize(allowed)} used.`;
}
