//! Health statuses (per service, NOT_SERVING while a dependency is missing) and server
//! reflection (v1 and v1alpha, so grpcurl works without proto files).
use std::time::Duration;

use enroll_e2e::{Backend, DEVICE_SERVICE as DEVICE, POLICY_SERVICE as POLICY, TestStack};
use tonic_health::pb::health_check_response::ServingStatus;

async fn device_is_serving_only_while_the_policy_service_answers(backend: Backend) {
    // The policy port is bound but nothing answers on it yet.
    let mut stack = TestStack::builder(backend)
        .policy_not_started()
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        stack.device().health_status(DEVICE).await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        stack.device().health_status("").await,
        ServingStatus::NotServing as i32
    );

    stack
        .start_policy()
        .wait_for_health(POLICY, ServingStatus::Serving, Duration::from_secs(20))
        .await;
    let device = stack.device();
    device
        .wait_for_health(DEVICE, ServingStatus::Serving, Duration::from_secs(10))
        .await;
    device
        .wait_for_health("", ServingStatus::Serving, Duration::from_secs(1))
        .await;

    stack.stop_policy().await;
    stack
        .device()
        .wait_for_health(DEVICE, ServingStatus::NotServing, Duration::from_secs(10))
        .await;
    stack.stop().await;
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
    device_is_serving_only_while_the_policy_service_answers,
    reflection_lists_each_servers_own_services,
);
