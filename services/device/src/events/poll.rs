//! RFC 8936 poll delivery's building blocks: a poll stream's bearer token and the JSON of a
//! poll request and its answer (section 2.4).
//!
//! The token is 256 random bits, `ptk_` followed by their unpadded base64url. It is shown
//! once, stored sealed like webhook secrets, never logged (no `Debug` of its bytes), and
//! compared in constant time: both sides go through one HMAC under a key made for the
//! comparison, whose tags `ring` compares in constant time.
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The prefix of a poll token.
pub const TOKEN_PREFIX: &str = "ptk_";
/// The size of a token, in bytes.
pub const TOKEN_BYTES: usize = 32;

/// A poll stream's bearer token.
#[derive(Clone)]
pub struct PollToken(Vec<u8>);

impl PollToken {
    /// A new random token.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = vec![0; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        PollToken(bytes)
    }

    /// `ptk_` and the base64url of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or("a poll token starts with ptk_")?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| "a poll token is ptk_ and unpadded base64url")?;
        if bytes.len() != TOKEN_BYTES {
            return Err(format!("a poll token has {TOKEN_BYTES} bytes"));
        }
        Ok(PollToken(bytes))
    }

    /// The `ptk_...` text (to store sealed and show the receiver once, never to log).
    pub fn expose(&self) -> String {
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&self.0))
    }

    /// Whether `presented` (the `Authorization: Bearer` value) is this token, in constant
    /// time whatever its length or content.
    pub fn matches(&self, presented: &str) -> bool {
        let Ok(key) = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
        else {
            return false;
        };
        let expected = hmac::sign(&key, self.expose().as_bytes());
        hmac::verify(&key, presented.as_bytes(), expected.as_ref()).is_ok()
    }
}

impl std::fmt::Debug for PollToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PollToken(<redacted>)")
    }
}

/// A receiver's error for one SET (RFC 8936 section 2.4.3, the RFC 8935 error codes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SetError {
    pub err: String,
    pub description: String,
}

/// A poll request (RFC 8936 section 2.4). Unknown members are ignored, as the RFC allows
/// extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PollRequest {
    /// At most this many SETs; 0 acknowledges only; absent: the service's cap.
    pub max_events: Option<u64>,
    /// Answer at once even when nothing is outstanding (false: long poll).
    pub return_immediately: bool,
    /// The `jti`s of SETs received and processed.
    pub ack: Vec<String>,
    /// The `jti`s of SETs the receiver could not process, with why.
    pub set_errs: BTreeMap<String, SetError>,
}

/// A poll answer: `{"sets": {jti: SET}, "moreAvailable": bool}`, the sets written in the
/// order they are listed (redelivered dead letters first, then by `seq`: RFC 8936 promises
/// no order, but a receiver reading the object in order gets the transmitter's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollAnswer {
    #[serde(serialize_with = "in_order")]
    pub sets: Vec<(String, String)>,
    pub more_available: bool,
}

fn in_order<S: serde::Serializer>(
    sets: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(sets.iter().map(|(jti, set)| (jti, set)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_match_only_themselves() {
        let token = PollToken::generate();
        let text = token.expose();
        assert!(text.starts_with("ptk_"), "{text}");
        assert_eq!(text.len(), 4 + 43);
        let parsed = PollToken::parse(&text).unwrap();
        assert!(parsed.matches(&text));
        assert!(!parsed.matches(&PollToken::generate().expose()));
        assert!(!parsed.matches(""));
        assert!(!parsed.matches(&text[..text.len() - 1]));
        assert!(PollToken::parse("whsec_abc").is_err());
        assert!(PollToken::parse("ptk_AAAA").is_err());
        assert_eq!(format!("{token:?}"), "PollToken(<redacted>)");
    }

    #[test]
    fn requests_take_the_rfc_members_and_answers_name_them() {
        let request: PollRequest = serde_json::from_str(
            r#"{"maxEvents": 5, "returnImmediately": true, "ack": ["a"],
                "setErrs": {"b": {"err": "invalid_key", "description": "no key"}},
                "extension": 1}"#,
        )
        .unwrap();
        assert_eq!(request.max_events, Some(5));
        assert!(request.return_immediately);
        assert_eq!(request.ack, ["a"]);
        assert_eq!(request.set_errs["b"].err, "invalid_key");
        let empty: PollRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, PollRequest::default());
        let answer = PollAnswer {
            sets: vec![
                ("b".to_owned(), "t2".to_owned()),
                ("a".to_owned(), "t1".to_owned()),
            ],
            more_available: true,
        };
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"sets":{"b":"t2","a":"t1"},"moreAvailable":true}"#
        );
    }
}
