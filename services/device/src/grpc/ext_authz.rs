//! Envoy's external authorization over gRPC (`envoy.service.auth.v3.Authorization/Check`,
//! the `ext_authz` HTTP filter with `grpc_service`), served on the device service's gRPC port
//! when the gate is on. The check request becomes a [`ProtectedRequest`] and the gate's
//! [`Verdict`] a `CheckResponse` in the fields Envoy applies:
//!
//! - allowed: status OK; the identity headers set on the request to the app (overwriting
//!   client-sent copies), the `Cookie` header without the gate's own cookie (removed when
//!   nothing else is left), other client-sent `x-enroll-*` headers removed, and a refreshed
//!   session cookie added to the response to the client;
//! - refused: a denied response Envoy sends to the client as is: 401 (no identity, or no
//!   device session for a non-navigation), 302 to the sign-in page (a browser navigation
//!   without a device session), 403 (a route without a valid device type, a host not
//!   protected), 503 (the gate cannot decide now), each with `x-enroll-gate-error`.
//!
//! A refusal is a *denied* response (never `error_response`): Envoy's `failure_mode_allow`
//! applies to errors only, so a gate that cannot decide stays closed whatever it says.
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, address};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    attribute_context,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode as HttpCode};
use envoy_types::pb::google::rpc;
use http::{HeaderMap, HeaderName, header};
use tonic::{Code, Request, Response, Status};

use crate::gate::hosts::{OriginalUrl, is_navigation};
use crate::gate::{
    DEVICE_ID_HEADER, DEVICE_TYPE_HEADER, Gate, ProtectedRequest, REALM_HEADER, RefusalAnswer,
    USER_HEADER, Verdict,
};
use crate::web::gate::ERROR_HEADER;

/// The paths this service answers (counted by name in the request metrics).
pub const METHODS: &[&str] = &[super::access::EXT_AUTHZ_CHECK];

/// A check carries the request's headers only (the shipped configuration sends no body);
/// Envoy's own limit on a request's headers is 60 KiB by default.
pub const MAX_CHECK_BYTES: usize = 1024 * 1024;

/// The route's required device type among the context extensions Envoy's per-route
/// `check_settings` set.
pub const DEVICE_TYPE_EXTENSION: &str = "device_type";

/// The identity headers the gate sets on an allowed request; every other client-sent
/// `x-enroll-*` header is removed before the request reaches the app.
const IDENTITY_HEADERS: [&str; 4] = [
    USER_HEADER,
    REALM_HEADER,
    DEVICE_ID_HEADER,
    DEVICE_TYPE_HEADER,
];
const GATE_HEADER_PREFIX: &str = "x-enroll-";

/// The `Authorization` service on the gate.
pub struct ExtAuthz {
    gate: Arc<Gate>,
}

impl ExtAuthz {
    /// The gRPC service, with the request size capped for checks.
    pub fn server(gate: Arc<Gate>) -> AuthorizationServer<Self> {
        AuthorizationServer::new(Self { gate }).max_decoding_message_size(MAX_CHECK_BYTES)
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        // A plain-header identity is believed only from a trusted proxy: the peer is the
        // connection Envoy calls over, never an address the check request states. Without
        // one (no TCP connection) nothing is trusted.
        let peer = request
            .remote_addr()
            .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |addr| {
                addr.ip().to_canonical()
            });
        let asked = Asked::read(request.get_ref(), self.gate.device_type_header());
        let protected = ProtectedRequest {
            peer,
            client_ip: asked.client_ip,
            headers: &asked.headers,
            url: asked.url.clone(),
            device_type: asked.device_type.as_deref(),
        };
        // `check` audits and counts the decision. No timeout of its own: Envoy's
        // `grpc_service.timeout` ends the call first, and with `failure_mode_allow: false`
        // that refuses the request.
        let verdict = self.gate.check(&protected).await;
        let app_cookies = self.gate.sessions().strip(
            asked
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|value| value.to_str().ok()),
        );
        Ok(Response::new(answer(verdict, &asked.headers, &app_cookies)))
    }
}

/// What a check request asks, read as the HTTP edge reads a forward-auth request.
#[derive(Debug, Default)]
struct Asked {
    headers: HeaderMap,
    url: Option<OriginalUrl>,
    device_type: Option<String>,
    client_ip: Option<IpAddr>,
}

impl Asked {
    fn read(check: &CheckRequest, device_type_header: &HeaderName) -> Self {
        let Some(attributes) = check.attributes.as_ref() else {
            return Self::default();
        };
        let http = attributes
            .request
            .as_ref()
            .and_then(|request| request.http.as_ref());
        let headers = http.map(request_headers).unwrap_or_default();
        // The route's context extension first: Envoy's configuration sets it per route,
        // while a header reaches the check as the client sent it unless a filter in front
        // of ext_authz strips it (the shipped configuration does).
        let device_type = attributes
            .context_extensions
            .get(DEVICE_TYPE_EXTENSION)
            .map(|text| text.trim())
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                headers
                    .get(device_type_header)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            });
        Self {
            url: http.and_then(|http| original_url(http, &headers)),
            device_type,
            client_ip: client_ip(attributes),
            headers,
        }
    }
}

/// The original request's headers: the `headers` map (names lowercased, repeated headers
/// merged), or `header_map` when Envoy sends raw headers (`encode_raw_headers`). Pseudo
/// headers (`:path`, `:authority`) and anything that is no valid header are left out.
fn request_headers(http: &attribute_context::HttpRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &[u8]| {
        if name.starts_with(':') {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    };
    for (name, value) in &http.headers {
        add(name, value.as_bytes());
    }
    if let Some(raw) = &http.header_map {
        for header in &raw.headers {
            let value = if header.raw_value.is_empty() {
                header.value.as_bytes()
            } else {
                &header.raw_value
            };
            add(&header.key, value);
        }
    }
    headers
}

/// The original URL from the check's scheme, host and path (the request target with its
/// query), falling back to the pseudo headers.
fn original_url(http: &attribute_context::HttpRequest, headers: &HeaderMap) -> Option<OriginalUrl> {
    let pseudo = |name: &str| {
        http.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    };
    let pick = |field: &str, name: &str| {
        let text = if field.is_empty() {
            pseudo(name)
        } else {
            field
        };
        text.trim().to_owned()
    };
    let scheme = match pick(&http.scheme, ":scheme") {
        scheme if scheme.is_empty() => "https".to_owned(),
        scheme => scheme,
    };
    let mut host = pick(&http.host, ":authority");
    if host.is_empty() {
        host = headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .trim()
            .to_owned();
    }
    let path = pick(&http.path, ":path");
    if host.is_empty() || !path.starts_with('/') || !matches!(scheme.as_str(), "http" | "https") {
        return None;
    }
    OriginalUrl::parse(&format!("{scheme}://{host}{path}"))
}

/// The end user's address as Envoy saw it (the downstream peer, or what its
/// `xff_num_trusted_hops` made of `X-Forwarded-For`).
fn client_ip(attributes: &AttributeContext) -> Option<IpAddr> {
    let address = attributes
        .source
        .as_ref()?
        .address
        .as_ref()?
        .address
        .as_ref()?;
    match address {
        address::Address::SocketAddress(socket) => socket
            .address
            .trim()
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical()),
        _ => None,
    }
}

/// The check's answer for `verdict`, as Envoy applies it to the request with `headers`;
/// `app_cookies` is its `Cookie` header without the gate's cookie.
fn answer(verdict: Verdict, headers: &HeaderMap, app_cookies: &str) -> CheckResponse {
    let code = verdict.code();
    match verdict {
        Verdict::Allow(allowed) => {
            let mut upstream = vec![
                overwrite(USER_HEADER, &allowed.user),
                overwrite(REALM_HEADER, &allowed.realm),
                overwrite(DEVICE_ID_HEADER, &allowed.device_id),
                overwrite(DEVICE_TYPE_HEADER, allowed.device_type),
            ];
            let mut remove: Vec<String> = headers
                .keys()
                .map(HeaderName::as_str)
                .filter(|name| {
                    name.starts_with(GATE_HEADER_PREFIX) && !IDENTITY_HEADERS.contains(name)
                })
                .map(str::to_owned)
                .collect();
            // Removed even when the request seemed to carry none: a Cookie header that
            // could not be read must not reach the app with the gate's cookie in it.
            if app_cookies.is_empty() {
                remove.push(header::COOKIE.as_str().to_owned());
            } else {
                upstream.push(overwrite(header::COOKIE.as_str(), app_cookies));
            }
            let downstream = allowed
                .set_cookie
                .iter()
                .map(|cookie| append(header::SET_COOKIE.as_str(), cookie))
                .collect();
            CheckResponse {
                status: Some(rpc_status(Code::Ok, code)),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: upstream,
                    headers_to_remove: remove,
                    response_headers_to_add: downstream,
                    ..Default::default()
                })),
                dynamic_metadata: None,
            }
        }
        Verdict::SignIn(sign_in) if is_navigation(headers) => {
            let mut extra = cleared(sign_in.clear_cookie.as_deref());
            extra.push(overwrite(header::LOCATION.as_str(), &sign_in.location));
            denied(Code::Unauthenticated, HttpCode::Found, code, None, extra)
        }
        refused => {
            let extra = match &refused {
                Verdict::SignIn(sign_in) => cleared(sign_in.clear_cookie.as_deref()),
                _ => Vec::new(),
            };
            let grpc = match &refused {
                Verdict::Forbidden { .. } => Code::PermissionDenied,
                Verdict::Unavailable { .. } => Code::Unavailable,
                _ => Code::Unauthenticated,
            };
            let Some(RefusalAnswer { status, body }) = refused.refusal() else {
                return denied(grpc, HttpCode::Forbidden, code, None, extra);
            };
            let status = match status {
                401 => HttpCode::Unauthorized,
                503 => HttpCode::ServiceUnavailable,
                _ => HttpCode::Forbidden,
            };
            denied(grpc, status, code, Some(body), extra)
        }
    }
}

/// The `Set-Cookie` that deletes a dead session's cookie, when there is one.
fn cleared(clear_cookie: Option<&str>) -> Vec<HeaderValueOption> {
    clear_cookie
        .map(|cookie| append(header::SET_COOKIE.as_str(), cookie))
        .into_iter()
        .collect()
}

/// A denied response: Envoy sends `status` with these headers and body to the client.
fn denied(
    grpc: Code,
    status: HttpCode,
    code: &str,
    body: Option<String>,
    mut headers: Vec<HeaderValueOption>,
) -> CheckResponse {
    headers.push(overwrite(ERROR_HEADER, code));
    // The answer is tied to this request's identity and session: no cache keeps it.
    headers.push(overwrite(header::CACHE_CONTROL.as_str(), "no-store"));
    if body.is_some() {
        headers.push(overwrite(header::CONTENT_TYPE.as_str(), "application/json"));
        headers.push(overwrite(
            header::X_CONTENT_TYPE_OPTIONS.as_str(),
            "nosniff",
        ));
    }
    if status == HttpCode::Unauthorized {
        headers.push(overwrite(header::WWW_AUTHENTICATE.as_str(), "Enroll-Gate"));
    }
    CheckResponse {
        status: Some(rpc_status(grpc, code)),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers,
            body: body.unwrap_or_default(),
        })),
        dynamic_metadata: None,
    }
}

/// The check's `google.rpc.Status`: Envoy allows on OK and denies on anything else; the
/// message (the verdict's code) shows in Envoy's trace logs only.
fn rpc_status(code: Code, message: &str) -> rpc::Status {
    rpc::Status {
        code: code as i32,
        message: message.to_owned(),
        details: Vec::new(),
    }
}

/// A header that replaces any of the same name. `append_action` rather than the deprecated
/// `append`: Envoy reads the action when `append` is unset, and versions before the action
/// existed read an unset `append` as false, which also overwrites.
fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    header_option(name, value, HeaderAppendAction::OverwriteIfExistsOrAdd)
}

/// A header added next to any of the same name (a `Set-Cookie` beside the app's own).
fn append(name: &str, value: &str) -> HeaderValueOption {
    header_option(name, value, HeaderAppendAction::AppendIfExistsOrAdd)
}

fn header_option(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_owned(),
            value: value.to_owned(),
            raw_value: Vec::new(),
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};

    use super::*;
    use crate::gate::{Allowed, SignIn};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn header_pairs(options: &[HeaderValueOption]) -> Vec<(String, String, i32)> {
        options
            .iter()
            .map(|option| {
                let header = option.header.as_ref().unwrap();
                (
                    header.key.clone(),
                    header.value.clone(),
                    option.append_action,
                )
            })
            .collect()
    }

    fn find<'a>(options: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
        options
            .iter()
            .filter_map(|option| option.header.as_ref())
            .find(|header| header.key == name)
            .map(|header| header.value.as_str())
    }

    fn allowed(set_cookie: Option<&str>) -> Verdict {
        Verdict::Allow(Allowed {
            realm: "corp".into(),
            user: "alice".into(),
            device_id: "dev-1".into(),
            device_type: "enclave_only",
            set_cookie: set_cookie.map(str::to_owned),
        })
    }

    fn sign_in(clear: bool) -> Verdict {
        Verdict::SignIn(SignIn {
            code: "DEVICE_SESSION_REQUIRED",
            reason: "sign in with an enrolled any device".into(),
            location: "/.enroll-gate/?type=any&rd=https%3A%2F%2Fapp.example.com%2F".into(),
            clear_cookie: clear.then(|| "__Host-enroll-gate=; Max-Age=0".to_owned()),
        })
    }

    fn denied_of(response: &CheckResponse) -> &DeniedHttpResponse {
        match response.http_response.as_ref() {
            Some(HttpResponse::DeniedResponse(denied)) => denied,
            other => panic!("not denied: {other:?}"),
        }
    }

    #[test]
    fn an_allowed_request_gets_the_identity_and_the_app_cookies_only() {
        let sent = headers(&[
            ("cookie", "a=1; __Host-enroll-gate=v1.s1.x"),
            ("x-enroll-user", "mallory"),
            ("x-enroll-cookie", "forged"),
            ("x-enroll-whatever", "x"),
        ]);
        let response = answer(allowed(None), &sent, "a=1");
        assert_eq!(response.status.as_ref().unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!("not OK");
        };
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        assert_eq!(
            header_pairs(&ok.headers),
            [
                ("x-enroll-user".into(), "alice".into(), overwrite),
                ("x-enroll-realm".into(), "corp".into(), overwrite),
                ("x-enroll-device-id".into(), "dev-1".into(), overwrite),
                (
                    "x-enroll-device-type".into(),
                    "enclave_only".into(),
                    overwrite
                ),
                ("cookie".into(), "a=1".into(), overwrite),
            ]
        );
        let mut removed = ok.headers_to_remove.clone();
        removed.sort();
        // The identity headers are overwritten, never removed (Envoy would drop ours).
        assert_eq!(removed, ["x-enroll-cookie", "x-enroll-whatever"]);
        assert!(ok.response_headers_to_add.is_empty());
    }

    #[test]
    fn without_other_cookies_the_cookie_header_is_removed_and_a_refresh_is_added() {
        let sent = headers(&[("cookie", "__Host-enroll-gate=v1.s1.x")]);
        let response = answer(allowed(Some("__Host-enroll-gate=new")), &sent, "");
        let Some(HttpResponse::OkResponse(ok)) = response.http_response else {
            panic!("not OK");
        };
        assert_eq!(find(&ok.headers, "cookie"), None);
        assert_eq!(ok.headers_to_remove, ["cookie"]);
        assert_eq!(
            header_pairs(&ok.response_headers_to_add),
            [(
                "set-cookie".into(),
                "__Host-enroll-gate=new".into(),
                // Beside the app's own cookies, never instead of them.
                HeaderAppendAction::AppendIfExistsOrAdd as i32
            )]
        );
    }

    #[test]
    fn no_identity_is_401_with_nothing_more() {
        let response = answer(Verdict::Unauthenticated, &HeaderMap::new(), "");
        assert_eq!(
            response.status.as_ref().unwrap().code,
            Code::Unauthenticated as i32
        );
        let denied = denied_of(&response);
        assert_eq!(denied.status.as_ref().unwrap().code, 401);
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(body["error"], "UNAUTHENTICATED");
        assert!(body.get("signin").is_none());
        assert_eq!(find(&denied.headers, ERROR_HEADER), Some("UNAUTHENTICATED"));
        assert_eq!(
            find(&denied.headers, "www-authenticate"),
            Some("Enroll-Gate")
        );
        assert_eq!(
            find(&denied.headers, "content-type"),
            Some("application/json")
        );
    }

    #[test]
    fn a_navigation_without_a_session_is_redirected_anything_else_told_where() {
        let navigation = headers(&[("sec-fetch-mode", "navigate")]);
        let response = answer(sign_in(true), &navigation, "");
        let denied = denied_of(&response);
        assert_eq!(denied.status.as_ref().unwrap().code, 302);
        assert!(denied.body.is_empty());
        assert_eq!(
            find(&denied.headers, "location"),
            Some("/.enroll-gate/?type=any&rd=https%3A%2F%2Fapp.example.com%2F")
        );
        assert_eq!(
            find(&denied.headers, "set-cookie"),
            Some("__Host-enroll-gate=; Max-Age=0")
        );
        assert_eq!(
            find(&denied.headers, ERROR_HEADER),
            Some("DEVICE_SESSION_REQUIRED")
        );

        let fetch = headers(&[("sec-fetch-mode", "cors")]);
        let response = answer(sign_in(false), &fetch, "");
        let denied = denied_of(&response);
        assert_eq!(denied.status.as_ref().unwrap().code, 401);
        assert_eq!(find(&denied.headers, "location"), None);
        assert_eq!(find(&denied.headers, "set-cookie"), None);
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(body["error"], "DEVICE_SESSION_REQUIRED");
        assert_eq!(
            body["signin"],
            "/.enroll-gate/?type=any&rd=https%3A%2F%2Fapp.example.com%2F"
        );
    }

    #[test]
    fn refusals_and_outages_are_denied_never_errors() {
        let forbidden = Verdict::Forbidden {
            code: "DEVICE_TYPE_MISSING",
            reason: "no type".into(),
        };
        let response = answer(forbidden, &HeaderMap::new(), "");
        assert_eq!(
            response.status.as_ref().unwrap().code,
            Code::PermissionDenied as i32
        );
        let denied = denied_of(&response);
        assert_eq!(denied.status.as_ref().unwrap().code, 403);
        assert_eq!(
            find(&denied.headers, ERROR_HEADER),
            Some("DEVICE_TYPE_MISSING")
        );
        assert_eq!(find(&denied.headers, "www-authenticate"), None);

        let down = Verdict::Unavailable {
            reason: "later".into(),
        };
        let response = answer(down, &HeaderMap::new(), "");
        assert_eq!(
            response.status.as_ref().unwrap().code,
            Code::Unavailable as i32
        );
        // Denied, not `error_response`: `failure_mode_allow` must not open the door.
        let denied = denied_of(&response);
        assert_eq!(denied.status.as_ref().unwrap().code, 503);
        let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(body["error"], "GATE_UNAVAILABLE");
    }

    fn check_request(
        http: attribute_context::HttpRequest,
        extensions: &[(&str, &str)],
        source: &str,
    ) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(attribute_context::Peer {
                    address: Some(Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: source.into(),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                }),
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions: extensions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
        }
    }

    fn http_request(pairs: &[(&str, &str)]) -> attribute_context::HttpRequest {
        attribute_context::HttpRequest {
            method: "GET".into(),
            scheme: "https".into(),
            host: "app.example.com".into(),
            path: "/a/b?c=d".into(),
            headers: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn a_check_request_reads_as_envoy_sends_it() {
        let type_header = HeaderName::from_static("x-enroll-device-type");
        let request = check_request(
            http_request(&[
                (":authority", "app.example.com"),
                (":path", "/a/b?c=d"),
                ("cookie", "a=1"),
                ("x-enroll-device-type", "any"),
                ("bad header", "x"),
            ]),
            &[("device_type", "enclave_only")],
            "::ffff:192.0.2.7",
        );
        let asked = Asked::read(&request, &type_header);
        assert_eq!(
            asked.url.as_ref().map(OriginalUrl::full).as_deref(),
            Some("https://app.example.com/a/b?c=d")
        );
        // The route's extension wins over a header the client may have sent.
        assert_eq!(asked.device_type.as_deref(), Some("enclave_only"));
        assert_eq!(asked.client_ip, Some(IpAddr::from([192, 0, 2, 7])));
        assert_eq!(asked.headers.get("cookie").unwrap(), "a=1");
        assert_eq!(
            asked.headers.len(),
            2,
            "pseudo and invalid headers left out"
        );

        let request = check_request(
            http_request(&[("x-enroll-device-type", "any")]),
            &[],
            "not an address",
        );
        let asked = Asked::read(&request, &type_header);
        assert_eq!(asked.device_type.as_deref(), Some("any"));
        assert_eq!(asked.client_ip, None);

        let mut raw = http_request(&[]);
        raw.header_map = Some(envoy_types::pb::envoy::config::core::v3::HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "cookie".into(),
                    raw_value: b"a=1".to_vec(),
                    ..Default::default()
                },
                HeaderValue {
                    key: "cookie".into(),
                    raw_value: b"b=2".to_vec(),
                    ..Default::default()
                },
            ],
        });
        raw.path = "*".into();
        let asked = Asked::read(&check_request(raw, &[], ""), &type_header);
        assert_eq!(asked.headers.get_all("cookie").iter().count(), 2);
        assert_eq!(asked.url, None, "no absolute path, no URL");
        assert_eq!(asked.device_type, None);

        let empty = Asked::read(&CheckRequest::default(), &type_header);
        assert!(empty.headers.is_empty() && empty.url.is_none());
    }
}
