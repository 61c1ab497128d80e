// The full-size image viewer: a modal <dialog> (Escape closes it; focus returns to the
// thumbnail of the image shown last). It steps through the channel's images (buttons, arrow
// keys) and toggles between fitting the window and actual size (button, click on the image).

import { $ } from "./dom.js";

/** @param {() => {attachment, href, button}[]} gallery the images shown, oldest first */
export function setUpViewer(gallery) {
  const dialog = $("#image-viewer");
  const title = $("#image-viewer-title");
  const position = $("#image-viewer-position");
  const stage = $("#image-viewer-stage");
  const img = $("#image-viewer-img");
  const download = $("#image-viewer-download");
  const prev = $("#image-viewer-prev");
  const next = $("#image-viewer-next");
  const zoom = $("#image-viewer-zoom");
  let current = null; // {attachment, href, button}

  const images = () => gallery();
  const indexOf = (list) => (current ? list.findIndex((image) => image.button === current.button) : -1);

  function show(image) {
    current = image;
    const { attachment, href } = image;
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
    setZoomed(false);
    const list = images();
    const index = indexOf(list);
    position.textContent = index >= 0 && list.length > 1 ? `${index + 1} of ${list.length}` : "";
    prev.disabled = index <= 0;
    next.disabled = index < 0 || index >= list.length - 1;
  }

  function step(by) {
    const list = images();
    const index = indexOf(list);
    const target = index >= 0 ? list[index + by] : null;
    if (!target) return;
    const stepper = by < 0 ? prev : next;
    show(target);
    if (stepper.disabled) (by < 0 ? next : prev).focus(); // at the end now: keep the keyboard in the dialog
  }

  function setZoomed(on) {
    dialog.classList.toggle("zoomed", on);
    zoom.setAttribute("aria-pressed", String(on));
    // Scrolled at actual size, so reachable by keyboard then.
    if (on) {
      stage.tabIndex = 0;
    } else {
      const focused = stage === document.activeElement;
      stage.removeAttribute("tabindex");
      if (focused) zoom.focus(); // clicked on the image: the keyboard stays in the dialog
    }
  }

  prev.addEventListener("click", () => step(-1));
  next.addEventListener("click", () => step(1));
  zoom.addEventListener("click", () => setZoomed(!dialog.classList.contains("zoomed")));
  img.addEventListener("click", () => setZoomed(!dialog.classList.contains("zoomed")));
  document.addEventListener("keydown", (event) => {
    if (!dialog.open) return;
    if (dialog.classList.contains("zoomed") && event.target === stage) return; // the arrows scroll the image
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else return;
    event.preventDefault();
  });
  $("#image-viewer-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  dialog.addEventListener("close", () => {
    img.removeAttribute("src");
    const opener = current && current.button;
    if (opener && opener.isConnected) opener.focus();
    current = null;
  });

  return function open(attachment, href, opener = document.activeElement) {
    const shown = images().find((image) => image.button === opener);
    show(shown || { attachment, href, button: opener });
    dialog.showModal();
  };
}
