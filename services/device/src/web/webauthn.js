// WebAuthn helpers shared by the enrollment page and the gate's sign-in page: base64url
// conversions, the options webauthn-rs sends turned into what the browser wants, and the
// credentials turned back into the JSON webauthn-rs parses. Defines functions only: it
// reads nothing from the page or its address (the enrollment page's script takes the link
// secret before anything of its own runs).
"use strict";

window.EnrollWebAuthn = Object.freeze((() => {
  function fromBase64Url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "===".slice((base64.length + 3) % 4);
    const binary = atob(padded);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64Url(buffer) {
    if (!buffer) {
      return undefined;
    }
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i += 1) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // webauthn-rs sends a CreationChallengeResponse ({"publicKey": {...}}) with binary fields
  // as base64url strings; the browser wants ArrayBuffers.
  function creationOptions(options) {
    const source = options && options.publicKey ? options.publicKey : options;
    const publicKey = Object.assign({}, source);
    publicKey.challenge = fromBase64Url(source.challenge);
    publicKey.user = Object.assign({}, source.user, { id: fromBase64Url(source.user.id) });
    if (Array.isArray(source.excludeCredentials)) {
      publicKey.excludeCredentials = source.excludeCredentials.map((credential) =>
        Object.assign({}, credential, { id: fromBase64Url(credential.id) }));
    }
    return publicKey;
  }

  // The same for a RequestChallengeResponse (navigator.credentials.get).
  function requestOptions(options) {
    const source = options && options.publicKey ? options.publicKey : options;
    const publicKey = Object.assign({}, source);
    publicKey.challenge = fromBase64Url(source.challenge);
    if (Array.isArray(source.allowCredentials)) {
      publicKey.allowCredentials = source.allowCredentials.map((credential) =>
        Object.assign({}, credential, { id: fromBase64Url(credential.id) }));
    }
    return publicKey;
  }

  // The RegisterPublicKeyCredential JSON webauthn-rs parses.
  function registrationJson(credential) {
    const response = credential.response;
    const transports = typeof response.getTransports === "function" ? response.getTransports() : undefined;
    return {
      id: credential.id,
      rawId: toBase64Url(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toBase64Url(response.attestationObject),
        clientDataJSON: toBase64Url(response.clientDataJSON),
        transports,
      },
      extensions: credential.getClientExtensionResults(),
    };
  }

  // The PublicKeyCredential (assertion) JSON webauthn-rs parses.
  function assertionJson(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: toBase64Url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toBase64Url(response.authenticatorData),
        clientDataJSON: toBase64Url(response.clientDataJSON),
        signature: toBase64Url(response.signature),
        userHandle: toBase64Url(response.userHandle),
      },
      extensions: credential.getClientExtensionResults(),
    };
  }

  // Server messages are written for logs ("enrollment link not found"); shown as sentences.
  function sentence(text) {
    const trimmed = String(text || "").trim();
    if (!trimmed) {
      return "Something went wrong.";
    }
    const first = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
    return /[.!?…]$/.test(first) ? first : `${first}.`;
  }

  return { fromBase64Url, toBase64Url, creationOptions, requestOptions, registrationJson, assertionJson, sentence };
})());
