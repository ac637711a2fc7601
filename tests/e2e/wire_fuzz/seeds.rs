//! The corpus of the wire fuzz test: one valid request per RPC of both services, and Envoy's
//! ext_authz check the device server serves with its gate.
use enroll_e2e::{DEVICE_SERVICE, GATE_JWT_HEADER, POLICY_SERVICE, policy};
use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use prost::Message;

/// Envoy's authorization service on the device server (with `[gate]`).
pub const EXT_AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// One valid request per RPC (method name, encoding), the corpus the mutations start from;
/// `jwt` is an identity the gate accepts (so mutated checks reach the session cookie).
pub fn valid_requests(jwt: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    const ID: &str = "6f1c1a52-7a8e-4a43-8d8a-8a9b7f3f0c11";
    let s = |text: &str| text.to_owned();
    let device: Vec<(&str, Vec<u8>)> = vec![
        (
            "CheckEnrollment",
            pb::CheckEnrollmentRequest {
                realm: s("acme"),
                user: s("kate"),
                credential_id: s("AAAA"),
                required_device_type: 1,
                require_approved: true,
                client_ip: s("10.0.0.1"),
            }
            .encode_to_vec(),
        ),
        (
            "CreateEnrollmentLink",
            pb::CreateEnrollmentLinkRequest {
                realm: s("acme"),
                user: s("kate"),
                device_type: 1,
                redirect_url: s("https://app.example.com/done"),
                ttl: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                created_by: s("fuzz"),
                request_id: s("r1"),
            }
            .encode_to_vec(),
        ),
        (
            "ListEnrollmentLinks",
            pb::ListEnrollmentLinksRequest {
                realm: s("acme"),
                user: s("kate"),
                state: 1,
                page_size: 10,
                page_token: s("6b617465"),
            }
            .encode_to_vec(),
        ),
        (
            "RevokeEnrollmentLink",
            pb::RevokeEnrollmentLinkRequest {
                id: s(ID),
                revoked_by: s("fuzz"),
            }
            .encode_to_vec(),
        ),
        (
            "BeginDeviceRegistration",
            pb::BeginDeviceRegistrationRequest {
                link_secret: s("c2VjcmV0"),
                realm: s("acme"),
                user: s("kate"),
                device_type: 1,
                client_ip: s("10.0.0.1"),
            }
            .encode_to_vec(),
        ),
        (
            "FinishDeviceRegistration",
            pb::FinishDeviceRegistrationRequest {
                ceremony_id: s(ID),
                credential_json: s(
                    r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{}}"#,
                ),
                user_agent: s("fuzz"),
                client_ip: s("10.0.0.1"),
            }
            .encode_to_vec(),
        ),
        (
            "BeginDeviceAuthentication",
            pb::BeginDeviceAuthenticationRequest {
                realm: s("acme"),
                user: s("kate"),
                required_device_type: 1,
                client_ip: s("::1"),
            }
            .encode_to_vec(),
        ),
        (
            "FinishDeviceAuthentication",
            pb::FinishDeviceAuthenticationRequest {
                ceremony_id: s(ID),
                credential_json: s("{}"),
                client_ip: s("::1"),
            }
            .encode_to_vec(),
        ),
        (
            "ListDevices",
            pb::ListDevicesRequest {
                realm: s("acme"),
                user: s("kate"),
                device_type: 1,
                state: 2,
                page_size: 5,
                page_token: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "GetDevice",
            pb::GetDeviceRequest { id: s(ID) }.encode_to_vec(),
        ),
        (
            "ApproveDevice",
            pb::ApproveDeviceRequest {
                id: s(ID),
                approved_by: s("fuzz"),
            }
            .encode_to_vec(),
        ),
        (
            "RevokeDevice",
            pb::RevokeDeviceRequest {
                id: s(ID),
                revoked_by: s("fuzz"),
                reason: s("lost"),
            }
            .encode_to_vec(),
        ),
        (
            "EnrollToken",
            pb::EnrollTokenRequest {
                realm: s("acme"),
                user: s("kate"),
                r#type: pb::TokenType::Totp as i32,
                digits: 6,
                period: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                description: s("fuzz"),
                include_qr_png: true,
                client_ip: s("10.0.0.1"),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ImportTokens",
            pb::ImportTokensRequest {
                realm: s("acme"),
                csv: s("HW1,3132333435363738393031323334353637383930,hotp,6,\n"),
                request_id: s("r2"),
            }
            .encode_to_vec(),
        ),
        (
            "AssignToken",
            pb::AssignTokenRequest {
                serial: s("HW1"),
                realm: s("acme"),
                user: s("kate"),
                client_ip: s("10.0.0.1"),
                request_id: s("r3"),
                code: s("123456"),
            }
            .encode_to_vec(),
        ),
        (
            "UnassignToken",
            pb::UnassignTokenRequest {
                serial: s("HW1"),
                request_id: s("r4"),
            }
            .encode_to_vec(),
        ),
        (
            "SetPin",
            pb::SetPinRequest {
                serial: s("HW1"),
                pin: s("1234"),
                client_ip: s("10.0.0.1"),
                request_id: s("r5"),
            }
            .encode_to_vec(),
        ),
        (
            "EnableToken",
            pb::EnableTokenRequest {
                serial: s("HW1"),
                request_id: s("r6"),
            }
            .encode_to_vec(),
        ),
        (
            "DisableToken",
            pb::DisableTokenRequest {
                serial: s("HW1"),
                request_id: s("r7"),
            }
            .encode_to_vec(),
        ),
        (
            "DeleteToken",
            pb::DeleteTokenRequest {
                serial: s("NOPE"),
                request_id: s("r8"),
            }
            .encode_to_vec(),
        ),
        (
            "ListTokens",
            pb::ListTokensRequest {
                realm: s("acme"),
                user: s("kate"),
                r#type: 1,
                assigned: Some(true),
                state: 1,
                page_size: 3,
                page_token: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "GetToken",
            pb::GetTokenRequest { serial: s("HW1") }.encode_to_vec(),
        ),
        (
            "VerifyToken",
            pb::VerifyTokenRequest {
                realm: s("acme"),
                serial: s("HW1"),
                code: s("12345678"),
                client_ip: s("10.0.0.1"),
            }
            .encode_to_vec(),
        ),
        (
            "CreateOtpEnrollmentLink",
            pb::CreateOtpEnrollmentLinkRequest {
                realm: s("acme"),
                user: s("kate"),
                r#type: 1,
                digits: 8,
                period: Some(prost_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                algorithm: 2,
                label: s("Kate's phone"),
                description: s("fuzz"),
                ttl: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                created_by: s("console"),
                client_ip: s("10.0.0.1"),
                request_id: s("r9"),
            }
            .encode_to_vec(),
        ),
        (
            "ListOtpEnrollmentLinks",
            pb::ListOtpEnrollmentLinksRequest {
                realm: s("acme"),
                user: s("kate"),
                state: 1,
                page_size: 3,
                page_token: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "RevokeOtpEnrollmentLink",
            pb::RevokeOtpEnrollmentLinkRequest {
                id: s("00000000-0000-4000-8000-000000000000"),
                revoked_by: s("console"),
                client_ip: s("10.0.0.1"),
            }
            .encode_to_vec(),
        ),
        (
            "RedeemOtpEnrollmentLink",
            pb::RedeemOtpEnrollmentLinkRequest {
                secret: s("Zq8vN3xW5tY7uR2pL9mK4jH6gF1dS0aQxE2cV7bN4mA"),
                client_ip: s("10.0.0.1"),
                identity_realm: s("acme"),
                identity_user: s("kate"),
            }
            .encode_to_vec(),
        ),
        (
            "ResumeOtpEnrollment",
            pb::ResumeOtpEnrollmentRequest {
                session: s("Zq8vN3xW5tY7uR2pL9mK4jH6gF1dS0aQxE2cV7bN4mA"),
                client_ip: s("10.0.0.1"),
            }
            .encode_to_vec(),
        ),
        (
            "FinishOtpEnrollment",
            pb::FinishOtpEnrollmentRequest {
                session: s("Zq8vN3xW5tY7uR2pL9mK4jH6gF1dS0aQxE2cV7bN4mA"),
                code: s("12345678"),
                pin: s("1234"),
                client_ip: s("10.0.0.1"),
            }
            .encode_to_vec(),
        ),
        (
            "WatchEnrollmentEvents",
            pb::WatchEnrollmentEventsRequest {
                after_seq: 3,
                from_now: false,
                types: vec![s("token.enrolled")],
                realms: vec![s("acme")],
            }
            .encode_to_vec(),
        ),
        (
            "CreateEventStream",
            pb::CreateEventStreamRequest {
                name: s("siem"),
                encoding: 2,
                endpoint: s("https://receiver.example.com/hook"),
                audience: s("https://receiver.example.com"),
                types: vec![s("token.lost")],
                realms: vec![s("acme")],
                from_beginning: true,
                created_by: s("secops"),
                subject_format: 1,
            }
            .encode_to_vec(),
        ),
        (
            "ListEventStreams",
            pb::ListEventStreamsRequest {}.encode_to_vec(),
        ),
        (
            "UpdateEventStream",
            pb::UpdateEventStreamRequest {
                id: s("00000000-0000-4000-8000-000000000000"),
                status: 2,
                types: vec![s("device.revoked")],
                realms: vec![s("acme")],
                set_filter: true,
                updated_by: s("secops"),
            }
            .encode_to_vec(),
        ),
        (
            "DeleteEventStream",
            pb::DeleteEventStreamRequest {
                id: s("00000000-0000-4000-8000-000000000000"),
                deleted_by: s("secops"),
            }
            .encode_to_vec(),
        ),
        (
            "RotateEventStreamSecret",
            pb::RotateEventStreamSecretRequest {
                id: s("00000000-0000-4000-8000-000000000000"),
                rotated_by: s("secops"),
            }
            .encode_to_vec(),
        ),
        (
            "RotateEventSigningKey",
            pb::RotateEventSigningKeyRequest {
                algorithm: s("ES256"),
                rsa_pkcs8_der: Vec::new(),
                overlap: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                rotated_by: s("secops"),
            }
            .encode_to_vec(),
        ),
        (
            "VerifyEventStream",
            pb::VerifyEventStreamRequest {
                id: s("00000000-0000-4000-8000-000000000000"),
                state: s("c3RhdGU"),
                requested_by: s("secops"),
            }
            .encode_to_vec(),
        ),
        (
            "ListDeadLetters",
            pb::ListDeadLettersRequest {
                stream_id: s("00000000-0000-4000-8000-000000000000"),
                page_size: 3,
                page_token: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "RedeliverEvents",
            pb::RedeliverEventsRequest {
                stream_id: s("00000000-0000-4000-8000-000000000000"),
                requested_by: s("secops"),
            }
            .encode_to_vec(),
        ),
        (
            "GetMetadataStatus",
            pb::GetMetadataStatusRequest {}.encode_to_vec(),
        ),
        (
            "AcceptMetadataJump",
            pb::AcceptMetadataJumpRequest {
                no: 42,
                accepted_by: s("secops"),
                reason: s("checked"),
            }
            .encode_to_vec(),
        ),
        (
            "Validate",
            pb::ValidateRequest {
                realm: s("acme"),
                user: s("kate"),
                pass: s("1234123456"),
                client_ip: s("10.0.0.1"),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ReportLostToken",
            pb::ReportLostTokenRequest {
                serial: s("HW1"),
                client_ip: s("10.0.0.1"),
                request_id: s("r9"),
            }
            .encode_to_vec(),
        ),
        (
            "ListAuditEvents",
            pb::ListAuditEventsRequest {
                realm: s("acme"),
                user: s("kate"),
                action: s("enroll"),
                serial: s("HW1"),
                result: s("ok"),
                page_size: 20,
                page_token: String::new(),
            }
            .encode_to_vec(),
        ),
    ];
    let rule = policy(
        "fuzz",
        &[("max_token_per_user", "50"), ("otp_pin_minlength", "4")],
    );
    let policies: Vec<(&str, Vec<u8>)> = vec![
        (
            "EvaluateEnrollment",
            policy_pb::EvaluateEnrollmentRequest {
                realm: s("acme"),
                user: s("kate"),
                client_ip: s("10.0.0.1"),
                action: 1,
                token_type: s("totp"),
                serial: s("HW1"),
                no_client: false,
            }
            .encode_to_vec(),
        ),
        (
            "ValidatePin",
            policy_pb::ValidatePinRequest {
                realm: s("acme"),
                user: s("kate"),
                client_ip: s("10.0.0.1"),
                pin: s("1234"),
                no_client: false,
            }
            .encode_to_vec(),
        ),
        (
            "CreatePolicy",
            policy_pb::CreatePolicyRequest {
                policy: Some(policy_pb::Policy {
                    realms: vec![s("acme"), s("!x*")],
                    clients: vec![s("10.0.0.0/8")],
                    ..rule.clone()
                }),
                actor: s("fuzz"),
                validate_only: false,
            }
            .encode_to_vec(),
        ),
        (
            "UpdatePolicy",
            policy_pb::UpdatePolicyRequest {
                policy: Some(rule),
                etag: s("1"),
                actor: s("fuzz"),
                validate_only: false,
            }
            .encode_to_vec(),
        ),
        (
            "DeletePolicy",
            policy_pb::DeletePolicyRequest {
                name: s("nope"),
                etag: s("1"),
                actor: s("fuzz"),
            }
            .encode_to_vec(),
        ),
        (
            "GetPolicy",
            policy_pb::GetPolicyRequest { name: s("fuzz") }.encode_to_vec(),
        ),
        (
            "ListPolicies",
            policy_pb::ListPoliciesRequest {
                page_size: 2,
                page_token: s("66757a7a"),
            }
            .encode_to_vec(),
        ),
        (
            "WatchPolicySet",
            policy_pb::WatchPolicySetRequest {}.encode_to_vec(),
        ),
        (
            "ListPolicyHistory",
            policy_pb::ListPolicyHistoryRequest {
                name: s("fuzz"),
                page_size: 2,
                page_token: s("31"),
                after_id: Some(1),
            }
            .encode_to_vec(),
        ),
    ];
    let device_rpcs: Vec<&str> = enroll_device::grpc::access::RPC_ROLES
        .iter()
        .map(|(rpc, _)| *rpc)
        .collect();
    let policy_rpcs: Vec<&str> = enroll_policy::access::RPCS.to_vec();
    // Every RPC the services route has a seed: a new RPC without one fails here.
    for (service, rpcs, seeds) in [
        (DEVICE_SERVICE, &device_rpcs, &device),
        (POLICY_SERVICE, &policy_rpcs, &policies),
    ] {
        let mut seeded: Vec<&str> = seeds.iter().map(|(rpc, _)| *rpc).collect();
        let mut listed = rpcs.clone();
        seeded.sort_unstable();
        listed.sort_unstable();
        assert_eq!(seeded, listed, "valid requests of {service}");
    }
    let paths: Vec<&str> = enroll_device::grpc::ext_authz::METHODS
        .iter()
        .map(|path| path.rsplit('/').next().unwrap_or(path))
        .collect();
    assert_eq!(paths, ["Check"], "valid requests of {EXT_AUTHZ_SERVICE}");
    device
        .into_iter()
        .map(|(rpc, body)| (DEVICE_SERVICE, rpc, body))
        .chain([(EXT_AUTHZ_SERVICE, "Check", envoy_check(jwt))])
        .chain(
            policies
                .into_iter()
                .map(|(rpc, body)| (POLICY_SERVICE, rpc, body)),
        )
        .collect()
}

/// A check as Envoy's ext_authz filter sends it: a browser's request with the identity, a
/// cookie that looks like the gate's, the downstream address and the route's device type.
fn envoy_check(jwt: &str) -> Vec<u8> {
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
    use envoy_types::pb::envoy::service::auth::v3::{
        AttributeContext, CheckRequest, attribute_context,
    };
    let headers = [
        (":authority", "app.test.example"),
        (":method", "GET"),
        (":path", "/docs?page=2"),
        ("accept", "text/html"),
        ("sec-fetch-mode", "navigate"),
        (
            "cookie",
            "theme=dark; __Host-enroll-gate=v1.s1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("x-enroll-user", "mallory"),
        (GATE_JWT_HEADER, jwt),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "192.0.2.7".to_owned(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    method: "GET".to_owned(),
                    headers: headers
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.to_string()))
                        .collect(),
                    path: "/docs?page=2".to_owned(),
                    host: "app.test.example".to_owned(),
                    scheme: "https".to_owned(),
                    protocol: "HTTP/1.1".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [("device_type".to_owned(), "any".to_owned())].into(),
            ..Default::default()
        }),
    }
    .encode_to_vec()
}
