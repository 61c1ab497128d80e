// Light, dark, or as the system says (the default): the choice is remembered in this browser.
// The stylesheet follows prefers-color-scheme by itself; a choice here overrides it.

const STORED = "echora.theme";
const CHOICES = new Set(["system", "light", "dark"]);

export function setUpTheme(select) {
  const apply = (choice) => {
    if (choice === "system") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = choice;
  };
  const stored = localStorage.getItem(STORED);
  const choice = CHOICES.has(stored) ? stored : "system";
  select.value = choice;
  apply(choice);
  select.addEventListener("change", () => {
    const picked = CHOICES.has(select.value) ? select.value : "system";
    if (picked === "system") localStorage.removeItem(STORED);
    else localStorage.setItem(STORED, picked);
    apply(picked);
  });
}
