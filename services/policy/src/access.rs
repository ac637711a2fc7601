//! Which roles may call which PolicyService RPC (the role table in docs/api.md).
use enroll_shared::auth::{Access, Role, is_public_path};

const SERVICE_PREFIX: &str = "/enroll.policy.v1.PolicyService/";

/// The access rule of a gRPC path on the policy server.
pub fn access(path: &str) -> Access {
    if is_public_path(path) {
        return Access::Public;
    }
    let Some(method) = path.strip_prefix(SERVICE_PREFIX) else {
        return Access::Unknown;
    };
    match method {
        "EvaluateEnrollment" | "ValidatePin" | "GetPolicy" | "ListPolicies"
        | "ListPolicyHistory" => Access::Roles(&[Role::Admin, Role::Ops, Role::Service]),
        // A long-lived stream carrying the whole policy set: for the device services only.
        "WatchPolicySet" => Access::Roles(&[Role::Service]),
        "CreatePolicy" | "UpdatePolicy" | "DeletePolicy" => Access::Roles(&[Role::Admin]),
        _ => Access::Unknown,
    }
}

/// Every RPC of the service (for the auth matrix test and docs/api.md).
pub const RPCS: [&str; 9] = [
    "EvaluateEnrollment",
    "ValidatePin",
    "CreatePolicy",
    "UpdatePolicy",
    "DeletePolicy",
    "GetPolicy",
    "ListPolicies",
    "ListPolicyHistory",
    "WatchPolicySet",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_has_a_rule_and_unknown_paths_are_refused() {
        for rpc in RPCS {
            assert!(
                matches!(access(&format!("{SERVICE_PREFIX}{rpc}")), Access::Roles(_)),
                "{rpc}"
            );
        }
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Public);
        assert_eq!(
            access("/enroll.policy.v1.PolicyService/Nope"),
            Access::Unknown
        );
        assert_eq!(access("/other.Service/Call"), Access::Unknown);
    }
}
