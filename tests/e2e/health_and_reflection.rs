//! Health statuses (per service; a dependency under its own name) and server reflection
//! (v1 and v1alpha, so grpcurl works without proto files).
use std::time::Duration;

use enroll_e2e::{
    Backend, DEVICE_POLICY_DEPENDENCY, DEVICE_SERVICE as DEVICE, POLICY_SERVICE as POLICY,
    TestStack, enroll_token, validate_request,
};
use enroll_shared::proto::device::v1 as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

/// A policy-service outage used to flip the device server's own health to NOT_SERVING, so
/// every device replica left the load balancer and `Validate`, `CheckEnrollment` and
/// WebAuthn logins failed with it, though they need no decision. The device's own names
/// stay SERVING; the dependency is reported under its own name; mutations fail closed.
async fn device_stays_serving_and_reports_the_policy_service_apart(backend: Backend) {
    const WITHIN: Duration = Duration::from_secs(10);
    // The policy port is bound but nothing answers on it yet.
    let mut stack = TestStack::builder(backend)
        .policy_not_started()
        .start()
        .await;
    let device = stack.device();
    device
        .wait_for_health(DEVICE, ServingStatus::Serving, WITHIN)
        .await;
    device
        .wait_for_health("", ServingStatus::Serving, WITHIN)
        .await;
    assert_eq!(
        device.health_status(DEVICE_POLICY_DEPENDENCY).await,
        ServingStatus::NotServing as i32
    );
    policy_outage_is_survived(&stack).await;

    stack
        .start_policy()
        .wait_for_health(POLICY, ServingStatus::Serving, Duration::from_secs(20))
        .await;
    let device = stack.device();
    device
        .wait_for_health(DEVICE_POLICY_DEPENDENCY, ServingStatus::Serving, WITHIN)
        .await;
    assert_eq!(
        device.health_status(DEVICE).await,
        ServingStatus::Serving as i32
    );
    enroll_token(&mut stack.admin(), "acme", "kate", pb::TokenType::Totp).await;

    stack.stop_policy().await;
    stack
        .device()
        .wait_for_health(DEVICE_POLICY_DEPENDENCY, ServingStatus::NotServing, WITHIN)
        .await;
    for name in [DEVICE, ""] {
        assert_eq!(
            stack.device().health_status(name).await,
            ServingStatus::Serving as i32,
            "`{name}` must not follow the policy service"
        );
    }
    policy_outage_is_survived(&stack).await;

    stack.restart_policy().await;
    stack
        .device()
        .wait_for_health(DEVICE_POLICY_DEPENDENCY, ServingStatus::Serving, WITHIN)
        .await;
    stack.stop().await;
}

/// While the policy service is down: reads and validation answer, a mutation that needs a
/// decision is UNAVAILABLE.
async fn policy_outage_is_survived(stack: &TestStack) {
    let (mut admin, mut proxy) = (stack.admin(), stack.proxy());
    let checked = proxy
        .check_enrollment(pb::CheckEnrollmentRequest {
            realm: "acme".into(),
            user: "kate".into(),
            ..Default::default()
        })
        .await
        .expect("CheckEnrollment answers without the policy service")
        .into_inner();
    assert_eq!(checked.status, pb::EnrollmentStatus::NotEnrolled as i32);
    assert!(!checked.can_self_enroll);
    let validated = proxy
        .validate(validate_request("acme", "kate", "123456"))
        .await
        .expect("Validate answers without the policy service")
        .into_inner();
    assert!(!validated.ok);
    let refused = admin
        .enroll_token(pb::EnrollTokenRequest {
            realm: "acme".into(),
            user: "kate".into(),
            r#type: pb::TokenType::Totp as i32,
            ..Default::default()
        })
        .await
        .expect_err("no enrollment without a decision");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
}

async fn reflection_lists_each_servers_own_services(backend: Backend) {
    use tokio_stream::StreamExt;
    let stack = TestStack::start(backend).await;
    let (policy, device) = (stack.policy(), stack.device());

    for (server, own, other) in [(policy, POLICY, DEVICE), (device, DEVICE, POLICY)] {
        // v1alpha: what grpcurl 1.8 speaks.
        {
            use tonic_reflection::pb::v1alpha::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut client = ServerReflectionClient::new(server.channel().await);
            let mut stream = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let response = stream.next().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = response.message_response
            else {
                panic!("unexpected reflection answer");
            };
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            assert!(names.contains(&own.to_owned()), "{names:?}");
            assert!(
                names.contains(&"grpc.health.v1.Health".to_owned()),
                "{names:?}"
            );
            assert!(!names.contains(&other.to_owned()), "{names:?}");
        }
        // v1.
        {
            use tonic_reflection::pb::v1::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::FileContainingSymbol(own.to_owned())),
            };
            let mut client = ServerReflectionClient::new(server.channel().await);
            let mut stream = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let response = stream.next().await.unwrap().unwrap();
            assert!(
                matches!(response.message_response, Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
                "{response:?}"
            );
        }
    }
}

enroll_e2e::on_both_backends!(
    device_stays_serving_and_reports_the_policy_service_apart,
    reflection_lists_each_servers_own_services,
);
