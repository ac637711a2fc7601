//! Which roles may call which DeviceService RPC (the role table in docs/api.md), and Envoy's
//! external authorization check served next to it when the gate is on.
use enroll_shared::auth::{Access, Role, is_public_path};

const SERVICE_PREFIX: &str = "/enroll.device.v1.DeviceService/";

const ADMIN: &[Role] = &[Role::Admin];
const READERS: &[Role] = &[Role::Admin, Role::Ops];
const PROXY: &[Role] = &[Role::Admin, Role::Proxy];
const PROXY_AND_READERS: &[Role] = &[Role::Admin, Role::Proxy, Role::Ops];

/// Every RPC of the service with the roles that may call it.
pub const RPC_ROLES: [(&str, &[Role]); 44] = [
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

/// Envoy's ext_authz check (`grpc::ext_authz`): the proxy's key, as Envoy sends it in
/// `grpc_service.initial_metadata`. A rule of its own: it is no DeviceService RPC.
pub const EXT_AUTHZ_CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";
pub const EXT_AUTHZ_ROLES: &[Role] = PROXY;

/// The access rule of a gRPC path on the device server.
pub fn access(path: &str) -> Access {
    if is_public_path(path) {
        return Access::Public;
    }
    if path == EXT_AUTHZ_CHECK {
        return Access::Roles(EXT_AUTHZ_ROLES);
    }
    path.strip_prefix(SERVICE_PREFIX)
        .and_then(|method| RPC_ROLES.iter().find(|(rpc, _)| *rpc == method))
        .map(|(_, roles)| Access::Roles(roles))
        .unwrap_or(Access::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_rpcs_have_roles_and_others_are_unknown() {
        assert_eq!(
            access("/enroll.device.v1.DeviceService/CheckEnrollment"),
            Access::Roles(PROXY_AND_READERS)
        );
        assert_eq!(
            access("/enroll.device.v1.DeviceService/EnrollToken"),
            Access::Roles(ADMIN)
        );
        assert_eq!(
            access("/enroll.device.v1.DeviceService/Nope"),
            Access::Unknown
        );
        assert_eq!(
            access("/envoy.service.auth.v3.Authorization/Check"),
            Access::Roles(PROXY)
        );
        assert_eq!(
            access("/envoy.service.auth.v3.Authorization/Nope"),
            Access::Unknown
        );
        assert_eq!(
            access("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Access::Public
        );
    }
}
