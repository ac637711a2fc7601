//! The auth matrix: every RPC of both services (and Envoy's ext_authz check the device
//! server serves with its gate), called with no key, an unknown key and each role's key. No
//! key or an unknown key: UNAUTHENTICATED; a role the RPC does not allow: PERMISSION_DENIED;
//! an allowed role gets past auth (whatever the handler then answers).
use enroll_e2e::{
    Backend, DEVICE_SERVICE, JwtIssuer, POLICY_SERVICE, TestStack, gate_config, key_for,
};
use enroll_shared::auth::Role;
use tonic::Code;
use tonic::transport::Channel;

const ADMIN: &[Role] = &[Role::Admin];
const READERS: &[Role] = &[Role::Admin, Role::Ops];
const POLICY_READERS: &[Role] = &[Role::Admin, Role::Ops, Role::Service];
const SERVICE: &[Role] = &[Role::Service];
const PROXY: &[Role] = &[Role::Admin, Role::Proxy];
const PROXY_AND_READERS: &[Role] = &[Role::Admin, Role::Proxy, Role::Ops];

/// The role table of docs/api.md, written out independently of the code under test.
const POLICY_RPCS: &[(&str, &[Role])] = &[
    ("EvaluateEnrollment", POLICY_READERS),
    ("ValidatePin", POLICY_READERS),
    ("GetPolicy", POLICY_READERS),
    ("ListPolicies", POLICY_READERS),
    ("ListPolicyHistory", POLICY_READERS),
    ("WatchPolicySet", SERVICE),
    ("CreatePolicy", ADMIN),
    ("UpdatePolicy", ADMIN),
    ("DeletePolicy", ADMIN),
];

const DEVICE_RPCS: &[(&str, &[Role])] = &[
    ("CheckEnrollment", PROXY_AND_READERS),
    ("CreateEnrollmentLink", ADMIN),
    ("ListEnrollmentLinks", READERS),
    ("RevokeEnrollmentLink", ADMIN),
    ("BeginDeviceRegistration", PROXY),
    ("FinishDeviceRegistration", PROXY),
    ("BeginDeviceAuthentication", PROXY),
    ("FinishDeviceAuthentication", PROXY),
    ("ListDevices", READERS),
    ("GetDevice", READERS),
    ("ApproveDevice", ADMIN),
    ("RevokeDevice", ADMIN),
    ("EnrollToken", ADMIN),
    ("ImportTokens", ADMIN),
    ("AssignToken", ADMIN),
    ("UnassignToken", ADMIN),
    ("SetPin", ADMIN),
    ("EnableToken", ADMIN),
    ("DisableToken", ADMIN),
    ("DeleteToken", ADMIN),
    ("ListTokens", READERS),
    ("GetToken", READERS),
    ("VerifyToken", ADMIN),
    ("CreateOtpEnrollmentLink", ADMIN),
    ("ListOtpEnrollmentLinks", READERS),
    ("RevokeOtpEnrollmentLink", ADMIN),
    ("RedeemOtpEnrollmentLink", PROXY),
    ("ResumeOtpEnrollment", PROXY),
    ("FinishOtpEnrollment", PROXY),
    ("WatchEnrollmentEvents", READERS),
    ("CreateEventStream", ADMIN),
    ("ListEventStreams", READERS),
    ("UpdateEventStream", ADMIN),
    ("DeleteEventStream", ADMIN),
    ("RotateEventStreamSecret", ADMIN),
    ("RotateEventSigningKey", ADMIN),
    ("VerifyEventStream", ADMIN),
    ("ListDeadLetters", READERS),
    ("RedeliverEvents", ADMIN),
    ("Validate", PROXY),
    ("ReportLostToken", ADMIN),
    ("ListAuditEvents", READERS),
    ("GetMetadataStatus", READERS),
    ("AcceptMetadataJump", ADMIN),
];

/// Envoy's `envoy.service.auth.v3.Authorization`, served next to DeviceService with `[gate]`.
const EXT_AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";
const EXT_AUTHZ_RPCS: &[(&str, &[Role])] = &[("Check", PROXY)];

/// Calls `path` with an empty request message (every field at its default).
async fn call(channel: &Channel, path: &str, authorization: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(());
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("ascii"));
    }
    let path = http::uri::PathAndQuery::try_from(path.to_owned()).expect("path");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    if path.path().ends_with("/WatchEnrollmentEvents") {
        // Server streaming with nothing to send yet: the response headers (or the refusal)
        // are the answer.
        return match grpc.server_streaming(request, path, codec).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
    }
    if path.path().ends_with("/WatchPolicySet") {
        // Server streaming: the first message (or the refusal) is the answer.
        return match grpc.server_streaming(request, path, codec).await {
            Ok(response) => match response.into_inner().message().await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            },
            Err(status) => status.code(),
        };
    }
    match grpc.unary(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn check_matrix(channel: &Channel, service: &str, rpcs: &[(&str, &[Role])]) {
    for (rpc, allowed) in rpcs {
        let path = format!("/{service}/{rpc}");
        for header in [
            None,
            Some("Bearer not-a-key".to_owned()),
            Some(key_for(Role::Admin).to_owned()),
        ] {
            if header.as_deref() == Some(key_for(Role::Admin)) {
                // A key without the Bearer scheme is refused like no key.
                assert_eq!(
                    call(channel, &path, header.as_deref()).await,
                    Code::Unauthenticated,
                    "{path} raw key"
                );
                continue;
            }
            assert_eq!(
                call(channel, &path, header.as_deref()).await,
                Code::Unauthenticated,
                "{path} {header:?}"
            );
        }
        for role in Role::ALL {
            let code = call(channel, &path, Some(&format!("Bearer {}", key_for(role)))).await;
            if allowed.contains(&role) {
                assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{path} as {role} should pass auth, got {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{path} as {role}");
            }
        }
    }
    // Paths no service serves are refused whatever the key.
    let unknown = format!("/{service}/NoSuchRpc");
    assert_eq!(
        call(
            channel,
            &unknown,
            Some(&format!("Bearer {}", key_for(Role::Admin)))
        )
        .await,
        Code::Unimplemented
    );
}

async fn every_rpc_checks_key_and_role(backend: Backend) {
    let issuer = JwtIssuer::new();
    let gate = gate_config(&issuer, &["app.test.example".into()]);
    let stack = TestStack::builder(backend)
        .device_config(move |config| config.gate = gate.clone())
        .start()
        .await;
    let (policy, device) = (stack.policy(), stack.device());
    check_matrix(&policy.channel().await, POLICY_SERVICE, POLICY_RPCS).await;
    check_matrix(&device.channel().await, DEVICE_SERVICE, DEVICE_RPCS).await;
    check_matrix(&device.channel().await, EXT_AUTHZ_SERVICE, EXT_AUTHZ_RPCS).await;
    // Health needs no key.
    assert_eq!(
        call(
            &policy.channel().await,
            "/grpc.health.v1.Health/Check",
            None
        )
        .await,
        Code::Ok
    );
}

enroll_e2e::on_both_backends!(every_rpc_checks_key_and_role);
