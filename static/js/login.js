// The login form.

import { ApiError, api } from "./api.js";
import { $ } from "./dom.js";

export function setUpLogin(onLoggedIn) {
  const form = $("#login-form");
  const username = $("#login-username");
  const password = $("#login-password");
  const error = $("#login-error");
  const submit = $("#login-submit");

  const showError = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    if (!username.value.trim() || !password.value) {
      showError("Enter your username and password.");
      (username.value.trim() ? password : username).focus();
      return;
    }
    submit.disabled = true;
    try {
      await api.login(username.value.trim(), password.value);
      password.value = "";
      await onLoggedIn();
    } catch (exc) {
      const wrong = exc instanceof ApiError && exc.code === "invalid_credentials";
      showError(wrong ? "Wrong username or password." : exc.message || "Logging in failed.");
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });

  return {
    show(message = "") {
      showError(message);
      username.focus();
    },
  };
}
