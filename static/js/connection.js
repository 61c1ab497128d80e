// The visible connection state, driven by LiveSocket "state" events.

import { $ } from "./dom.js";

const LABELS = {
  idle: "Offline",
  connecting: "Connecting…",
  open: "Connected",
  waiting: "Connection lost. Reconnecting",
};

export function showConnection(socket) {
  const box = $("#connection");
  const text = $("#connection-text");
  const retry = $("#reconnect");
  let ticker = null;

  retry.addEventListener("click", () => socket.retryNow());

  const render = () => {
    const { state, retryAt } = socket;
    box.dataset.state = state;
    let label = LABELS[state] || state;
    if (state === "waiting" && retryAt) {
      const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      label += seconds > 0 ? ` in ${seconds} s…` : "…";
    }
    if (text.textContent !== label) text.textContent = label;
    retry.hidden = state !== "waiting";
  };

  socket.addEventListener("state", () => {
    clearInterval(ticker);
    ticker = socket.state === "waiting" ? setInterval(render, 1000) : null;
    render();
  });
  render();
}
