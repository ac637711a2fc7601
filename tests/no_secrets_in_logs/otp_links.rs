//! The OTP-link RPCs in the scenario: a link issued, listed, one superseded and revoked,
//! one redeemed twice (the second refused), resumed, a wrong first code, the right one with
//! the random PIN the policy makes. Link secret, session, seed, codes and PIN are secrets.
use enroll_e2e::{TestStack, totp_code_with};
use enroll_shared::proto::device::v1 as pb;

use super::Used;

const DIGITS: u32 = 8;

pub async fn run(stack: &TestStack, used: &mut Used) {
    let (mut admin, mut proxy, mut ops) = (stack.admin(), stack.proxy(), stack.ops());
    let create = || pb::CreateOtpEnrollmentLinkRequest {
        realm: "corp".into(),
        user: "gina".into(),
        r#type: pb::TokenType::Totp as i32,
        digits: DIGITS,
        created_by: "console-admin".into(),
        ..Default::default()
    };
    let superseded = admin
        .create_otp_enrollment_link(create())
        .await
        .unwrap()
        .into_inner();
    let link = admin
        .create_otp_enrollment_link(create())
        .await
        .unwrap()
        .into_inner();
    for (what, link) in [("superseded OTP link", &superseded), ("OTP link", &link)] {
        let (_, fragment) = link.url.split_once("#otp-").expect("an OTP link");
        used.secret(&format!("{what} secret"), fragment);
        used.secret(&format!("{what} URL"), &link.url);
    }
    let secret = link.url.split_once("#otp-").unwrap().1.to_owned();
    let listed = ops
        .list_otp_enrollment_links(pb::ListOtpEnrollmentLinksRequest {
            realm: "corp".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.links.len(), 2);
    admin
        .revoke_otp_enrollment_link(pb::RevokeOtpEnrollmentLinkRequest {
            id: superseded.id.clone(),
            revoked_by: "console-admin".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let redeem = |secret: &str| pb::RedeemOtpEnrollmentLinkRequest {
        secret: secret.into(),
        client_ip: "192.0.2.9".into(),
        ..Default::default()
    };
    let redeemed = proxy
        .redeem_otp_enrollment_link(redeem(&secret))
        .await
        .unwrap()
        .into_inner();
    used.error(
        proxy
            .redeem_otp_enrollment_link(redeem(&secret))
            .await
            .unwrap_err(),
    );
    let seed = totp_rs::Secret::try_from_base32(&redeemed.secret_base32)
        .unwrap()
        .as_ref()
        .to_vec();
    used.seed("gina's seed", &seed);
    used.secret("gina's enrollment secret", &redeemed.secret_base32);
    used.secret("gina's otpauth URI", &redeemed.otpauth_uri);
    used.secret("gina's redemption session", &redeemed.session);
    proxy
        .resume_otp_enrollment(pb::ResumeOtpEnrollmentRequest {
            session: redeemed.session.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let step = enroll_e2e::now_step();
    let wrong = totp_code_with(&seed, step + 1000, DIGITS);
    let right = totp_code_with(&seed, step, DIGITS);
    let finish = |code: &str| pb::FinishOtpEnrollmentRequest {
        session: redeemed.session.clone(),
        code: code.into(),
        ..Default::default()
    };
    used.error(
        proxy
            .finish_otp_enrollment(finish(&wrong))
            .await
            .unwrap_err(),
    );
    let finished = proxy
        .finish_otp_enrollment(finish(&right))
        .await
        .unwrap()
        .into_inner();
    assert!(!finished.pin.is_empty(), "the scenario's policy makes PINs");
    used.secret("gina's first code", &right);
    used.secret("gina's wrong first code", &wrong);
    used.secret("gina's random PIN", &finished.pin);
    used.serials.push(finished.token.unwrap().serial);
}
