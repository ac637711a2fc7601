// The enrollment page: asks the device service who the link in the address bar is for,
// then registers this browser's authenticator through navigator.credentials.create.
//
// #status carries data-state = loading | ready | working | success | error (and data-code,
// the gRPC code name, on errors) so people and tests can read the outcome.
"use strict";

(() => {
  // The link secret, taken before anything else runs: from the fragment of a link
  // (`/enroll#<secret>`: browsers never send a fragment to a server) or, for deprecated
  // path links, from the path (`/enroll/<secret>`). The address bar and this history entry
  // are then rewritten without it, so it is not left in history, bookmarks or a shared
  // screenshot; from here on it lives only in this constant and goes to the server only in
  // the body of the begin call.
  const LINK_SECRET = takeLinkSecret();
  // The shared WebAuthn helpers (webauthn.js, loaded first; it defines functions only).
  const { creationOptions, registrationJson: credentialJson, sentence } = window.EnrollWebAuthn;

  function takeLinkSecret() {
    const here = window.location;
    const decode = (text) => {
      try {
        return decodeURIComponent(text);
      } catch (_) {
        return "";
      }
    };
    const parts = here.pathname.split("/").filter((part) => part.length > 0);
    const pathLink = parts.length === 2 && parts[0] === "enroll";
    let secret = "";
    if (here.hash.length > 1) {
      secret = decode(here.hash.slice(1));
    } else if (pathLink) {
      secret = decode(parts[1]);
    }
    if (here.hash || pathLink) {
      const clean = (pathLink ? "/enroll/" : here.pathname) + here.search;
      try {
        window.history.replaceState(null, "", clean);
      } catch (_) {
        // Without the History API the secret stays visible; the page still works.
      }
    }
    return secret.trim();
  }

  // Another link opened in this tab changes only the fragment, which loads no new page:
  // reload, so the new link is read (and removed) from the start. Our own replaceState
  // fires no hashchange.
  window.addEventListener("hashchange", () => {
    if (window.location.hash.length > 1) {
      window.location.reload();
    }
  });

  const statusBox = document.getElementById("status");
  const message = document.getElementById("message");
  const button = document.getElementById("register");
  const hint = document.getElementById("hint");
  const details = document.getElementById("details");

  const DEVICE_TYPES = {
    any: "Any authenticator (security key, passkey or built-in)",
    enclave_only: "Enclave-only platform authenticator (this device's built-in TPM, Secure Enclave or Android keystore)",
  };

  // Messages for errors the browser raises; the server's messages are shown as they come.
  const BROWSER_ERRORS = {
    NotAllowedError: "The request was cancelled or timed out. Press the button to try again.",
    InvalidStateError: "This authenticator is already registered. Try a different one.",
    NotSupportedError: "This authenticator does not support the required options. Try a different one.",
    SecurityError: "The browser refused the request for this site (it must be opened over https or on localhost).",
    AbortError: "The request was cancelled. Press the button to try again.",
  };

  // Answers to begin that a retry cannot fix (used, expired, revoked or unknown link; a
  // policy refusal): the button goes away.
  const FINAL_CODES = new Set(["NOT_FOUND", "FAILED_PRECONDITION", "PERMISSION_DENIED", "INVALID_ARGUMENT", "UNIMPLEMENTED"]);
  // Answers to finish that no other authenticator would change.
  const FINAL_FINISH_CODES = new Set(["PERMISSION_DENIED", "UNIMPLEMENTED"]);

  function beginFailed(error) {
    if (error instanceof ApiError) {
      const final = FINAL_CODES.has(error.code);
      const deadLink = error.code === "NOT_FOUND" || error.code === "FAILED_PRECONDITION";
      fail(error.message, error.code, !final, deadLink);
    } else {
      fail("Something went wrong on this page. Reload it and try again.", "PAGE", false, false);
    }
  }

  // A ceremony close to its expiry is replaced before the authenticator is asked, so the
  // user does not touch a key only to be told the challenge expired.
  const EXPIRY_MARGIN_MS = 15000;

  // How long the success message stays before the redirect.
  const REDIRECT_DELAY_MS = 1500;

  let ceremony = null;
  let busy = false;

  function setState(state, text, extra) {
    statusBox.dataset.state = state;
    if (extra && extra.code) {
      statusBox.dataset.code = extra.code;
    } else {
      delete statusBox.dataset.code;
    }
    // Errors interrupt (alert); progress is announced politely.
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

  function fail(text, code, retry, deadLink) {
    setState("error", sentence(text), { code });
    // A link that cannot be used any more can only be replaced by whoever issued it.
    hint.hidden = !deadLink;
    showButton(retry, "Try again");
    if (retry) {
      button.focus();
    }
  }

  // --- server calls ----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(code, text) {
      super(text);
      this.code = code;
    }
  }

  async function post(path, body) {
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (_) {
      throw new ApiError("UNAVAILABLE", "The enrollment service cannot be reached. Check your connection and try again.");
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (_) {
      answer = null;
    }
    if (!response.ok) {
      const code = (answer && answer.code) || "UNKNOWN";
      const text = (answer && answer.message) || `The enrollment service answered ${response.status}.`;
      throw new ApiError(code, text);
    }
    if (answer === null) {
      throw new ApiError("UNKNOWN", "The enrollment service sent an unreadable answer.");
    }
    return answer;
  }

  async function beginCeremony(secret) {
    const answer = await post("/enroll/api/begin", { secret });
    const expires = answer.expire_time ? Date.parse(answer.expire_time) : NaN;
    ceremony = {
      id: answer.ceremony_id,
      options: answer.options,
      expires: Number.isNaN(expires) ? Date.now() + 5 * 60 * 1000 : expires,
      used: false,
    };
    return answer;
  }

  function showSubject(answer) {
    document.getElementById("realm").textContent = answer.realm;
    document.getElementById("user").textContent = answer.user;
    document.getElementById("device-type").textContent = DEVICE_TYPES[answer.device_type] || answer.device_type;
    details.dataset.deviceType = answer.device_type;
    details.hidden = false;
  }

  // --- WebAuthn --------------------------------------------------------------------------

  // Only web addresses: a redirect URL comes from the server's allow-list, and this keeps a
  // javascript: URL from ever running even if the list were misconfigured.
  function safeRedirect(url) {
    if (!url) {
      return null;
    }
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  async function register() {
    if (busy) {
      return;
    }
    busy = true;
    button.disabled = true;
    try {
      if (!ceremony || ceremony.used || Date.now() > ceremony.expires - EXPIRY_MARGIN_MS) {
        setState("working", "Preparing the registration…");
        try {
          showSubject(await beginCeremony(LINK_SECRET));
        } catch (error) {
          beginFailed(error);
          return;
        }
      }
      setState("working", "Follow your browser's prompt: touch your security key or confirm with your device.");
      let credential;
      try {
        credential = await navigator.credentials.create({ publicKey: creationOptions(ceremony.options) });
      } catch (error) {
        const name = error && error.name;
        fail(BROWSER_ERRORS[name] || `Your browser could not create the credential (${name || "unknown error"}).`, name || "BROWSER", true, false);
        return;
      }
      if (!credential) {
        fail("No credential was created. Press the button to try again.", "BROWSER", true, false);
        return;
      }
      setState("working", "Saving your device…");
      // A ceremony is single-use: whatever the answer, the next try begins a new one.
      ceremony.used = true;
      const answer = await post("/enroll/api/finish", {
        ceremony_id: ceremony.id,
        credential: credentialJson(credential),
      });
      showButton(false);
      const pending = answer.device && answer.device.state === "pending_approval";
      const redirect = safeRedirect(answer.redirect_url);
      if (answer.device) {
        statusBox.dataset.deviceId = answer.device.id;
      }
      if (redirect) {
        setState("success", "Your device is registered. Taking you back…");
        window.setTimeout(() => window.location.assign(redirect), REDIRECT_DELAY_MS);
      } else if (pending) {
        setState("success", "Your device is registered and waits for an administrator's approval. You can close this page.");
      } else {
        setState("success", "Your device is registered. You can close this page.");
      }
    } catch (error) {
      // Finish refused this credential (or failed): the link itself may still be good, so
      // another try begins a new ceremony, and begin reports a link that is gone.
      if (error instanceof ApiError) {
        fail(error.message, error.code, !FINAL_FINISH_CODES.has(error.code), false);
      } else {
        fail("Something went wrong on this page. Reload it and try again.", "PAGE", false, false);
      }
    } finally {
      busy = false;
    }
  }

  async function start() {
    // An OTP enrollment link (`#otp-<secret>`), or a reload after one was redeemed here.
    const otp = window.EnrollOtp;
    const otpUi = { post, setState, fail, ApiError, sentence };
    if (otp && LINK_SECRET.startsWith(otp.PREFIX)) {
      await otp.redeem(LINK_SECRET.slice(otp.PREFIX.length), otpUi);
      return;
    }
    if (otp && !LINK_SECRET && (await otp.resume(otpUi))) {
      return;
    }
    if (!window.isSecureContext || !window.PublicKeyCredential || !navigator.credentials) {
      fail("This browser cannot register security devices here: open the link over https in a current browser.", "UNSUPPORTED", false, false);
      return;
    }
    if (!LINK_SECRET) {
      // Also after a reload: the page forgets the secret once it has read it.
      fail("This page has no enrollment link. Open the whole link you were sent again.", "INVALID_ARGUMENT", false, true);
      return;
    }
    try {
      const answer = await beginCeremony(LINK_SECRET);
      showSubject(answer);
      setState("ready", "Press the button, then follow your browser's prompt.");
      showButton(true, "Register this device");
    } catch (error) {
      // A used, expired, revoked or unknown link: say so at once, nothing to press.
      beginFailed(error);
    }
  }

  button.addEventListener("click", () => {
    register();
  });

  start();
})();
