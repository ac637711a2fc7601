//! `enrollctl upgrade-report`: who the trust changes of issue 18 affect, read with an ops
//! key (devices refused at authentication, self-registrations that will wait for approval,
//! policies that need client_ip) and of issue 19 (devices whose model is only a claim).
use enroll_e2e::{
    Backend, OPS_KEY, TEST_ORIGIN, TestStack, create, on_both_backends, realm_policy,
    register_device_by_link,
};
use enroll_shared::proto::device::v1 as pb;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use super::ctl_as;

/// A self-registration of a soft passkey for `realm`/`user`; the device.
async fn self_register(stack: &TestStack, realm: &str, user: &str) -> pb::Device {
    let mut proxy = stack.proxy();
    let begun = proxy
        .begin_device_registration(pb::BeginDeviceRegistrationRequest {
            realm: realm.into(),
            user: user.into(),
            client_ip: "192.0.2.7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let options = serde_json::from_str(&begun.creation_options_json).unwrap();
    let credential = SoftPasskey::new(true)
        .do_registration(Url::parse(TEST_ORIGIN).unwrap(), options)
        .unwrap();
    proxy
        .finish_device_registration(pb::FinishDeviceRegistrationRequest {
            ceremony_id: begun.ceremony_id,
            credential_json: serde_json::to_string(&credential).unwrap(),
            client_ip: "192.0.2.7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .device
        .unwrap()
}

async fn the_upgrade_report_lists_who_is_affected(backend: Backend) {
    // The old behaviour for realm `open` (self-registration approved at once), as a
    // deployment that relied on the old default would have had it.
    let stack = TestStack::builder(backend)
        .with_policy(realm_policy(
            "open",
            "open",
            &[("require_device_approval", "false")],
        ))
        .start()
        .await;
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let fine = register_device_by_link(&mut admin, &mut proxy, "acme", "fine").await;
    let model_refused = register_device_by_link(&mut admin, &mut proxy, "strict", "sam").await;
    let flagged = register_device_by_link(&mut admin, &mut proxy, "acme", "flo").await;
    let self_approved = self_register(&stack, "open", "olga").await;
    // Recorded as registered: an android-key device from before the upgrade (the migration
    // kept its model verified), and one registered since under a blanket root without the
    // AAGUID extension.
    let android = register_device_by_link(&mut admin, &mut proxy, "acme", "andy").await;
    let blanket = register_device_by_link(&mut admin, &mut proxy, "acme", "bea").await;
    for (device, format, root, verified) in [
        (&android, "android-key", "google-android", true),
        (&blanket, "packed", "trusted_roots:vendor.pem", false),
    ] {
        stack
            .database
            .execute(&format!(
                "UPDATE devices SET attestation_format = '{format}', attestation_root = '{root}', \
                 aaguid = 'b93fd961-f2e6-462f-b122-82002247de78', aaguid_verified = {verified} \
                 WHERE id = '{}'",
                device.id
            ))
            .await;
    }
    assert_eq!(self_approved.state, pb::DeviceState::Approved as i32);
    // The old default ends for `open`: deleting its policy is what upgrading does to it.
    let mut policies = stack.policy_admin();
    policies
        .delete_policy(enroll_shared::proto::policy::v1::DeletePolicyRequest {
            name: "open".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    create(
        &mut policies,
        realm_policy(
            "certified",
            "strict",
            &[("webauthn_min_certification", "FIDO_CERTIFIED_L1")],
        ),
    )
    .await
    .unwrap();
    let mut office = realm_policy("office", "acme", &[("token_types", "totp,webauthn")]);
    office.clients = vec!["10.0.0.0/8".into()];
    create(&mut policies, office).await.unwrap();
    stack
        .database
        .execute(&format!(
            "UPDATE devices SET model_compromise = 'model is REVOKED' WHERE id = '{}'",
            flagged.id
        ))
        .await;

    let report = ctl_as(&stack, OPS_KEY, &["-o", "json", "upgrade-report"], "")
        .await
        .ok()
        .json();
    assert_eq!(report["devices_checked"], 6, "{report}");
    let findings = report["findings"].as_array().unwrap();
    let kinds_of = |subject: &str| -> Vec<String> {
        findings
            .iter()
            .filter(|f| f["subject"] == subject)
            .map(|f| f["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        kinds_of(&model_refused.id),
        ["refused-at-authentication"],
        "{report}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f["subject"] == model_refused.id.as_str()
                && f["reason"].as_str().unwrap().contains("certified")),
        "{report}"
    );
    assert_eq!(kinds_of(&self_approved.id), ["approval-now-required"]);
    assert_eq!(kinds_of("office"), ["client-ip-required"]);
    assert_eq!(kinds_of(&flagged.id), ["refused-at-authentication"]);
    // acme's users are matched by `office`: whether the model rules refuse their devices
    // depends on the client address, which the report does not guess.
    assert!(kinds_of(&fine.id).is_empty(), "{report}");
    for device in [&android, &blanket] {
        assert_eq!(kinds_of(&device.id), ["model-claim-only"], "{report}");
    }
    assert!(
        findings.iter().any(|f| f["subject"] == android.id.as_str()
            && f["reason"]
                .as_str()
                .unwrap()
                .contains("android-key under google-android")),
        "{report}"
    );

    let table = ctl_as(&stack, OPS_KEY, &["upgrade-report"], "").await.ok();
    assert!(
        table.stdout.contains(&flagged.id)
            && table
                .stdout
                .contains("6 devices checked: 2 will be refused at authentication")
            && table.stdout.contains("2 devices' models are only claimed")
            && !table.stdout.contains(&fine.id),
        "{}",
        table.stdout
    );
}

on_both_backends!(the_upgrade_report_lists_who_is_affected);
