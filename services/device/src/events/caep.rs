//! Shared Signals (SSF 1.0) security event tokens (RFC 8417): CAEP 1.0 `credential-change`
//! events of enrollment events, the SSF stream verification event, and the transmitter's
//! `/.well-known/ssf-configuration` document.
//!
//! Tokens carry no top-level `sub` (the subject is `sub_id`, RFC 9493) and no `exp` (RFC 8417
//! §2.2: a SET is a statement of fact, not an access token). `jti` is the event's id, so a
//! retried delivery is the same token id and receivers can drop duplicates.
use enroll_shared::jose::jsonwebtoken::{Header, encode};
use serde_json::{Map, Value, json};

use crate::domain::events::{CredentialKind, EnrollmentEvent, EventKind};
use crate::events::signing::SigningKey;

/// The JOSE `typ` of a security event token (RFC 8417 §2.3).
pub const SET_TYP: &str = "secevent+jwt";
/// The CAEP 1.0 credential-change event type.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// The SSF 1.0 stream verification event type.
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// RFC 8935 push delivery.
pub const DELIVERY_PUSH: &str = "urn:ietf:rfc:8935";
/// RFC 8936 poll delivery (`POST /events/poll/<stream id>` on the page's port).
pub const DELIVERY_POLL: &str = "urn:ietf:rfc:8936";

/// How the user is named in `sub_id` (RFC 9493 subject identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectFormat {
    /// `{"format":"iss_sub","iss":<issuer>,"sub":"<realm>/<user>"}`.
    IssSub,
    /// `{"format":"opaque","id":"<realm>/<user>"}`.
    Opaque,
}

/// The stream a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetContext {
    /// `iss`: the transmitter's issuer (its SSF configuration's `issuer`).
    pub issuer: String,
    /// `aud`: the receiver's audience of the stream.
    pub audience: String,
    pub subject_format: SubjectFormat,
    /// When set, the subject is an `email` identifier `<user>@<domain>` instead (a user name
    /// that already holds an `@` is taken as the address as it is).
    pub email_domain: Option<String>,
}

/// The CAEP `credential-change` token of `event`, signed with `key`, issued at `issued_at`
/// (unix seconds: the delivery time; the event's own time is the `event_timestamp`).
///
/// Errors: an event kind that changes no credential (no `caep_change_type`: the caller
/// filters these out), an event without a user (a pool token's: no subject to signal), a
/// token event whose credential kind is unknown. A device event with an unknown kind is
/// `fido2-roaming`, the CAEP type of a WebAuthn authenticator whose attachment is unknown
/// (as `CredentialKind::Fido2Roaming` documents).
///
/// A stream's verification event (`stream.verification`) is the SSF verification token of
/// that stream ([`verification_event`]), its `jti` the event's id like every other.
pub fn security_event_token(
    event: &EnrollmentEvent,
    context: &SetContext,
    key: &SigningKey,
    issued_at: i64,
) -> Result<String, String> {
    if let Some(stream_id) = crate::domain::events::for_stream_only(event) {
        return verification_event(
            context,
            key,
            stream_id,
            event.verification_state.as_deref(),
            issued_at,
            &event.id,
        );
    }
    let change_type = event.kind.caep_change_type().ok_or_else(|| {
        format!(
            "a {} event changes no credential: no CAEP credential-change",
            event.kind.as_str()
        )
    })?;
    if event.user.is_empty() {
        return Err(format!(
            "event {}: no user (a pool token's), so no subject for a security event token",
            event.id
        ));
    }
    let credential_type = credential_type(event)?;

    let mut change = Map::new();
    change.insert("credential_type".into(), credential_type.into());
    change.insert("change_type".into(), change_type.as_str().into());
    if let Some(aaguid) = event.credential.aaguid.as_deref().filter(|a| !a.is_empty()) {
        change.insert("fido2_aaguid".into(), aaguid.into());
    }
    if !event.credential.friendly_name.is_empty() {
        change.insert(
            "friendly_name".into(),
            event.credential.friendly_name.as_str().into(),
        );
    }
    change.insert(
        "initiating_entity".into(),
        event.initiating_entity.caep().into(),
    );
    change.insert("reason_admin".into(), json!({ "en": reason(event) }));
    change.insert("event_timestamp".into(), event.time.timestamp().into());

    let txn = if event.trace_id.is_empty() {
        &event.id
    } else {
        &event.trace_id
    };
    let claims = json!({
        "iss": context.issuer,
        "aud": context.audience,
        "jti": event.id,
        "iat": issued_at,
        "txn": txn,
        "sub_id": subject(event, context),
        "events": { CREDENTIAL_CHANGE: Value::Object(change) },
    });
    sign(&claims, key)
}

/// The SSF stream verification token (SSF 1.0 §8.1.4): its subject is the stream
/// (`{"format":"opaque","id":<stream_id>}`), `state` echoed when the receiver gave one.
pub fn verification_event(
    context: &SetContext,
    key: &SigningKey,
    stream_id: &str,
    state: Option<&str>,
    issued_at: i64,
    jti: &str,
) -> Result<String, String> {
    let mut verification = Map::new();
    if let Some(state) = state {
        verification.insert("state".into(), state.into());
    }
    let claims = json!({
        "iss": context.issuer,
        "aud": context.audience,
        "jti": jti,
        "iat": issued_at,
        "sub_id": { "format": "opaque", "id": stream_id },
        "events": { VERIFICATION: Value::Object(verification) },
    });
    sign(&claims, key)
}

/// The endpoints a transmitter's SSF configuration names besides its issuer and keys; the
/// absent ones are left out of the document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsfEndpoints {
    pub configuration_endpoint: Option<String>,
    pub status_endpoint: Option<String>,
    pub verification_endpoint: Option<String>,
    pub add_subject_endpoint: Option<String>,
    pub remove_subject_endpoint: Option<String>,
    /// `authorization_schemes` `spec_urn`s (e.g. `urn:ietf:rfc:6749` for OAuth bearer
    /// tokens); left out when empty.
    pub authorization_schemes: Vec<String>,
}

/// The `/.well-known/ssf-configuration` document (SSF 1.0 §7.1). No
/// `critical_subject_members`: receivers may ignore any subject member.
pub fn ssf_configuration(issuer: &str, jwks_uri: &str, endpoints: &SsfEndpoints) -> Value {
    let mut document = Map::new();
    document.insert("spec_version".into(), "1_0".into());
    document.insert("issuer".into(), issuer.into());
    document.insert("jwks_uri".into(), jwks_uri.into());
    document.insert(
        "delivery_methods_supported".into(),
        json!([DELIVERY_PUSH, DELIVERY_POLL]),
    );
    let optional = [
        ("configuration_endpoint", &endpoints.configuration_endpoint),
        ("status_endpoint", &endpoints.status_endpoint),
        ("verification_endpoint", &endpoints.verification_endpoint),
        ("add_subject_endpoint", &endpoints.add_subject_endpoint),
        (
            "remove_subject_endpoint",
            &endpoints.remove_subject_endpoint,
        ),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            document.insert(name.into(), value.as_str().into());
        }
    }
    if !endpoints.authorization_schemes.is_empty() {
        let schemes: Vec<Value> = endpoints
            .authorization_schemes
            .iter()
            .map(|urn| json!({ "spec_urn": urn }))
            .collect();
        document.insert("authorization_schemes".into(), Value::Array(schemes));
    }
    Value::Object(document)
}

fn sign(claims: &Value, key: &SigningKey) -> Result<String, String> {
    enroll_shared::jose::install();
    let mut header = Header::new(key.alg().jsonwebtoken());
    header.typ = Some(SET_TYP.to_owned());
    header.kid = Some(key.kid().to_owned());
    encode(&header, claims, key.encoding_key())
        .map_err(|error| format!("signing a security event token: {error}"))
}

fn credential_type(event: &EnrollmentEvent) -> Result<&'static str, String> {
    match (event.credential.kind, event.kind) {
        (Some(kind), _) => Ok(kind.caep()),
        (
            None,
            EventKind::DeviceRegistered
            | EventKind::DeviceApproved
            | EventKind::DeviceRevoked
            | EventKind::DeviceFlagged
            | EventKind::DeviceAuthenticationRefused,
        ) => Ok(CredentialKind::Fido2Roaming.caep()),
        (None, other) => Err(format!(
            "event {}: a {} event without its credential kind",
            event.id,
            other.as_str()
        )),
    }
}

fn subject(event: &EnrollmentEvent, context: &SetContext) -> Value {
    let name = format!("{}/{}", event.realm, event.user);
    match (&context.email_domain, context.subject_format) {
        (Some(domain), _) => {
            let email = if event.user.contains('@') {
                event.user.clone()
            } else {
                format!("{}@{domain}", event.user)
            };
            json!({ "format": "email", "email": email })
        }
        (None, SubjectFormat::IssSub) => {
            json!({ "format": "iss_sub", "iss": context.issuer, "sub": name })
        }
        (None, SubjectFormat::Opaque) => json!({ "format": "opaque", "id": name }),
    }
}

/// The event's reason, or a sentence naming what happened when it has none.
fn reason(event: &EnrollmentEvent) -> String {
    let reason = event.reason.trim();
    if reason.is_empty() {
        format!("Enrollment event {}.", event.kind.as_str())
    } else {
        reason.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{CredentialFacts, InitiatingEntity};
    use crate::events::signing::tests::rsa_key;
    use chrono::TimeZone;
    use enroll_shared::jose::jsonwebtoken::jwk::Jwk;
    use enroll_shared::jose::jsonwebtoken::{DecodingKey, Validation, decode, decode_header};

    fn event(kind: EventKind) -> EnrollmentEvent {
        EnrollmentEvent {
            seq: 7,
            id: "4f1c2a9e-0000-4000-8000-000000000001".into(),
            kind,
            realm: "corp".into(),
            user: "alice".into(),
            subject: "dev-1".into(),
            time: chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            actor: "admin-key".into(),
            initiating_entity: InitiatingEntity::Admin,
            reason: "lost on a train".into(),
            credential: CredentialFacts {
                kind: Some(CredentialKind::Fido2Roaming),
                aaguid: Some("cb69481e-8ff7-4039-93ec-0a2729a154a8".into()),
                friendly_name: "YubiKey 5".into(),
                transports: vec!["usb".into()],
            },
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            verification_state: None,
            policy: None,
        }
    }

    fn context(subject_format: SubjectFormat) -> SetContext {
        SetContext {
            issuer: "https://enroll.example.com".into(),
            audience: "https://receiver.example.net".into(),
            subject_format,
            email_domain: None,
        }
    }

    /// Verifies the token with the key's public JWK (as a receiver would, through the JWKS)
    /// and returns its header's `typ` and its claims.
    fn verified(token: &str, key: &SigningKey, audience: &str) -> (Option<String>, Value) {
        enroll_shared::jose::install();
        let header = decode_header(token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(header.alg, key.alg().jsonwebtoken());
        let jwk: Jwk = serde_json::from_value(key.public_jwk()).unwrap();
        let mut validation = Validation::new(key.alg().jsonwebtoken());
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_exp = false;
        validation.set_audience(&[audience]);
        validation.set_issuer(&["https://enroll.example.com"]);
        let data =
            decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation).unwrap();
        (header.typ, data.claims)
    }

    #[test]
    fn a_credential_change_token_carries_every_claim_and_verifies_es256_and_rs256() {
        let (es, _) = SigningKey::generate_es256("es-1").unwrap();
        for key in [es, rsa_key("rs-1")] {
            let event = event(EventKind::DeviceRevoked);
            let ctx = context(SubjectFormat::IssSub);
            let token = security_event_token(&event, &ctx, &key, 1_700_000_100).unwrap();
            let (typ, claims) = verified(&token, &key, &ctx.audience);
            assert_eq!(typ.as_deref(), Some("secevent+jwt"));
            assert_eq!(claims["iss"], "https://enroll.example.com");
            assert_eq!(claims["aud"], "https://receiver.example.net");
            assert_eq!(claims["jti"], event.id);
            assert_eq!(claims["iat"], 1_700_000_100);
            assert_eq!(claims["txn"], "0af7651916cd43dd8448eb211c80319c");
            assert_eq!(
                claims["sub_id"],
                json!({"format": "iss_sub", "iss": "https://enroll.example.com", "sub": "corp/alice"})
            );
            assert!(claims.get("sub").is_none(), "no top-level sub");
            assert!(claims.get("exp").is_none(), "no exp");
            let object = claims.as_object().unwrap();
            assert_eq!(object.len(), 7, "{claims}");
            assert_eq!(
                claims["events"],
                json!({ CREDENTIAL_CHANGE: {
                    "credential_type": "fido2-roaming",
                    "change_type": "revoke",
                    "fido2_aaguid": "cb69481e-8ff7-4039-93ec-0a2729a154a8",
                    "friendly_name": "YubiKey 5",
                    "initiating_entity": "admin",
                    "reason_admin": {"en": "lost on a train"},
                    "event_timestamp": 1_700_000_000,
                }})
            );
            // A retry: the same jti.
            let again = security_event_token(&event, &ctx, &key, 1_700_000_500).unwrap();
            assert_eq!(verified(&again, &key, &ctx.audience).1["jti"], event.id);
        }
    }

    #[test]
    fn subject_formats_and_fallbacks() {
        let (key, _) = SigningKey::generate_es256("k").unwrap();
        let mut event = event(EventKind::TokenEnrolled);
        event.trace_id.clear();
        event.reason.clear();
        event.credential = CredentialFacts {
            kind: Some(CredentialKind::SoftwareOtp),
            ..CredentialFacts::default()
        };
        event.initiating_entity = InitiatingEntity::User;
        let ctx = context(SubjectFormat::Opaque);
        let token = security_event_token(&event, &ctx, &key, 1).unwrap();
        let (_, claims) = verified(&token, &key, &ctx.audience);
        assert_eq!(claims["txn"], event.id, "no trace: the event id");
        assert_eq!(
            claims["sub_id"],
            json!({"format": "opaque", "id": "corp/alice"})
        );
        let change = &claims["events"][CREDENTIAL_CHANGE];
        assert_eq!(change["credential_type"], "app");
        assert_eq!(change["change_type"], "create");
        assert_eq!(change["initiating_entity"], "user");
        assert_eq!(
            change["reason_admin"]["en"],
            "Enrollment event token.enrolled."
        );
        assert!(change.get("fido2_aaguid").is_none());
        assert!(change.get("friendly_name").is_none());

        let mut email = context(SubjectFormat::IssSub);
        email.email_domain = Some("example.com".into());
        let token = security_event_token(&event, &email, &key, 1).unwrap();
        assert_eq!(
            verified(&token, &key, &email.audience).1["sub_id"],
            json!({"format": "email", "email": "alice@example.com"})
        );
        event.user = "bob@corp.example".into();
        let token = security_event_token(&event, &email, &key, 1).unwrap();
        assert_eq!(
            verified(&token, &key, &email.audience).1["sub_id"]["email"],
            "bob@corp.example"
        );
    }

    #[test]
    fn unknown_device_kinds_are_roaming_and_unsignalled_events_are_errors() {
        let (key, _) = SigningKey::generate_es256("k").unwrap();
        let ctx = context(SubjectFormat::Opaque);
        let mut device = event(EventKind::DeviceRegistered);
        device.credential.kind = None;
        let token = security_event_token(&device, &ctx, &key, 1).unwrap();
        assert_eq!(
            verified(&token, &key, &ctx.audience).1["events"][CREDENTIAL_CHANGE]["credential_type"],
            "fido2-roaming"
        );

        let mut token_event = event(EventKind::TokenDisabled);
        token_event.credential.kind = None;
        assert!(security_event_token(&token_event, &ctx, &key, 1).is_err());
        let mut pool = event(EventKind::TokenDeleted);
        pool.user.clear();
        assert!(security_event_token(&pool, &ctx, &key, 1).is_err());
        for kind in EventKind::ALL {
            let result = security_event_token(&event(kind), &ctx, &key, 1);
            assert_eq!(
                result.is_ok(),
                kind.caep_change_type().is_some() || kind == EventKind::StreamVerification,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn the_verification_token_echoes_state_and_names_the_stream() {
        let key = rsa_key("rs");
        let ctx = context(SubjectFormat::IssSub);
        let token = verification_event(
            &ctx,
            &key,
            "stream-1",
            Some("c3RhdGU"),
            1_700_000_000,
            "v-1",
        )
        .unwrap();
        let (typ, claims) = verified(&token, &key, &ctx.audience);
        assert_eq!(typ.as_deref(), Some("secevent+jwt"));
        assert_eq!(claims["jti"], "v-1");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(
            claims["sub_id"],
            json!({"format": "opaque", "id": "stream-1"})
        );
        assert_eq!(
            claims["events"],
            json!({ VERIFICATION: {"state": "c3RhdGU"} })
        );
        assert!(claims.get("sub").is_none() && claims.get("exp").is_none());

        let token = verification_event(&ctx, &key, "stream-1", None, 1, "v-2").unwrap();
        assert_eq!(
            verified(&token, &key, &ctx.audience).1["events"],
            json!({ VERIFICATION: {} })
        );

        // The outbox's verification event renders as the same token, its jti the event's.
        let mut queued = event(EventKind::StreamVerification);
        queued.subject = "stream-9".into();
        queued.user.clear();
        queued.realm.clear();
        queued.verification_state = Some("s-1".into());
        let token = security_event_token(&queued, &ctx, &key, 5).unwrap();
        let (_, claims) = verified(&token, &key, &ctx.audience);
        assert_eq!(claims["jti"], queued.id);
        assert_eq!(
            claims["sub_id"],
            json!({"format": "opaque", "id": "stream-9"})
        );
        assert_eq!(claims["events"], json!({ VERIFICATION: {"state": "s-1"} }));
    }

    #[test]
    fn the_ssf_configuration_lists_what_is_configured() {
        let bare = ssf_configuration(
            "https://enroll.example.com",
            "https://enroll.example.com/jwks.json",
            &SsfEndpoints::default(),
        );
        assert_eq!(
            bare,
            json!({
                "spec_version": "1_0",
                "issuer": "https://enroll.example.com",
                "jwks_uri": "https://enroll.example.com/jwks.json",
                "delivery_methods_supported": ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"],
            })
        );
        let full = ssf_configuration(
            "https://e",
            "https://e/jwks",
            &SsfEndpoints {
                configuration_endpoint: Some("https://e/ssf/stream".into()),
                status_endpoint: Some("https://e/ssf/status".into()),
                verification_endpoint: Some("https://e/ssf/verify".into()),
                add_subject_endpoint: None,
                remove_subject_endpoint: None,
                authorization_schemes: vec!["urn:ietf:rfc:6749".into()],
            },
        );
        assert_eq!(full["configuration_endpoint"], "https://e/ssf/stream");
        assert_eq!(full["status_endpoint"], "https://e/ssf/status");
        assert_eq!(full["verification_endpoint"], "https://e/ssf/verify");
        assert!(full.get("add_subject_endpoint").is_none());
        assert!(full.get("critical_subject_members").is_none());
        assert_eq!(
            full["authorization_schemes"],
            json!([{"spec_urn": "urn:ietf:rfc:6749"}])
        );
    }
}
