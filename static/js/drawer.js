// The sidebar as a drawer on narrow screens: the menu button opens it over the room; Escape,
// the backdrop or its Close button close it. While it is open the rest of the page is inert,
// so the keyboard and screen readers stay in it; closing gives the focus back to the menu button.

const PHONE = "(max-width: 767.98px)";

/** @param {{chat, drawer, button, closeButton, backdrop, outside: HTMLElement[]}} parts */
export function setUpDrawer({ chat, drawer, button, closeButton, backdrop, outside }) {
  const phone = matchMedia(PHONE);
  let open = false;

  function set(on, { focus = true } = {}) {
    open = on;
    chat.classList.toggle("drawer-open", on);
    button.setAttribute("aria-expanded", String(on));
    backdrop.hidden = !on;
    for (const el of outside) el.inert = on;
    if (!focus) return;
    if (on) (drawer.querySelector('[aria-current="page"]') || closeButton).focus();
    else button.focus();
  }

  button.addEventListener("click", () => set(!open));
  closeButton.addEventListener("click", () => set(false));
  backdrop.addEventListener("click", () => set(false));
  document.addEventListener("keydown", (event) => {
    if (open && event.key === "Escape" && !event.defaultPrevented) {
      event.preventDefault();
      set(false);
    }
  });
  phone.addEventListener("change", () => {
    if (!phone.matches && open) set(false, { focus: false }); // wider now: the sidebar is a column again
  });

  return {
    /** After picking a channel in it: the room takes the focus, not the menu button. */
    close: () => {
      if (open) set(false, { focus: false });
    },
  };
}
