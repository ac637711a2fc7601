#!/usr/bin/env python3
"""An event receiver for the end-to-end tests, verifying with the reference libraries.

* POST /caep: a Shared Signals / CAEP security event token pushed per RFC 8935
  (`Content-Type: application/secevent+jwt`, the body one signed JWT). Verified with PyJWT
  against the JWKS at --jwks-url (or --jwks-file), fetched again whenever a token names a
  `kid` the receiver does not know (key rotation). Answers 202, or 400 with
  `{"err": ..., "description": ...}` (RFC 8935 section 2.4).
* POST /webhook: a Standard Webhook, verified with the `standardwebhooks` reference library
  under each --webhook-secret (two during a secret rotation). Answers 204, or 400.
* POST /control `{"path": "/webhook", "status": 500, "retry_after": 3, "times": 2}` queues
  forced answers for a path (retry tests): such a request is still verified and logged,
  with `"forced": status`, but not accepted.
* POST /control `{"poll": {"url": ..., "token": ..., "max_events": n, "return_immediately":
  true, "ack": [jti, ...] | "verified", "set_errs": {jti: {"err", "description"}}}}` makes
  the receiver an RFC 8936 poll client for one poll: it POSTs the poll request to `url` with
  `Authorization: Bearer <token>`, verifies every SET of the answer with PyJWT (as /caep
  does; the answer's key must be the token's `jti`), logs each as `{"kind": "poll_set"}`,
  and answers `{"status", "sets": {jti: {"ok", "claims"|"error"}}, "moreAvailable"}` (or the
  transmitter's error status and body). `"ack": "verified"` acknowledges every SET verified
  by earlier polls and not acknowledged yet.
* GET /log: every request received so far, a JSON array (also appended to --log as JSON
  lines). GET /health: 200.

Prints `PORT <n>` as its first line once it listens (`--port 0`: an ephemeral port).
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import standardwebhooks

ALGORITHMS = ["ES256", "RS256"]
# The algorithm each key type may sign with (no algorithm confusion).
ALGORITHM_OF_KTY = {"EC": "ES256", "RSA": "RS256"}
SET_TYPE = "secevent+jwt"
SET_CONTENT_TYPE = "application/secevent+jwt"
MAX_BODY = 1 << 20


class Refused(Exception):
    """A request the receiver refuses: the RFC 8935 error code and a description."""

    def __init__(self, err, description):
        super().__init__(description)
        self.err = err
        self.description = description


class Receiver:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.entries = []
        self.forced = {}  # path -> list of [status, retry_after, times left, hold seconds]
        self.keys = {}  # kid -> PyJWK
        self.jwks_fetches = 0
        self.webhooks = [standardwebhooks.Webhook(secret) for secret in args.webhook_secret]
        self.unacked = []  # jtis of polled SETs verified and not acknowledged yet, in order
        self.log_file = open(args.log, "a", encoding="utf-8") if args.log else None

    # The log.

    def record(self, entry):
        entry.setdefault("received_at", time.time())
        with self.lock:
            self.entries.append(entry)
            if self.log_file:
                self.log_file.write(json.dumps(entry, sort_keys=True) + "\n")
                self.log_file.flush()

    def log(self):
        with self.lock:
            return list(self.entries)

    # Scripted failures.

    def force(self, path, status, retry_after, times, hold=0):
        with self.lock:
            self.forced.setdefault(path, []).append([status, retry_after, times, hold])

    def take_forced(self, path):
        with self.lock:
            queue = self.forced.get(path) or []
            while queue and queue[0][2] <= 0:
                queue.pop(0)
            if not queue:
                return None
            queue[0][2] -= 1
            return queue[0][0], queue[0][1], queue[0][3]

    # Keys.

    def fetch_jwks(self):
        if self.args.jwks_file:
            with open(self.args.jwks_file, "rb") as file:
                document = json.load(file)
        else:
            request = urllib.request.Request(
                self.args.jwks_url, headers={"Accept": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                document = json.load(response)
        keys = {}
        for jwk in document.get("keys", []):
            kid = jwk.get("kid")
            if not kid or jwk.get("kty") not in ALGORITHM_OF_KTY:
                continue
            try:
                keys[kid] = jwt.PyJWK.from_dict(jwk)
            except jwt.PyJWTError:
                continue
        with self.lock:
            self.keys = keys
            self.jwks_fetches += 1

    def key(self, kid):
        with self.lock:
            known = self.keys.get(kid)
        if known is not None:
            return known
        # An unknown kid: the keys may have rotated, fetch the JWKS again.
        try:
            self.fetch_jwks()
        except Exception as error:  # noqa: BLE001 (any failure to fetch refuses the token)
            raise Refused("invalid_key", f"cannot fetch the JWKS: {error}") from error
        with self.lock:
            known = self.keys.get(kid)
        if known is None:
            raise Refused("invalid_key", f"no key {kid!r} in the JWKS")
        return known

    # Security event tokens.

    def verify_set(self, token):
        """The verified SET's header and claims, or Refused."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise Refused("invalid_request", f"not a JWT: {error}") from error
        if header.get("typ") != SET_TYPE:
            raise Refused("invalid_request", f"typ is {header.get('typ')!r}, not {SET_TYPE!r}")
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise Refused("invalid_request", f"alg {algorithm!r} is not one of {ALGORITHMS}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Refused("invalid_key", "no kid in the header")
        jwk = self.key(kid)
        kty = jwk.key_type
        # The key's algorithm (its JWK's alg, else the one of its type and curve) must be
        # the token's: no algorithm confusion.
        if ALGORITHM_OF_KTY.get(kty) != algorithm or jwk.algorithm_name != algorithm:
            raise Refused("invalid_key", f"key {kid!r} ({kty}) does not sign {algorithm}")
        try:
            claims = jwt.decode(
                token,
                key=jwk.key,
                algorithms=[algorithm],
                audience=self.args.audience,
                issuer=self.args.issuer,
                options={"require": ["iss", "aud", "iat", "jti"]},
            )
        except jwt.InvalidIssuerError as error:
            raise Refused("invalid_issuer", str(error)) from error
        except jwt.InvalidAudienceError as error:
            raise Refused("invalid_audience", str(error)) from error
        except jwt.InvalidSignatureError as error:
            raise Refused("invalid_key", f"signature: {error}") from error
        except jwt.PyJWTError as error:
            raise Refused("invalid_request", f"{type(error).__name__}: {error}") from error
        # Shared Signals: the subject is in sub_id (or the event), a SET has no sub and no
        # exp (RFC 8417 section 2.2), and the receiver takes one event per token.
        if "sub" in claims:
            raise Refused("invalid_request", "a SET has no sub claim (use sub_id)")
        if "exp" in claims:
            raise Refused("invalid_request", "a SET has no exp claim")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise Refused("invalid_request", "jti is not a non-empty string")
        events = claims.get("events")
        if not isinstance(events, dict) or len(events) != 1:
            raise Refused("invalid_request", "events is not an object with exactly one event")
        (event,) = events.values()
        if not isinstance(event, dict):
            raise Refused("invalid_request", "the event is not an object")
        return header, claims

    # RFC 8936 poll delivery.

    def poll(self, order):
        """One poll of a transmitter; the answer for /control."""
        ack = order.get("ack") or []
        with self.lock:
            if ack == "verified":
                ack = list(self.unacked)
        request = {
            "returnImmediately": bool(order.get("return_immediately", True)),
            "ack": ack,
            "setErrs": order.get("set_errs") or {},
        }
        if order.get("max_events") is not None:
            request["maxEvents"] = int(order["max_events"])
        http = urllib.request.Request(
            order["url"],
            data=json.dumps(request).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Authorization": f"Bearer {order['token']}",
            },
        )
        try:
            with urllib.request.urlopen(http, timeout=float(order.get("timeout", 40))) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return {"status": error.code, "body": error.read().decode("utf-8", "replace")}
        with self.lock:
            settled = set(ack) | set(request["setErrs"])
            self.unacked = [jti for jti in self.unacked if jti not in settled]
        document = json.loads(body)
        sets = {}
        for jti, token in (document.get("sets") or {}).items():
            entry = {"kind": "poll_set", "ok": False, "jti": jti, "token": token}
            try:
                header, claims = self.verify_set(token)
                if claims["jti"] != jti:
                    raise Refused("invalid_request", f"listed as {jti!r}, jti {claims['jti']!r}")
                entry.update(ok=True, kid=header["kid"], header=header, claims=claims)
                with self.lock:
                    if jti not in self.unacked:
                        self.unacked.append(jti)
            except Refused as error:
                entry.update(err=error.err, error=error.description)
            entry["accepted"] = entry["ok"]
            self.record(entry)
            sets[jti] = {
                key: entry[key] for key in ("ok", "claims", "err", "error") if key in entry
            }
        return {
            "status": status,
            "sets": sets,
            # The answer's order (JSON objects have none once parsed elsewhere).
            "order": list(sets),
            "moreAvailable": document.get("moreAvailable"),
        }

    # Webhooks.

    def verify_webhook(self, body, headers):
        """The verified payload and the index of the secret that verified it."""
        if not self.webhooks:
            raise Refused("invalid_request", "no webhook secret configured")
        failures = []
        for index, webhook in enumerate(self.webhooks):
            try:
                payload = webhook.verify(body, headers)
            except Exception as error:  # noqa: BLE001 (the library's errors and bad JSON)
                failures.append(f"{type(error).__name__}: {error}")
                continue
            break
        else:
            raise Refused("invalid_request", "; ".join(failures))
        if not isinstance(payload, dict):
            raise Refused("invalid_request", "the payload is not an object")
        if not isinstance(payload.get("type"), str) or not payload["type"]:
            raise Refused("invalid_request", "the payload has no type")
        if not isinstance(payload.get("timestamp"), str):
            raise Refused("invalid_request", "the payload has no timestamp")
        if not isinstance(payload.get("data"), dict):
            raise Refused("invalid_request", "the payload's data is not an object")
        return payload, index


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "enroll-test-receiver/1"
    receiver: Receiver = None

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if self.receiver.args.verbose:
            super().log_message(format, *args)

    def answer(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
                if len(body) > MAX_BODY:
                    raise Refused("invalid_request", "body too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise Refused("invalid_request", "body too large")
        return self.rfile.read(length)

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/health":
            self.answer(200, {"status": "ok"})
        elif self.path == "/log":
            self.answer(200, self.receiver.log())
        else:
            self.answer(404, {"err": "not_found", "description": self.path})

    def do_POST(self):  # noqa: N802 (http.server's name)
        try:
            body = self.read_body()
        except (Refused, ValueError) as error:
            self.close_connection = True
            self.answer(400, {"err": "invalid_request", "description": str(error)})
            return
        if self.path == "/control":
            self.control(body)
        elif self.path == "/caep":
            self.caep(body)
        elif self.path == "/webhook":
            self.webhook(body)
        else:
            self.answer(404, {"err": "not_found", "description": self.path})

    def control(self, body):
        try:
            order = json.loads(body)
            if "poll" in order:
                self.answer(200, self.receiver.poll(order["poll"]))
                return
            if "webhook_secrets" in order:
                # The stream's secret is known only once the stream exists (its URL is
                # this receiver's): set, or rotated, after start.
                self.receiver.webhooks = [
                    standardwebhooks.Webhook(secret) for secret in order["webhook_secrets"]
                ]
                self.answer(200, {"webhook_secrets": len(self.receiver.webhooks)})
                return
            path = order["path"]
            status = int(order["status"])
            retry_after = order.get("retry_after")
            times = int(order.get("times", 1))
            hold = float(order.get("hold") or 0)
        except (ValueError, KeyError, TypeError) as error:
            self.answer(400, {"err": "invalid_request", "description": str(error)})
            return
        self.receiver.force(path, status, retry_after, times, hold)
        self.answer(200, {"queued": times, "path": path, "status": status})

    def finish_event(self, entry, ok_status, refused):
        """Logs `entry` and answers: forced, refused (400) or accepted (`ok_status`)."""
        forced = self.receiver.take_forced(self.path)
        entry["accepted"] = entry["ok"] and forced is None
        if forced is not None:
            entry["forced"] = forced[0]
            if forced[2]:
                entry["held"] = forced[2]
        self.receiver.record(entry)
        if forced is not None:
            status, retry_after, hold = forced
            # A receiver that hangs: the sender sees no answer for `hold` seconds.
            time.sleep(hold)
            headers = [] if retry_after is None else [("Retry-After", str(retry_after))]
            body = None
            if status >= 400:
                body = {"err": "forced", "description": f"forced {status} by /control"}
            self.answer(status, body, headers)
        elif refused is not None:
            self.answer(400, {"err": refused.err, "description": refused.description})
        else:
            self.answer(ok_status)

    def caep(self, body):
        entry = {
            "kind": "set",
            "ok": False,
            "content_type": self.headers.get("Content-Type"),
            "token": body.decode("utf-8", "replace"),
        }
        refused = None
        try:
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type.lower() != SET_CONTENT_TYPE:
                raise Refused("invalid_request", f"Content-Type {content_type!r}")
            header, claims = self.receiver.verify_set(body.decode("ascii").strip())
            entry.update(ok=True, jti=claims["jti"], kid=header["kid"], header=header)
            entry["claims"] = claims
        except UnicodeDecodeError:
            refused = Refused("invalid_request", "the body is not a compact JWT")
        except Refused as error:
            refused = error
        if refused is not None:
            entry.update(err=refused.err, error=refused.description)
        self.finish_event(entry, 202, refused)

    def webhook(self, body):
        headers = {name.lower(): value for name, value in self.headers.items()}
        entry = {
            "kind": "webhook",
            "ok": False,
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "content_type": headers.get("content-type"),
            "body": body.decode("utf-8", "replace"),
        }
        refused = None
        try:
            payload, secret = self.receiver.verify_webhook(body, headers)
            entry.update(ok=True, type=payload["type"], payload=payload, secret_index=secret)
        except Refused as error:
            refused = error
            entry.update(error=error.description)
        self.finish_event(entry, 204, refused)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--jwks-url", help="the published JWKS (fetched on an unknown kid)")
    keys.add_argument("--jwks-file", help="a JWKS file (read on an unknown kid)")
    parser.add_argument("--issuer", help="the SETs' iss")
    parser.add_argument("--audience", help="the SETs' aud")
    parser.add_argument(
        "--webhook-secret", action="append", default=[], help="whsec_...; twice in a rotation"
    )
    parser.add_argument("--log", help="append every request to this file as JSON lines")
    parser.add_argument(
        "--exit-with-stdin", action="store_true", help="exit when stdin closes (its parent ended)"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    Handler.receiver = Receiver(args)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)

    if args.exit_with_stdin:

        def watch():
            sys.stdin.buffer.read()
            os._exit(0)

        threading.Thread(target=watch, daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
