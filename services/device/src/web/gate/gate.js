// The gate's sign-in page, served by the proxy under a path of the protected host: asks
// who the proxy in front says we are and what our devices allow, then authenticates with an
// enrolled device (navigator.credentials.get), registers one when the policy lets the user
// self-register, or shows why not. On success the gate sets its session cookie and the
// page returns to the URL the person came from (checked by the server against the
// protected hosts).
//
// #status carries data-state = loading | ready | working | success | error, and data-next
// = authenticate | register | pending | ask_admin, so people and tests can read the outcome.
"use strict";

(() => {
  const params = new URLSearchParams(window.location.search);
  const REQUIRED_TYPE = params.get("type") || "";
  const RETURN_URL = params.get("rd") || "";
  // The API lives next to this page (`<prefix>/api/...`), whatever the prefix is.
  const BASE = window.location.pathname.replace(/\/?$/, "/");
  // The shared WebAuthn helpers (webauthn.js, loaded first).
  const { creationOptions, requestOptions, registrationJson, assertionJson, sentence } =
    window.EnrollWebAuthn;

  const statusBox = document.getElementById("status");
  const message = document.getElementById("message");
  const button = document.getElementById("action");
  const signOut = document.getElementById("signout");
  const reasonsList = document.getElementById("reasons");

  const DEVICE_TYPES = {
    any: "Any authenticator (security key, passkey or built-in)",
    enclave_only: "Enclave-only platform authenticator (built-in TPM, Secure Enclave or Android keystore)",
  };

  const BROWSER_ERRORS = {
    NotAllowedError: "The request was cancelled or timed out. Press the button to try again.",
    InvalidStateError: "This authenticator is already registered. Try a different one.",
    NotSupportedError: "This authenticator does not support the required options.",
    SecurityError: "The browser refused the request for this site.",
    AbortError: "The request was cancelled. Press the button to try again.",
  };

  let next = null;
  let returnUrl = null;
  let busy = false;

  function setState(state, text, code) {
    statusBox.dataset.state = state;
    if (code) {
      statusBox.dataset.code = code;
    } else {
      delete statusBox.dataset.code;
    }
    statusBox.setAttribute("role", state === "error" ? "alert" : "status");
    message.textContent = text;
  }

  function showButton(visible, label) {
    button.hidden = !visible;
    button.disabled = !visible;
    if (label) {
      button.textContent = label;
    }
  }

  function showReasons(reasons) {
    reasonsList.textContent = "";
    (reasons || []).forEach((reason) => {
      const item = document.createElement("li");
      item.textContent = sentence(reason);
      reasonsList.appendChild(item);
    });
    reasonsList.hidden = !reasons || reasons.length === 0;
  }

  class ApiError extends Error {
    constructor(code, text) {
      super(text);
      this.code = code;
    }
  }

  async function post(path, body) {
    let response;
    try {
      response = await fetch(BASE + path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (_) {
      throw new ApiError("UNAVAILABLE", "The sign-in service cannot be reached. Check your connection and try again.");
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (_) {
      answer = null;
    }
    if (!response.ok) {
      const code = (answer && (answer.code || answer.error)) || "UNKNOWN";
      const text = (answer && (answer.message || answer.reason)) || `The sign-in service answered ${response.status}.`;
      throw new ApiError(code, text);
    }
    if (answer === null) {
      throw new ApiError("UNKNOWN", "The sign-in service sent an unreadable answer.");
    }
    return answer;
  }

  // Only web addresses on this page's own scheme family; the server checked the host.
  function safeRedirect(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  function failed(error) {
    if (error instanceof ApiError) {
      setState("error", sentence(error.message), error.code);
      const retry = !["UNAUTHENTICATED", "RETURN_URL_REFUSED", "PERMISSION_DENIED", "DEVICE_TYPE_INVALID", "DEVICE_TYPE_MISSING"].includes(error.code);
      showButton(retry, "Try again");
    } else if (error && BROWSER_ERRORS[error.name]) {
      setState("error", BROWSER_ERRORS[error.name], error.name);
      showButton(true, "Try again");
    } else {
      setState("error", "Something went wrong on this page. Reload it and try again.", "PAGE");
      showButton(false);
    }
  }

  async function authenticate() {
    const begun = await post("api/authenticate/begin", { type: REQUIRED_TYPE });
    setState("working", "Confirm with your device…");
    const credential = await navigator.credentials.get({ publicKey: requestOptions(begun.options) });
    setState("working", "Checking…");
    const done = await post("api/authenticate/finish", {
      ceremony_id: begun.ceremony_id,
      credential: assertionJson(credential),
      type: REQUIRED_TYPE,
      rd: RETURN_URL,
    });
    setState("success", "Signed in. Taking you back…");
    const target = safeRedirect(done.redirect || returnUrl);
    if (target) {
      window.location.replace(target);
    }
  }

  async function register() {
    const begun = await post("api/register/begin", { type: REQUIRED_TYPE });
    setState("working", "Create a credential on your device…");
    const credential = await navigator.credentials.create({ publicKey: creationOptions(begun.options) });
    setState("working", "Registering…");
    const done = await post("api/register/finish", {
      ceremony_id: begun.ceremony_id,
      credential: registrationJson(credential),
    });
    if (done.state === "pending_approval") {
      next = "pending";
      statusBox.dataset.next = next;
      setState("success", "Your device is registered. An administrator must approve it before you can sign in with it.", "PENDING_APPROVAL");
      showButton(false);
      return;
    }
    next = "authenticate";
    statusBox.dataset.next = next;
    await authenticate();
  }

  async function act() {
    if (busy) {
      return;
    }
    busy = true;
    showButton(false);
    try {
      if (next === "register") {
        await register();
      } else {
        await authenticate();
      }
    } catch (error) {
      failed(error);
    } finally {
      busy = false;
    }
  }

  async function start() {
    if (!window.isSecureContext || !window.PublicKeyCredential || !navigator.credentials) {
      setState("error", "This browser cannot use security devices on this page (it needs https and WebAuthn).", "UNSUPPORTED");
      return;
    }
    let answer;
    try {
      answer = await post("api/status", { type: REQUIRED_TYPE, rd: RETURN_URL });
    } catch (error) {
      failed(error);
      showButton(false);
      return;
    }
    document.getElementById("realm").textContent = answer.realm;
    document.getElementById("user").textContent = answer.user;
    document.getElementById("device-type").textContent = DEVICE_TYPES[answer.device_type] || answer.device_type;
    document.getElementById("details").hidden = false;
    returnUrl = answer.return_url;
    next = answer.next;
    statusBox.dataset.next = next;
    signOut.hidden = false;
    if (next === "authenticate") {
      showReasons([]);
      setState("ready", "Confirm with your enrolled device to continue.");
      showButton(true, "Sign in with my device");
    } else if (next === "register") {
      showReasons(answer.reasons);
      setState("ready", "You have no device of the required type yet; you may register this one.");
      showButton(true, "Register this device");
    } else if (next === "pending") {
      showReasons(answer.reasons);
      setState("error", "Your device waits for an administrator's approval.", "PENDING_APPROVAL");
    } else {
      showReasons(answer.reasons);
      setState("error", "You have no device this application accepts. Ask your administrator to enroll one.", answer.status);
    }
  }

  button.addEventListener("click", act);
  signOut.addEventListener("click", async () => {
    try {
      await post("api/signout", {});
      setState("success", "Signed out of the device session.", "SIGNED_OUT");
      showButton(false);
    } catch (error) {
      failed(error);
    }
  });
  start();
})();
