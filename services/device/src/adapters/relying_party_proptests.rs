//! Property tests of the relying party: arbitrary browser JSON for a real ceremony state, and
//! arbitrary stored state, end in an error the caller can map, never a panic or an internal
//! error. Case count: proptest's default (256), raised with `PROPTEST_CASES`.
use proptest::prelude::*;
use webauthn_rs::prelude::Uuid;

use super::relying_party::WebauthnRelyingParty;
use crate::config::WebauthnConfig;
use crate::domain::devices::DeviceKind;
use crate::error::DeviceError;
use crate::service::ports::RelyingParty;

fn party() -> WebauthnRelyingParty {
    let config = WebauthnConfig {
        rp_origins: vec!["https://enroll.example.com".to_owned()],
        rp_id: "example.com".to_owned(),
        ..Default::default()
    };
    WebauthnRelyingParty::new(
        &config,
        std::sync::Arc::new(enroll_shared::time::SystemClock),
    )
    .expect("test config is valid")
}

/// Arbitrary text, and JSON shaped like a credential with arbitrary contents.
fn credential_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[{}\\[\\]\":,a-zA-Z0-9_-]{0,60}",
        ("[A-Za-z0-9_-]{0,40}", "[A-Za-z0-9_-]{0,80}", "[A-Za-z0-9_-]{0,80}").prop_map(
            |(id, client, attestation)| format!(
                r#"{{"id":"{id}","rawId":"{id}","type":"public-key","response":{{"clientDataJSON":"{client}","attestationObject":"{attestation}","authenticatorData":"{attestation}","signature":"{client}"}},"extensions":{{}}}}"#
            )
        ),
    ]
}

/// Bad input is the caller's mistake or a refused ceremony, never a server fault.
fn is_client_error(error: &DeviceError) -> bool {
    matches!(
        error,
        DeviceError::InvalidArgument { .. }
            | DeviceError::Refused { .. }
            | DeviceError::FailedPrecondition(_)
    )
}

proptest! {
    #[test]
    fn arbitrary_registration_credentials_are_refused(credential in credential_like()) {
        let party = party();
        let challenge = party
            .start_registration(DeviceKind::Any, false, Uuid::new_v4(), "alice@acme", &[])
            .expect("registration starts");
        let error = party.finish_registration(&challenge.state_json, &credential);
        prop_assert!(matches!(&error, Err(error) if is_client_error(error)), "{:?}", error.err());
    }

    #[test]
    fn arbitrary_ceremony_states_are_refused(state in credential_like(), credential in credential_like()) {
        let party = party();
        let registration = party.finish_registration(&state, &credential);
        prop_assert!(matches!(&registration, Err(error) if is_client_error(error)), "{:?}", registration.err());
        let authentication = party.finish_authentication(&state, &credential, &|_| None);
        prop_assert!(matches!(&authentication, Err(error) if is_client_error(error)), "{:?}", authentication.err());
    }
}
