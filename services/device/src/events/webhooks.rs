//! Standard Webhooks (<https://www.standardwebhooks.com/>): the JSON body of an enrollment
//! event, its `webhook-id`/`webhook-timestamp`/`webhook-signature` headers, and the
//! endpoint secrets (`whsec_<base64>`).
//!
//! The signature is HMAC-SHA256 (ring, already in the tree) of `{id}.{timestamp}.{body}`
//! with the secret's decoded bytes, sent as `v1,<base64>`; during a secret rotation both
//! secrets sign and the header lists both signatures, space-separated, so a receiver holding
//! either verifies. The body is made only of the event's fields, none of them secret.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::SecondsFormat;
use ring::hmac;
use serde_json::json;

use crate::domain::events::EnrollmentEvent;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The size of a generated secret, in bytes.
pub const GENERATED_SECRET_BYTES: usize = 32;
/// The accepted decoded secret sizes (the specification's 24 to 64 bytes).
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// An endpoint's signing secret. Its bytes never reach `Debug`; [`WebhookSecret::expose`]
/// gives the `whsec_` text for the caller to store sealed (and show the receiver once).
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// `whsec_` followed by the standard base64 of 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or("a webhook secret starts with whsec_")?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| "a webhook secret is whsec_ and base64")?;
        if !SECRET_BYTES.contains(&bytes.len()) {
            return Err(format!(
                "a webhook secret has {} to {} bytes, not {}",
                SECRET_BYTES.start(),
                SECRET_BYTES.end(),
                bytes.len()
            ));
        }
        Ok(WebhookSecret(bytes))
    }

    /// A new random secret of 32 bytes.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = vec![0; GENERATED_SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        WebhookSecret(bytes)
    }

    /// The `whsec_<base64>` text (to store sealed, never to log).
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key(), &signed_content(id, timestamp, body));
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }

    /// Whether a `webhook-signature` header holds a valid `v1` signature by this secret
    /// (compared in constant time). The timestamp's freshness is the receiver's to check.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let content = signed_content(id, timestamp, body);
        let key = self.key();
        header.split(' ').any(|entry| {
            entry
                .strip_prefix("v1,")
                .and_then(|signature| STANDARD.decode(signature).ok())
                .is_some_and(|tag| hmac::verify(&key, &content, &tag).is_ok())
        })
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// The webhook body of an event: `{"type", "timestamp" (RFC 3339), "data": {...}}`. A
/// stream's verification event (`stream.verification`) names the stream and echoes the
/// `state` the admin gave, and nothing else; a `policy.*` event's data also has `policy`
/// (the change: name, change, history id, the policy before and after).
pub fn body(event: &EnrollmentEvent) -> Vec<u8> {
    if let Some(stream_id) = crate::domain::events::for_stream_only(event) {
        let document = json!({
            "type": event.kind.as_str(),
            "timestamp": event.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            "data": {
                "id": event.id,
                "seq": event.seq,
                "stream_id": stream_id,
                "state": event.verification_state,
                "actor": event.actor,
            },
        });
        return serde_json::to_vec(&document).unwrap_or_default();
    }
    let credential = &event.credential;
    let mut document = json!({
        "type": event.kind.as_str(),
        "timestamp": event.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "data": {
            "id": event.id,
            "seq": event.seq,
            "realm": event.realm,
            "user": event.user,
            "subject": event.subject,
            "actor": event.actor,
            "initiating_entity": event.initiating_entity.caep(),
            "reason": event.reason,
            "credential": {
                "type": credential.kind.map(|kind| kind.caep()),
                "aaguid": credential.aaguid,
                "friendly_name": credential.friendly_name,
                "transports": credential.transports,
            },
            "trace_id": event.trace_id,
        },
    });
    if let Some(policy) = &event.policy {
        // Plain data (strings, numbers, string maps): it always serializes.
        document["data"]["policy"] = serde_json::to_value(policy).unwrap_or_default();
    }
    // Serializing a `Value` cannot fail (its map keys are strings).
    serde_json::to_vec(&document).unwrap_or_default()
}

/// The headers of one delivery: `webhook-id` (the event id: the same across retries),
/// `webhook-timestamp` (the attempt's unix seconds) and `webhook-signature` with one `v1`
/// signature per secret (left out when `secrets` is empty: callers always configure one).
pub fn headers(
    secrets: &[WebhookSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (HEADER_ID, id.to_owned()),
        (HEADER_TIMESTAMP, timestamp.to_string()),
    ];
    if !secrets.is_empty() {
        let signatures: Vec<String> = secrets
            .iter()
            .map(|secret| secret.sign(id, timestamp, body))
            .collect();
        headers.push((HEADER_SIGNATURE, signatures.join(" ")));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{CredentialFacts, CredentialKind, EventKind, InitiatingEntity};
    use chrono::TimeZone;
    use serde_json::Value;

    // The Standard Webhooks specification's test vector (its reference libraries' tests).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_signature_matches_the_specifications_test_vector() {
        let secret = WebhookSecret::parse(VECTOR_SECRET).unwrap();
        assert_eq!(
            secret.sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
        let headers = headers(
            std::slice::from_ref(&secret),
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            VECTOR_BODY,
        );
        assert_eq!(
            headers,
            vec![
                ("webhook-id", VECTOR_ID.to_owned()),
                ("webhook-timestamp", "1614265330".to_owned()),
                ("webhook-signature", VECTOR_SIGNATURE.to_owned()),
            ]
        );
        assert!(secret.verify(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, VECTOR_SIGNATURE));
        assert!(!secret.verify(
            VECTOR_ID,
            VECTOR_TIMESTAMP + 1,
            VECTOR_BODY,
            VECTOR_SIGNATURE
        ));
        assert!(!secret.verify(VECTOR_ID, VECTOR_TIMESTAMP, b"{}", VECTOR_SIGNATURE));
        assert!(!secret.verify(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, "v1,AAAA"));
        assert!(!secret.verify(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, ""));
    }

    #[test]
    fn during_a_rotation_both_secrets_sign_and_either_verifies() {
        let old = WebhookSecret::parse(VECTOR_SECRET).unwrap();
        let new = WebhookSecret::generate();
        let headers = headers(
            &[new.clone(), old.clone()],
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            b"x",
        );
        let signature = &headers[2].1;
        let parts: Vec<&str> = signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|part| part.starts_with("v1,")));
        assert!(old.verify(VECTOR_ID, VECTOR_TIMESTAMP, b"x", signature));
        assert!(new.verify(VECTOR_ID, VECTOR_TIMESTAMP, b"x", signature));
        assert!(!WebhookSecret::generate().verify(VECTOR_ID, VECTOR_TIMESTAMP, b"x", signature));
        // No secret: no signature header.
        assert_eq!(super::headers(&[], "m", 1, b"x").len(), 2);
    }

    #[test]
    fn secrets_parse_generate_and_stay_out_of_debug() {
        let generated = WebhookSecret::generate();
        let text = generated.expose();
        assert!(text.starts_with("whsec_"));
        let reparsed = WebhookSecret::parse(&text).unwrap();
        assert_eq!(reparsed.expose(), text);
        assert_eq!(reparsed.0.len(), 32);
        assert_ne!(WebhookSecret::generate().expose(), text);
        assert_eq!(format!("{generated:?}"), "WebhookSecret(<redacted>)");

        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_not base64!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err(), "too short");
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert!(WebhookSecret::parse(&long).is_err(), "too long");
    }

    #[test]
    fn the_body_carries_the_events_fields() {
        let event = EnrollmentEvent {
            seq: 42,
            id: "0b5c".into(),
            kind: EventKind::DeviceRegistered,
            realm: "corp".into(),
            user: "alice".into(),
            subject: "dev-1".into(),
            time: chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            actor: "enroll-page".into(),
            initiating_entity: InitiatingEntity::User,
            reason: "".into(),
            credential: CredentialFacts {
                kind: Some(CredentialKind::Fido2Platform),
                aaguid: Some("08987058-cadc-4b81-b6e1-30de50dcbe96".into()),
                friendly_name: "Laptop".into(),
                transports: vec!["internal".into()],
            },
            trace_id: "abc".into(),
            verification_state: None,
            policy: None,
        };
        let document: Value = serde_json::from_slice(&body(&event)).unwrap();
        assert_eq!(
            document,
            json!({
                "type": "device.registered",
                "timestamp": "2023-11-14T22:13:20Z",
                "data": {
                    "id": "0b5c",
                    "seq": 42,
                    "realm": "corp",
                    "user": "alice",
                    "subject": "dev-1",
                    "actor": "enroll-page",
                    "initiating_entity": "user",
                    "reason": "",
                    "credential": {
                        "type": "fido2-platform",
                        "aaguid": "08987058-cadc-4b81-b6e1-30de50dcbe96",
                        "friendly_name": "Laptop",
                        "transports": ["internal"],
                    },
                    "trace_id": "abc",
                },
            })
        );
        let unknown = EnrollmentEvent {
            credential: CredentialFacts::default(),
            ..event.clone()
        };
        let document: Value = serde_json::from_slice(&body(&unknown)).unwrap();
        assert_eq!(document["data"]["credential"]["type"], Value::Null);
        assert_eq!(document["data"]["credential"]["aaguid"], Value::Null);

        let verification = EnrollmentEvent {
            kind: EventKind::StreamVerification,
            realm: String::new(),
            user: String::new(),
            subject: "stream-1".into(),
            verification_state: Some("xyz".into()),
            ..unknown
        };
        let document: Value = serde_json::from_slice(&body(&verification)).unwrap();
        assert_eq!(document["type"], "stream.verification");
        assert_eq!(
            document["data"],
            json!({"id": "0b5c", "seq": 42, "stream_id": "stream-1", "state": "xyz", "actor": "enroll-page"})
        );

        // A policy event's data has the change; absent sides are left out.
        let policy = EnrollmentEvent {
            kind: EventKind::PolicyCreated,
            realm: String::new(),
            user: String::new(),
            subject: "laptops".into(),
            credential: CredentialFacts::default(),
            policy: Some(crate::domain::events::PolicyChangeFacts {
                name: "laptops".into(),
                change: "create".into(),
                history_id: 9,
                before: None,
                after: Some(crate::domain::events::PolicySummary {
                    name: "laptops".into(),
                    realms: vec!["corp".into()],
                    users: vec!["*".into()],
                    actions: [("max_token_per_user".to_owned(), "3".to_owned())].into(),
                    priority: 10,
                    active: true,
                }),
            }),
            ..event
        };
        let document: Value = serde_json::from_slice(&body(&policy)).unwrap();
        assert_eq!(document["type"], "policy.created");
        assert_eq!(
            document["data"]["policy"],
            json!({
                "name": "laptops",
                "change": "create",
                "history_id": 9,
                "after": {
                    "name": "laptops",
                    "realms": ["corp"],
                    "users": ["*"],
                    "actions": {"max_token_per_user": "3"},
                    "priority": 10,
                    "active": true,
                },
            })
        );
    }
}
