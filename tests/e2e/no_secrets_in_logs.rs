//! A full token and device scenario with every log line captured (TRACE, all crates): no
//! seed, PIN, pass, OTP, password or enrollment-link secret appears in it.
use std::io::Write;
use std::sync::{Arc, Mutex};

use enroll_e2e::{
    Backend, RFC4226_SEED, RFC4226_SEED_HEX as KNOWN_HEX, TestStack, hotp_code, link_secret,
    realm_policy, seed_of,
};
use enroll_shared::proto::device::v1 as pb;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn scenario(backend: Backend) -> Vec<String> {
    let rules = [
        ("otp_pin_random", "8"),
        ("autoassignment", "true"),
        ("lostTokenPWLen", "16"),
    ];
    let stack = TestStack::with_policies(backend, [realm_policy("corp", "corp", &rules)]).await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let mut secrets = Vec::new();

    let enrolled = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "alice".into(),
            r#type: pb::TokenType::Hotp as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let seed = seed_of(&enrolled);
    let serial = enrolled.token.unwrap().serial;
    secrets.extend([
        enrolled.secret_base32.clone(),
        enrolled.pin.clone(),
        hex::encode(&seed),
    ]);
    admin
        .set_pin(pb::SetPinRequest {
            serial: serial.clone(),
            pin: "S3cretPin".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    secrets.push("S3cretPin".into());
    let good = format!("S3cretPin{}", hotp_code(&seed, 0));
    let bad = "S3cretPin000000".to_owned();
    assert!(
        proxy
            .validate(pb::ValidateRequest {
                realm: "corp".into(),
                user: "alice".into(),
                pass: good.clone(),
                client_ip: String::new()
            })
            .await
            .unwrap()
            .into_inner()
            .ok
    );
    assert!(
        !proxy
            .validate(pb::ValidateRequest {
                realm: "corp".into(),
                user: "alice".into(),
                pass: bad.clone(),
                client_ip: String::new()
            })
            .await
            .unwrap()
            .into_inner()
            .ok
    );
    secrets.extend([good, bad]);

    let lost = admin
        .report_lost_token(pb::ReportLostTokenRequest {
            serial,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        proxy
            .validate(pb::ValidateRequest {
                realm: "corp".into(),
                user: "alice".into(),
                pass: lost.password.clone(),
                client_ip: String::new()
            })
            .await
            .unwrap()
            .into_inner()
            .ok
    );
    secrets.push(lost.password);

    admin
        .import_tokens(pb::ImportTokensRequest {
            realm: "corp".into(),
            csv: format!("HW1,{KNOWN_HEX},hotp,6,0\n"),
            request_id: String::new(),
        })
        .await
        .unwrap();
    // Autoassignment takes two consecutive codes: the first opens the confirmation.
    let first = format!("AutoPin7{}", hotp_code(RFC4226_SEED, 0));
    let auto = format!("AutoPin7{}", hotp_code(RFC4226_SEED, 1));
    for (pass, assigned) in [(&first, false), (&auto, true)] {
        let answer = proxy
            .validate(pb::ValidateRequest {
                realm: "corp".into(),
                user: "bob".into(),
                pass: pass.clone(),
                client_ip: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.autoassigned, assigned, "{answer:?}");
    }
    secrets.extend([first, auto, KNOWN_HEX.to_owned(), "AutoPin7".to_owned()]);

    // A WebAuthn device through an enrollment link: the link secret is a bearer credential.
    let link = admin
        .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
            realm: "corp".into(),
            user: "carol".into(),
            created_by: "console".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let link_secret = link_secret(&link);
    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            link_secret: link_secret.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let options: webauthn_rs_proto::CreationChallengeResponse =
        serde_json::from_str(&begun.creation_options_json).unwrap();
    let credential = SoftPasskey::new(true)
        .do_registration(url::Url::parse("http://localhost:8080").unwrap(), options)
        .unwrap();
    proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&credential).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    secrets.push(link_secret);
    stack.stop().await;
    secrets
}

async fn check(backend: Backend) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let secrets = {
        let _guard = tracing::subscriber::set_default(subscriber);
        scenario(backend).await
    };
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.lines().count() > 50,
        "the scenario logged: {} lines",
        logs.lines().count()
    );
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appears in the logs"
        );
    }
}

// A current-thread runtime: every server task runs on this thread, under the capturing
// subscriber.
#[tokio::test]
async fn postgres() {
    check(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite() {
    check(Backend::Sqlite).await;
}
