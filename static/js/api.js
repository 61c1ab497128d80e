// The REST API: JSON in and out, every failure as an ApiError with the server's
// {"error": {"code", "message", "details"?}} shape (or a synthetic one for network errors).

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Turn a response body (parsed or not) into an ApiError. */
export function errorFrom(status, body) {
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error.code === "string") {
    return new ApiError(status, error.code, String(error.message || error.code), error.details);
  }
  if (status === 0) return new ApiError(0, "network_error", "The server cannot be reached.");
  return new ApiError(status, "http_error", `The server answered ${status}.`);
}

let unauthorized = () => {};

/** Called when a request made while logged in answers 401: the session is gone. */
export function onUnauthorized(callback) {
  unauthorized = callback;
}

export async function request(method, path, { json, query, signal } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null) params.set(key, String(value));
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (exc) {
    if (exc && exc.name === "AbortError") throw exc;
    throw errorFrom(0, null);
  }
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = errorFrom(response.status, body);
    if (response.status === 401 && path !== "/api/auth/login" && path !== "/api/me") unauthorized(error);
    throw error;
  }
  return body;
}

export const api = {
  login: (username, password) => request("POST", "/api/auth/login", { json: { username, password } }),
  logout: () => request("POST", "/api/auth/logout"),
  me: () => request("GET", "/api/me"),
  channels: (workspaceId) => request("GET", "/api/channels", { query: { workspace_id: workspaceId } }),
  createChannel: (workspaceId, name, isPrivate, topic = "") =>
    request("POST", "/api/channels", { json: { workspace_id: workspaceId, name, private: isPrivate, topic } }),
  /** @param {{name?: string, topic?: string}} changes */
  updateChannel: (channelId, changes) => request("PATCH", `/api/channels/${channelId}`, { json: changes }),
  archiveChannel: (channelId, archived) =>
    request("POST", `/api/channels/${channelId}/${archived ? "archive" : "unarchive"}`),
  deleteChannel: (channelId) => request("DELETE", `/api/channels/${channelId}`),
  leaveChannel: (channelId) => request("POST", `/api/channels/${channelId}/leave`),
  react: (messageId, emoji) =>
    request("PUT", `/api/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`),
  unreact: (messageId, emoji) =>
    request("DELETE", `/api/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`),
  directMessages: (workspaceId) => request("GET", `/api/workspaces/${workspaceId}/dms`),
  openDirectMessage: (workspaceId, userIds) =>
    request("POST", `/api/workspaces/${workspaceId}/dms`, { json: { user_ids: userIds } }),
  workspaceMembers: (workspaceId) => request("GET", `/api/workspaces/${workspaceId}/members`),
  channelMembers: (channelId) => request("GET", `/api/channels/${channelId}/members`),
  joinChannel: (channelId) => request("POST", `/api/channels/${channelId}/join`),
  messages: (channelId, { before, after, limit } = {}) =>
    request("GET", `/api/channels/${channelId}/messages`, { query: { before, after, limit } }),
  postMessage: (channelId, body) => request("POST", `/api/channels/${channelId}/messages`, { json: body }),
  editMessage: (messageId, content) => request("PATCH", `/api/messages/${messageId}`, { json: { content } }),
  deleteMessage: (messageId) => request("DELETE", `/api/messages/${messageId}`),
  markRead: (channelId, messageId) =>
    request("POST", `/api/channels/${channelId}/read`, { json: { message_id: messageId } }),
  limits: (workspaceId) => request("GET", `/api/workspaces/${workspaceId}/limits`),
};
