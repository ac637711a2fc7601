//! Caller authentication: bearer API keys mapped to roles, checked by a tower layer in front
//! of every RPC but health (and reflection, which serves only the public schema).
//!
//! Keys are configured as SHA-256 digests. API keys are 256-bit random strings, so a fast
//! hash is enough (no password stretching needed) and lets every request be checked in
//! microseconds. Lookups go through the digest, so the plaintext is never held or compared.
use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

/// What a caller is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The console backend: everything.
    Admin,
    /// The identity proxy: checks and ceremonies for its users.
    Proxy,
    /// Operators: read-only.
    Ops,
    /// The device service calling the policy service.
    Service,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Proxy, Role::Ops, Role::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Proxy => "proxy",
            Role::Ops => "ops",
            Role::Service => "service",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who the key belongs to; recorded as the actor of audit events.
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the key (`enroll-policy hash-key <key>` prints it).
    pub sha256: String,
}

/// The authenticated caller, put in the request extensions for handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// Hex SHA-256 of a key, as configured.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The key table, indexed by digest.
#[derive(Clone, Default)]
pub struct ApiKeys {
    by_digest: Arc<HashMap<[u8; 32], Caller>>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.by_digest.len())
            .finish()
    }
}

impl ApiKeys {
    /// The key table. `reserved` are the actor names the service writes audit events under
    /// itself (the enrollment page, the FIDO metadata refresh): a key named like one of them
    /// (ASCII case ignored) would make its caller's actions indistinguishable from the
    /// service's own in the audit trail, so it is a start-up error.
    pub fn from_config(keys: &[ApiKeyConfig], reserved: &[&str]) -> Result<Self, String> {
        let mut by_digest = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for key in keys {
            if key.name.trim().is_empty() {
                return Err("auth.api_keys: a key has an empty name".to_owned());
            }
            if let Some(internal) = reserved
                .iter()
                .find(|internal| internal.eq_ignore_ascii_case(key.name.trim()))
            {
                return Err(format!(
                    "auth.api_keys `{}`: `{internal}` is the name this service records its own actions under; give the key another name",
                    key.name.trim()
                ));
            }
            // The name is the caller's identity: audit events and request ids are kept per
            // name, so two keys sharing one could see (and replay) each other's responses.
            if !names.insert(key.name.trim()) {
                return Err(format!(
                    "auth.api_keys `{}`: the name is configured twice; each key needs its own name",
                    key.name.trim()
                ));
            }
            let digest: [u8; 32] = hex::decode(key.sha256.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "auth.api_keys `{}`: sha256 must be 64 hex characters",
                        key.name
                    )
                })?;
            let caller = Caller {
                name: key.name.clone(),
                role: key.role,
            };
            if by_digest.insert(digest, caller).is_some() {
                return Err(format!(
                    "auth.api_keys `{}`: the same key is configured twice",
                    key.name
                ));
            }
        }
        Ok(Self {
            by_digest: Arc::new(by_digest),
        })
    }

    /// Resolves the `authorization` header value (`Bearer <key>`).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, Status> {
        let header = authorization.ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <api key>` metadata")
        })?;
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the `authorization` metadata must be `Bearer <api key>`")
            })?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_digest
            .get(&digest)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown API key"))
    }
}

/// Which roles may call a gRPC method (by its full path, `/package.Service/Method`).
/// `None` means the path is public (health, reflection).
pub type AccessTable = fn(&str) -> Access;

/// The access rule of one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Roles(&'static [Role]),
    /// A path no service serves: refused before any handler runs.
    Unknown,
}

/// Paths that need no key on every server.
pub fn is_public_path(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// Tower layer that authenticates and authorizes every request.
#[derive(Clone)]
pub struct AuthLayer {
    keys: ApiKeys,
    access: AccessTable,
}

impl AuthLayer {
    pub fn new(keys: ApiKeys, access: AccessTable) -> Self {
        Self { keys, access }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            keys: self.keys.clone(),
            access: self.access,
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    keys: ApiKeys,
    access: AccessTable,
}

impl<S> AuthService<S> {
    fn authorize<B>(&self, request: &http::Request<B>) -> Result<Option<Caller>, Status> {
        let path = request.uri().path();
        let roles = match (self.access)(path) {
            Access::Public => return Ok(None),
            Access::Unknown => {
                return Err(Status::new(
                    Code::Unimplemented,
                    format!("unknown method {path}"),
                ));
            }
            Access::Roles(roles) => roles,
        };
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let caller = self.keys.authenticate(authorization)?;
        if !roles.contains(&caller.role) {
            let allowed: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "role `{}` may not call {path} (allowed: {})",
                caller.role,
                allowed.join(", ")
            )));
        }
        Ok(Some(caller))
    }
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self.authorize(&request) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    tracing::Span::current().record("caller", caller.name.as_str());
                    request.extensions_mut().insert(caller);
                }
                // The ready inner service is used for this call; a fresh clone takes its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(status) => {
                tracing::info!(code = ?status.code(), reason = status.message(), "request refused by auth");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The authenticated caller of a request (set by [`AuthLayer`]).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::unauthenticated("no authenticated caller"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::from_config(
            &[ApiKeyConfig {
                name: "console".into(),
                role: Role::Admin,
                sha256: hash_api_key("s3cret"),
            }],
            &[],
        )
        .unwrap()
    }

    #[test]
    fn bearer_key_resolves_to_its_caller() {
        let caller = keys().authenticate(Some("Bearer s3cret")).unwrap();
        assert_eq!(caller.name, "console");
        assert_eq!(caller.role, Role::Admin);
    }

    #[test]
    fn missing_malformed_or_unknown_keys_are_unauthenticated() {
        for header in [None, Some("s3cret"), Some("Bearer "), Some("Bearer nope")] {
            let status = keys().authenticate(header).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{header:?}");
            assert!(!status.message().contains("s3cret"));
        }
    }

    #[test]
    fn config_rejects_bad_digests_and_duplicates() {
        let bad = ApiKeyConfig {
            name: "x".into(),
            role: Role::Ops,
            sha256: "abc".into(),
        };
        assert!(
            ApiKeys::from_config(&[bad], &[])
                .unwrap_err()
                .contains("64 hex")
        );
        let key = ApiKeyConfig {
            name: "x".into(),
            role: Role::Ops,
            sha256: hash_api_key("k"),
        };
        assert!(
            ApiKeys::from_config(&[key.clone(), key.clone()], &[])
                .unwrap_err()
                .contains("twice")
        );
        let same_name = ApiKeyConfig {
            sha256: hash_api_key("another key"),
            ..key.clone()
        };
        let error = ApiKeys::from_config(&[key.clone(), same_name], &[]).unwrap_err();
        assert!(
            error.contains("`x`: the name is configured twice"),
            "{error}"
        );
        let same_digest = ApiKeyConfig {
            name: "y".into(),
            ..key.clone()
        };
        let error = ApiKeys::from_config(&[key, same_digest], &[]).unwrap_err();
        assert!(
            error.contains("the same key is configured twice"),
            "{error}"
        );
    }

    #[test]
    fn a_key_named_like_the_service_itself_is_refused() {
        let named = |name: &str| ApiKeyConfig {
            name: name.into(),
            role: Role::Admin,
            sha256: hash_api_key(name),
        };
        let reserved = ["enrollment-page", "fido-metadata"];
        for name in ["enrollment-page", " Fido-Metadata "] {
            let error = ApiKeys::from_config(&[named(name)], &reserved).unwrap_err();
            assert!(
                error.contains("the name this service records its own actions under"),
                "{error}"
            );
        }
        assert!(ApiKeys::from_config(&[named("enrollment-page-2")], &reserved).is_ok());
    }
}
