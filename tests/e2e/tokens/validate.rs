use super::*;
use enroll_device::domain::otp::code;
use enroll_e2e::{hotp_parameters, now_step, seed_of as seed, totp_parameters};

fn check(realm: &str, user: &str, pass: &str) -> pb::ValidateRequest {
    pb::ValidateRequest {
        realm: realm.into(),
        user: user.into(),
        pass: pass.into(),
        client_ip: "192.0.2.1".into(),
        ..Default::default()
    }
}

async fn pin_and_code_validate_once_and_failures_back_off(backend: Backend) {
    let stack = TestStack::start(backend).await;
    let mut admin = stack.admin();
    let mut proxy = stack.proxy();

    let totp_token = admin
        .enroll_token(totp("corp", "alice"))
        .await
        .unwrap()
        .into_inner();
    let serial = totp_token.token.as_ref().unwrap().serial.clone();
    admin
        .set_pin(pb::SetPinRequest {
            serial: serial.clone(),
            pin: "4321".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let parameters = totp_parameters();
    let current = code(&parameters, &seed(&totp_token), now_step());

    // Wrong PIN with the right code, then the right pass, then its replay.
    let wrong_pin = proxy
        .validate(check("corp", "alice", &format!("1111{current}")))
        .await
        .unwrap()
        .into_inner();
    assert!(!wrong_pin.ok);
    assert_eq!(wrong_pin.message, "wrong pass");
    let ok = proxy
        .validate(check("CORP", "Alice", &format!("4321{current}")))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.ok, "{}", ok.message);
    assert_eq!(ok.serial, serial);
    let replay = proxy
        .validate(check("corp", "alice", &format!("4321{current}")))
        .await
        .unwrap()
        .into_inner();
    assert!(!replay.ok, "a code is accepted once");

    // HOTP: concurrent submissions of one code: exactly one wins.
    let hotp_token = admin
        .enroll_token(pb::EnrollTokenRequest {
            r#type: pb::TokenType::Hotp as i32,
            ..totp("corp", "bob")
        })
        .await
        .unwrap()
        .into_inner();
    let hotp = hotp_parameters();
    let first = code(&hotp, &seed(&hotp_token), 0);
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let mut proxy = proxy.clone();
            let pass = first.clone();
            tokio::spawn(async move {
                proxy
                    .validate(check("corp", "bob", &pass))
                    .await
                    .unwrap()
                    .into_inner()
                    .ok
            })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap());
    }
    assert_eq!(winners, 1);
    // Racers that read the token after the winner saw a used code: each counted as a
    // failure of this client, which may have backed it off (at most 2^5 s for nine):
    // the back-off ends, and EnableToken resets the token's counter.
    let hotp_serial = hotp_token.token.as_ref().unwrap().serial.clone();
    admin
        .enable_token(pb::EnableTokenRequest {
            serial: hotp_serial.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    stack.clock().advance(Duration::from_secs(33));
    let later = code(&hotp, &seed(&hotp_token), 3);
    assert!(
        proxy
            .validate(check("corp", "bob", &later))
            .await
            .unwrap()
            .into_inner()
            .ok,
        "look-ahead window"
    );

    // Failures back the client off (3 free, then 1 s doubling): while it backs off even
    // the right code from it is refused like a wrong pass, and uncounted; then it
    // validates.
    for _ in 0..4 {
        assert!(
            !proxy
                .validate(check("corp", "bob", "000000"))
                .await
                .unwrap()
                .into_inner()
                .ok
        );
    }
    let backing_off = admin
        .get_token(pb::GetTokenRequest {
            serial: hotp_serial.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (backing_off.state, backing_off.failure_count),
        (pb::TokenState::Enabled as i32, 4)
    );
    let next = code(&hotp, &seed(&hotp_token), 4);
    let refused = proxy
        .validate(check("corp", "bob", &next))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (refused.ok, refused.message.as_str()),
        (false, "wrong pass")
    );
    stack.clock().advance(Duration::from_millis(1_100));
    assert!(
        proxy
            .validate(check("corp", "bob", &next))
            .await
            .unwrap()
            .into_inner()
            .ok
    );
    let reset = admin
        .get_token(pb::GetTokenRequest {
            serial: hotp_serial,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.failure_count, 0, "a success ends the run of failures");

    let bad = proxy
        .validate(check("corp", "", "123456"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("user"));
}

enroll_e2e::on_both_backends!(pin_and_code_validate_once_and_failures_back_off);
