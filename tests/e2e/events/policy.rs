//! Policy events: the device service relays the policy service's history (its outbox,
//! ListPolicyHistory `after_id`) into the enrollment-event outbox as `policy.created`,
//! `policy.updated` and `policy.deleted`, each change once under its stable id (two
//! replicas relaying write one event), nothing lost while the policy service is out of
//! reach, no event for a refused or rolled-back write, no replay of the history a
//! deployment had before, and none of them sent to a CAEP stream.
use std::time::Duration;

use enroll_e2e::{
    Backend, PolicyClient, PythonReceiver, ReceiverOptions, TestStack, accepted,
    python_receiver_or_skip, realm_policy,
};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use serde_json::Value;
use tonic::Code;

use super::events;

const COUNT_POLICY_EVENTS: &str =
    "SELECT COUNT(*) FROM enrollment_events WHERE event_type LIKE 'policy.%'";

/// Waits until a device replica has started the relay (its cursor row exists): changes
/// from then on are events; older ones are not replayed.
async fn relay_started(stack: &TestStack) {
    for _ in 0..200 {
        if stack
            .database
            .count("SELECT COUNT(*) FROM policy_event_relay")
            .await
            == 1
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the policy-event relay never started");
}

/// Waits until the outbox holds `count` policy events, then a moment more for an extra
/// one (a duplicate) to show; returns the count then.
async fn settled_policy_events(stack: &TestStack, count: i64) -> i64 {
    for _ in 0..300 {
        if stack.database.count(COUNT_POLICY_EVENTS).await >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past two relay polls (`events.policy_relay_secs` is 1 s in the tests).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    stack.database.count(COUNT_POLICY_EVENTS).await
}

/// Creates, updates (as `alice@console`) and deletes policy `name` in realm `corp`.
async fn change_policy(admin: &mut PolicyClient, name: &str) {
    let created = admin
        .create_policy(policy_pb::CreatePolicyRequest {
            policy: Some(realm_policy(name, "corp", &[("max_token_per_user", "2")])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let updated = admin
        .update_policy(policy_pb::UpdatePolicyRequest {
            policy: Some(realm_policy(name, "corp", &[("max_token_per_user", "3")])),
            etag: created.etag,
            actor: "alice@console".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .delete_policy(policy_pb::DeletePolicyRequest {
            name: name.into(),
            etag: updated.etag,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The policy service's changes after `after_id`, oldest first.
async fn history_after(policy: &mut PolicyClient, after_id: i64) -> Vec<policy_pb::PolicyChange> {
    policy
        .list_policy_history(policy_pb::ListPolicyHistoryRequest {
            after_id: Some(after_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .changes
}

async fn policy_changes_become_events_with_stable_ids(backend: Backend) {
    // Stored before the device service starts: history the relay does not replay.
    let old = realm_policy("old", "corp", &[("max_token_per_user", "5")]);
    let stack = TestStack::with_policies(backend, [old]).await;
    relay_started(&stack).await;
    let (mut admin, mut ops) = (stack.policy_admin(), stack.ops());
    change_policy(&mut admin, "laptops").await;
    // Refused writes change nothing, so they are no events: a stale etag (the update's
    // transaction rolls back after bumping the version), an invalid policy, a missing one.
    let current = admin
        .get_policy(policy_pb::GetPolicyRequest { name: "old".into() })
        .await
        .unwrap()
        .into_inner();
    let stale = admin
        .update_policy(policy_pb::UpdatePolicyRequest {
            policy: Some(realm_policy("old", "corp", &[("max_token_per_user", "6")])),
            etag: format!("{}-stale", current.etag),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    let invalid = admin
        .create_policy(policy_pb::CreatePolicyRequest {
            policy: Some(realm_policy("bad", "corp", &[("no_such_action", "1")])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");
    let missing = admin
        .delete_policy(policy_pb::DeletePolicyRequest {
            name: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let seen = events(&mut ops, 0, 4).await;
    let kinds: Vec<&str> = seen.iter().map(|event| event.r#type.as_str()).collect();
    assert_eq!(
        kinds,
        ["policy.created", "policy.updated", "policy.deleted"],
        "{seen:#?}"
    );
    assert_eq!(settled_policy_events(&stack, 3).await, 3);
    // The ids are the changes' stable event ids, as the policy service's history (read
    // with the service key the device service uses) shows them.
    let changes = history_after(&mut stack.policy_service(), 1).await;
    let expected: Vec<&str> = changes
        .iter()
        .map(|change| change.event_id.as_str())
        .collect();
    let ids: Vec<&str> = seen.iter().map(|event| event.id.as_str()).collect();
    assert_eq!(ids, expected);
    let updated = &seen[1];
    assert_eq!(
        (
            updated.realm.as_str(),
            updated.user.as_str(),
            updated.subject.as_str()
        ),
        ("", "", "laptops")
    );
    assert!(
        updated.actor.ends_with("(for alice@console)"),
        "{}",
        updated.actor
    );
    assert_eq!(updated.initiating_entity, "admin");
    assert_eq!(updated.time, changes[1].change_time);
    let change = updated.policy.as_ref().expect("the policy change");
    assert_eq!(
        (
            change.name.as_str(),
            change.change.as_str(),
            change.history_id
        ),
        ("laptops", "update", changes[1].id)
    );
    let (before, after) = (
        change.before.as_ref().unwrap(),
        change.after.as_ref().unwrap(),
    );
    assert_eq!(before.actions["max_token_per_user"], "2");
    assert_eq!(after.actions["max_token_per_user"], "3");
    assert_eq!(after.realms, ["corp"]);
    assert!(after.active);
    let deleted = seen[2].policy.as_ref().unwrap();
    assert!(deleted.after.is_none() && deleted.before.is_some());
    // Not a realm's event: a realm-filtered watch does not get it.
    let mut corp_only = ops
        .watch_enrollment_events(pb::WatchEnrollmentEventsRequest {
            realms: vec!["corp".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let next = tokio::time::timeout(Duration::from_millis(500), corp_only.message()).await;
    assert!(next.is_err(), "a realm-filtered watch got {next:?}");
}

async fn webhooks_carry_policy_events_and_caep_streams_skip_them(backend: Backend) {
    if python_receiver_or_skip("events::policy::webhooks").is_none() {
        return;
    }
    let stack = TestStack::start(backend).await;
    relay_started(&stack).await;
    let receiver = PythonReceiver::start(ReceiverOptions {
        jwks_url: format!("{}{}", stack.page_origin(), enroll_device::web::JWKS_PATH),
        issuer: "http://localhost:8080".to_owned(),
        audience: "https://receiver.test/caep".to_owned(),
        webhook_secrets: Vec::new(),
    });
    let mut admin = stack.admin();
    let create = |name: &str, encoding: pb::EventEncoding, path: &str| {
        let request = pb::CreateEventStreamRequest {
            name: name.into(),
            encoding: encoding as i32,
            endpoint: receiver.url(path),
            audience: "https://receiver.test/caep".into(),
            created_by: "secops".into(),
            ..Default::default()
        };
        let mut admin = admin.clone();
        async move {
            admin
                .create_event_stream(request)
                .await
                .unwrap()
                .into_inner()
        }
    };
    let siem = create("siem", pb::EventEncoding::Webhook, "/webhook").await;
    receiver.set_webhook_secrets(&[&siem.secret]).await;
    create("idp", pb::EventEncoding::CaepPush, "/caep").await;
    change_policy(&mut stack.policy_admin(), "kiosks").await;
    // A credential event after them: the CAEP stream has delivered past the policy events
    // once it arrives.
    admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "corp".into(),
            user: "alice".into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let log = receiver
        .wait_for(
            |log| accepted(log, "webhook").len() >= 4 && !accepted(log, "set").is_empty(),
            Duration::from_secs(30),
        )
        .await;
    let webhooks = accepted(&log, "webhook");
    let policy_hooks: Vec<&Value> = webhooks
        .iter()
        .copied()
        .filter(|entry| {
            entry["type"]
                .as_str()
                .unwrap_or_default()
                .starts_with("policy.")
        })
        .collect();
    let types: Vec<&str> = policy_hooks
        .iter()
        .map(|entry| entry["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        types,
        ["policy.created", "policy.updated", "policy.deleted"]
    );
    // Verified by the standardwebhooks library; `webhook-id` is the event's stable id.
    let changes = history_after(&mut stack.policy_ops(), 0).await;
    for (hook, change) in policy_hooks.iter().zip(&changes) {
        assert_eq!(hook["id"], change.event_id.as_str());
        let data = &hook["payload"]["data"];
        assert_eq!(data["id"], change.event_id.as_str());
        assert_eq!(data["subject"], "kiosks");
        assert_eq!(data["realm"], "");
        assert_eq!(data["policy"]["name"], "kiosks");
        assert_eq!(data["policy"]["change"], change.change.as_str());
        assert_eq!(data["policy"]["history_id"], change.id);
    }
    assert_eq!(
        policy_hooks[1]["payload"]["data"]["policy"]["after"]["actions"]["max_token_per_user"],
        "3"
    );
    // The CAEP stream got the credential event only.
    let sets = accepted(&log, "set");
    assert_eq!(sets.len(), 1, "{sets:#?}");
    assert_eq!(
        log.iter().filter(|entry| entry["kind"] == "set").count(),
        1,
        "no policy event was pushed to the CAEP receiver"
    );
}

async fn two_replicas_relay_each_change_once(backend: Backend) {
    let stack = TestStack::builder(backend).device_replicas(2).start().await;
    relay_started(&stack).await;
    let mut admin = stack.policy_admin();
    for n in 0..4 {
        change_policy(&mut admin, &format!("policy-{n}")).await;
    }
    // Both replicas see every new version and poll every second: 12 changes, 12 events.
    assert_eq!(settled_policy_events(&stack, 12).await, 12);
    assert_eq!(
        stack
            .database
            .count(
                "SELECT COUNT(DISTINCT event_id) FROM enrollment_events \
                 WHERE event_type LIKE 'policy.%'"
            )
            .await,
        12
    );
    let seen = events(&mut stack.ops(), 0, 12).await;
    let changes = history_after(&mut stack.policy_ops(), 0).await;
    assert_eq!(
        seen.iter().map(|event| &event.id).collect::<Vec<_>>(),
        changes
            .iter()
            .map(|change| &change.event_id)
            .collect::<Vec<_>>(),
        "once each, in the order of the changes"
    );
}

async fn changes_made_while_the_policy_service_is_out_of_reach_are_relayed_later(backend: Backend) {
    let mut stack = TestStack::start(backend).await;
    relay_started(&stack).await;
    change_policy(&mut stack.policy_admin(), "before").await;
    assert_eq!(settled_policy_events(&stack, 3).await, 3);
    // The device service's policy service stops; another one on the same database takes
    // changes meanwhile.
    let replica = stack.add_policy_replica().await;
    stack.stop_policy().await;
    let mut elsewhere = stack.policy_replicas[replica].policy_as(enroll_shared::auth::Role::Admin);
    change_policy(&mut elsewhere, "during").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(stack.database.count(COUNT_POLICY_EVENTS).await, 3);
    // Back: the relay catches up from its cursor, in order, nothing lost.
    stack.restart_policy().await;
    assert_eq!(settled_policy_events(&stack, 6).await, 6);
    let seen = events(&mut stack.ops(), 0, 6).await;
    let subjects: Vec<&str> = seen.iter().map(|event| event.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["before", "before", "before", "during", "during", "during"]
    );
    let changes = history_after(&mut stack.policy_ops(), 0).await;
    assert_eq!(
        seen.iter().map(|event| &event.id).collect::<Vec<_>>(),
        changes
            .iter()
            .map(|change| &change.event_id)
            .collect::<Vec<_>>()
    );
}

async fn the_history_read_after_an_id_is_oldest_first_and_paged(backend: Backend) {
    let stack = TestStack::builder(backend).policy_only().start().await;
    let mut admin = stack.policy_admin();
    change_policy(&mut admin, "paged").await;
    let mut ops = stack.policy_ops();
    let first = ops
        .list_policy_history(policy_pb::ListPolicyHistoryRequest {
            after_id: Some(0),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<i64> = first.changes.iter().map(|change| change.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1], "oldest first: {ids:?}");
    assert!(!first.next_page_token.is_empty());
    let rest = ops
        .list_policy_history(policy_pb::ListPolicyHistoryRequest {
            after_id: Some(0),
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.changes.len(), 1);
    assert!(rest.changes[0].id > ids[1]);
    assert!(rest.next_page_token.is_empty());
    // Without `after_id`: newest first, as before; the event ids the same on every read.
    let newest = history_after(&mut ops, ids[0] - 1).await;
    let unchanged = ops
        .list_policy_history(policy_pb::ListPolicyHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .changes;
    assert_eq!(unchanged.first().map(|c| c.id), newest.last().map(|c| c.id));
    assert_eq!(unchanged[0].event_id, newest[2].event_id);
    let negative = ops
        .list_policy_history(policy_pb::ListPolicyHistoryRequest {
            after_id: Some(-1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(negative.message().contains("after_id"), "{negative:?}");
}

enroll_e2e::on_both_backends!(
    policy_changes_become_events_with_stable_ids,
    webhooks_carry_policy_events_and_caep_streams_skip_them,
    two_replicas_relay_each_change_once,
    changes_made_while_the_policy_service_is_out_of_reach_are_relayed_later,
    the_history_read_after_an_id_is_oldest_first_and_paged,
);
