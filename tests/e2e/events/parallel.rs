//! A stream's deliveries go out side by side for different users (at most
//! `events.delivery_concurrency` at once) over kept-alive connections, each user's in order,
//! each event once in a normal run; the backlog, the oldest undelivered event's age and the
//! deliveries by outcome are on `/metrics` while a receiver fails and after it recovers.
use std::time::Duration;

use enroll_e2e::{Backend, TestStack, accepted, metric_value, python_receiver_or_skip};
use enroll_shared::proto::device::v1 as pb;
use serde_json::Value;

use super::support::{enroll_hotp, reference_receiver, webhook_stream};

/// Enrolls, disables and enables a token of each of `users`: three events per user.
async fn three_events_each(stack: &TestStack, users: &[String]) {
    let mut admin = stack.admin();
    for user in users {
        let serial = enroll_hotp(&mut admin, "corp", user).await;
        admin
            .disable_token(pb::DisableTokenRequest {
                serial: serial.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        admin
            .enable_token(pb::EnableTokenRequest {
                serial,
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

/// Each user's delivered webhook types in arrival order, and every delivered id.
fn by_user(log: &[Value]) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let mut users: Vec<(String, Vec<String>)> = Vec::new();
    let mut ids = Vec::new();
    for entry in accepted(log, "webhook") {
        let user = entry["payload"]["data"]["user"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let kind = entry["type"].as_str().unwrap_or_default().to_owned();
        ids.push(entry["id"].as_str().unwrap_or_default().to_owned());
        match users.iter_mut().find(|(seen, _)| *seen == user) {
            Some((_, kinds)) => kinds.push(kind),
            None => users.push((user, vec![kind])),
        }
    }
    users.sort();
    (users, ids)
}

async fn many_users_events_go_out_side_by_side_each_users_in_order_once(backend: Backend) {
    if python_receiver_or_skip("events::parallel::side_by_side").is_none() {
        return;
    }
    let stack = TestStack::start(backend).await;
    let receiver = reference_receiver(&stack);
    webhook_stream(&mut stack.admin(), &receiver, "siem").await;
    let users: Vec<String> = (0..16).map(|n| format!("user{n:02}")).collect();
    three_events_each(&stack, &users).await;
    receiver
        .wait_for(
            |log| accepted(log, "webhook").len() >= 48,
            Duration::from_secs(60),
        )
        .await;
    // A moment more: nothing comes twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = receiver.log().await;
    let (per_user, mut ids) = by_user(&log);
    assert_eq!(per_user.len(), 16, "{log:#?}");
    for (user, kinds) in &per_user {
        assert_eq!(
            kinds,
            &["token.enrolled", "token.disabled", "token.enabled"],
            "{user}"
        );
    }
    let delivered = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((delivered, ids.len()), (48, 48), "every event once");
}

async fn delivery_metrics_show_the_backlog_its_age_and_the_outcomes(backend: Backend) {
    if python_receiver_or_skip("events::parallel::metrics").is_none() {
        return;
    }
    let stack = TestStack::start(backend).await;
    let receiver = reference_receiver(&stack);
    webhook_stream(&mut stack.admin(), &receiver, "siem").await;
    let addr = stack.device_metrics_addr();
    // The receiver fails the first attempts: the events wait, and age on the clock.
    receiver.force("/webhook", 503, None, 2).await;
    three_events_each(&stack, &["alice".to_owned()]).await;
    receiver
        .wait_for(|log| !log.is_empty(), Duration::from_secs(10))
        .await;
    stack.clock().advance(Duration::from_secs(120));
    let series = |name: &'static str| async move {
        metric_value(addr, name, Some("stream=\"siem\""))
            .await
            .unwrap_or(-1.0)
    };
    // The gauges are as of the last delivery round after the clock moved.
    let mut waited = 0;
    while series("enroll_device_events_oldest_undelivered_age_seconds").await < 120.0
        && waited < 100
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let age = series("enroll_device_events_oldest_undelivered_age_seconds").await;
    assert!(age >= 120.0, "oldest undelivered age {age}");
    assert_eq!(series("enroll_device_events_backlog").await, 3.0);
    let failed = metric_value(
        addr,
        "enroll_device_events_deliveries_total",
        Some("outcome=\"failed\""),
    )
    .await
    .unwrap_or(0.0);
    assert!(failed >= 1.0, "failed deliveries {failed}");

    // Past the back-off (a few seconds; the receiver checks webhook timestamps against
    // its own clock, so the test clock stays within minutes of it), everything goes out.
    for _ in 0..3 {
        stack.clock().advance(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    receiver
        .wait_for(
            |log| accepted(log, "webhook").len() == 3,
            Duration::from_secs(20),
        )
        .await;
    let mut waited = 0;
    while series("enroll_device_events_backlog").await != 0.0 && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(series("enroll_device_events_backlog").await, 0.0);
    assert_eq!(
        series("enroll_device_events_oldest_undelivered_age_seconds").await,
        0.0
    );
    let delivered = metric_value(
        addr,
        "enroll_device_events_deliveries_total",
        Some("outcome=\"delivered\""),
    )
    .await
    .unwrap_or(0.0);
    assert_eq!(delivered, 3.0);
}

enroll_e2e::on_both_backends!(
    many_users_events_go_out_side_by_side_each_users_in_order_once,
    delivery_metrics_show_the_backlog_its_age_and_the_outcomes,
);
