// The full-size image viewer: a modal <dialog> (Escape closes it; focus returns to the
// thumbnail that opened it).

import { $ } from "./dom.js";

export function setUpViewer() {
  const dialog = $("#image-viewer");
  const title = $("#image-viewer-title");
  const img = $("#image-viewer-img");
  const download = $("#image-viewer-download");
  let opener = null;

  $("#image-viewer-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener("close", () => {
    img.removeAttribute("src");
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  });

  return function open(attachment, href) {
    opener = document.activeElement;
    title.textContent = attachment.filename;
    img.alt = attachment.filename;
    if (attachment.width > 0 && attachment.height > 0) {
      img.width = attachment.width;
      img.height = attachment.height;
    } else {
      img.removeAttribute("width");
      img.removeAttribute("height");
    }
    img.src = href;
    download.href = href;
    download.setAttribute("aria-label", `Download ${attachment.filename}`);
    dialog.showModal();
  };
}
