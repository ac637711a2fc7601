// The OTP part of the enrollment page: a link whose fragment starts with `otp-` is
// redeemed (the service makes the seed now and shows it to this browser only, keeping the
// redemption session in an HttpOnly cookie), the person adds it to an authenticator app
// and enters the first code (and a PIN when the policy asks for one). A reload shows the
// same key again until the verify window ends; the link itself no longer works.
//
// Loaded before enroll.js, which calls EnrollOtp.redeem / EnrollOtp.resume with its own
// helpers (post, setState, fail, ApiError).
"use strict";

window.EnrollOtp = (() => {
  const PREFIX = "otp-";
  const TYPES = { totp: "Time-based (TOTP)", hotp: "Counter-based (HOTP)" };

  const byId = (id) => document.getElementById(id);

  function show(answer, ui) {
    byId("title").textContent = "Set up your authenticator app";
    document.title = "Set up your authenticator app";
    byId("lead").textContent =
      "Scan the QR code with your authenticator app (or type the key into it), then enter the code the app shows.";
    byId("realm").textContent = answer.realm;
    byId("user").textContent = answer.user;
    byId("device-type-label").textContent = "Token";
    byId("device-type").textContent = `${TYPES[answer.token_type] || answer.token_type}, ${answer.digits} digits`;
    byId("details").hidden = false;
    byId("otp-qr").src = answer.qr_png;
    // In groups of four, as authenticator apps accept it typed (they ignore the spaces).
    byId("otp-secret").textContent = (answer.secret.match(/.{1,4}/g) || []).join(" ");
    byId("otp-label").textContent = answer.label;
    byId("otp-serial").textContent = answer.serial;
    const deadline = new Date(answer.verify_deadline);
    byId("otp-deadline").textContent = Number.isNaN(deadline.getTime()) ? answer.verify_deadline : deadline.toLocaleString();
    byId("otp-pin-fields").hidden = !answer.pin_required;
    byId("otp-pin").required = answer.pin_required;
    byId("otp-pin-again").required = answer.pin_required;
    if (answer.pin_min_length) {
      byId("otp-pin").minLength = answer.pin_min_length;
    }
    byId("otp").hidden = false;
    byId("otp").dataset.serial = answer.serial;
    ui.setState("ready", "Add the key to your app, then enter the code it shows.");
    wire(ui);
    byId("otp-code").focus();
  }

  let wired = false;
  let busy = false;

  function wire(ui) {
    if (wired) {
      return;
    }
    wired = true;
    byId("otp-form").addEventListener("submit", (event) => {
      event.preventDefault();
      finish(ui);
    });
  }

  async function finish(ui) {
    if (busy) {
      return;
    }
    const code = byId("otp-code").value.trim();
    const pin = byId("otp-pin").value;
    if (!byId("otp-pin-fields").hidden && pin !== byId("otp-pin-again").value) {
      ui.setState("error", "The two PINs differ. Type the same PIN twice.", { code: "INVALID_ARGUMENT" });
      return;
    }
    busy = true;
    byId("otp-finish").disabled = true;
    ui.setState("working", "Checking your code…");
    try {
      const answer = await ui.post("/enroll/api/otp/finish", { code, pin });
      byId("otp-form").hidden = true;
      byId("otp-qr").removeAttribute("src");
      byId("otp-qr").hidden = true;
      byId("otp-secret").textContent = "";
      byId("otp-keys").hidden = true;
      if (answer.pin) {
        byId("otp-random-pin").textContent = answer.pin;
        byId("otp-random-pin-box").hidden = false;
      }
      ui.setState("success", "Your authenticator app is set up. You can close this page.");
    } catch (error) {
      if (error instanceof ui.ApiError) {
        const final = error.code === "NOT_FOUND" || error.code === "FAILED_PRECONDITION" || error.code === "PERMISSION_DENIED";
        if (final) {
          byId("otp-form").hidden = true;
          byId("otp-keys").hidden = true;
          byId("otp-qr").hidden = true;
        }
        ui.setState("error", ui.sentence(error.message), { code: error.code });
        byId("hint").hidden = !final;
      } else {
        ui.setState("error", "Something went wrong on this page. Reload it and try again.", { code: "PAGE" });
      }
    } finally {
      busy = false;
      byId("otp-finish").disabled = false;
    }
  }

  // A link that cannot be used, whatever the reason: the same words for every case.
  function unusable(ui, error) {
    if (error instanceof ui.ApiError && error.code === "NOT_FOUND") {
      ui.fail("This enrollment link cannot be used: it may have expired or been used already, or it was made for someone else", "NOT_FOUND", false, true);
    } else if (error instanceof ui.ApiError) {
      const final = error.code !== "UNAVAILABLE" && error.code !== "RESOURCE_EXHAUSTED";
      ui.fail(error.message, error.code, false, final);
    } else {
      ui.fail("Something went wrong on this page. Reload it and try again.", "PAGE", false, false);
    }
  }

  // Redeems the link; when this browser redeemed it before (a reload that still had the
  // fragment), its session shows the same key.
  async function redeem(secret, ui) {
    ui.setState("loading", "Checking your enrollment link…");
    try {
      show(await ui.post("/enroll/api/otp/redeem", { secret }), ui);
    } catch (error) {
      if (error instanceof ui.ApiError && error.code === "NOT_FOUND" && (await resume(ui))) {
        return;
      }
      unusable(ui, error);
    }
  }

  // True when this browser has an enrollment waiting for its first code (its cookie).
  async function resume(ui) {
    try {
      show(await ui.post("/enroll/api/otp/resume", {}), ui);
      return true;
    } catch (_) {
      return false;
    }
  }

  return { PREFIX, redeem, resume };
})();
