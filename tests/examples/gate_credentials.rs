//! Credentials for `scripts/bench-gate.sh`: an identity provider of the benchmark's own and
//! a signed-in device session, without a browser or an authenticator.
//!
//! `gate-credentials <dir> <realm> <user> <credential id>` writes the issuer's JWKS to
//! `<dir>/jwks.json` (the gate reads it at start) and prints shell assignments:
//! `ISSUER`, `AUDIENCE`, `SESSION_KEY` (the gate's configuration), `JWT` (valid for an
//! hour) and `COOKIE` (`name=value`: a session for that credential, sealed with
//! `SESSION_KEY` exactly as the gate seals one after a sign-in). The device with that
//! credential id must exist for the gate to let the session through.
use enroll_device::domain::devices::DeviceKind;
use enroll_device::domain::names::{Realm, UserName};
use enroll_device::gate::session::{GateSession, SessionSeal};
use enroll_e2e::{GATE_AUDIENCE, GATE_ISSUER, GATE_SESSION_KEY, JwtIssuer, gate_config};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, realm, user, credential_id] = args.as_slice() else {
        return Err("usage: gate-credentials <dir> <realm> <user> <credential id>".to_owned());
    };
    let issuer = JwtIssuer::new();
    let jwks = std::path::Path::new(dir).join("jwks.json");
    std::fs::write(&jwks, issuer.jwks_json())
        .map_err(|error| format!("write {}: {error}", jwks.display()))?;
    let jwt = issuer.token_with(realm, user, |claims| {
        claims["exp"] = serde_json::json!(chrono::Utc::now().timestamp() + 3600);
    });
    let seal = SessionSeal::from_config(&gate_config(&issuer, &["localhost".to_owned()]).session)?;
    let now = chrono::Utc::now();
    let session = GateSession {
        realm: Realm::parse(realm).map_err(|error| error.to_string())?,
        user: UserName::parse(user).map_err(|error| error.to_string())?,
        credential_id: credential_id.clone(),
        device_type: DeviceKind::Any,
        issued_at: now,
        refreshed_at: now,
    };
    println!("ISSUER='{GATE_ISSUER}'");
    println!("AUDIENCE='{GATE_AUDIENCE}'");
    println!("SESSION_KEY='{GATE_SESSION_KEY}'");
    println!("JWT='{jwt}'");
    println!("COOKIE='{}={}'", seal.cookie_name(), seal.seal(&session));
    Ok(())
}
