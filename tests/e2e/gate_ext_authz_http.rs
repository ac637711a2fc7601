//! The gate as Envoy's HTTP ext_authz server (Istio's `envoyExtAuthzHttp` provider, as in
//! `deploy/gate/istio/`), asked the way Envoy asks: the original path appended to the
//! path prefix (`/forward-auth/<path>?<query>`), the original `Host`, the route's device
//! type in a header the provider sets. The original query is the client's: it never
//! chooses the device type. (Istio itself is not run here; this is the gate's side.)
use enroll_e2e::{Backend, GateSite, IDENTITY_HEADER, PageAnswer, ProxyKind, raw_http};

/// A check as Envoy sends it for `GET <original>` on the site's host.
async fn envoy_check(
    site: &GateSite,
    original: &str,
    device_type: &str,
    extra: &[(&str, &str)],
) -> PageAnswer {
    let gate = site.stack.device().gate_addr.expect("the gate listens");
    let mut request = format!(
        "GET /forward-auth{original} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         X-Forwarded-Proto: http\r\nX-Enroll-Device-Type: {device_type}\r\n{IDENTITY_HEADER}: {}\r\n",
        site.proxy.host(),
        site.jwt("alice"),
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    raw_http(gate, request).await
}

async fn checks_under_the_path_prefix(backend: Backend) {
    let Some(site) = GateSite::start(
        backend,
        ProxyKind::Nginx,
        "gate_ext_authz_http::checks",
        Vec::new(),
    )
    .await
    else {
        return;
    };
    let origin = site.proxy.origin();
    // No session: a navigation goes to the sign-in page, returning to the original URL.
    let navigation = [("Sec-Fetch-Mode", "navigate")];
    let answer = envoy_check(&site, "/reports/q3?sort=desc", "any", &navigation).await;
    assert_eq!(answer.status, 302, "{answer:?}");
    let rd: String =
        url::form_urlencoded::byte_serialize(format!("{origin}/reports/q3?sort=desc").as_bytes())
            .collect();
    assert_eq!(
        answer.header("location"),
        Some(format!("/.enroll-gate/?type=any&rd={rd}").as_str())
    );

    let (device, _, cookie) = site.enrolled_session("alice").await;
    let with_session = [("Cookie", cookie.as_str()), ("Sec-Fetch-Mode", "cors")];
    let allowed = envoy_check(&site, "/reports", "any", &with_session).await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(
        allowed.header("x-enroll-device-id"),
        Some(device.id.as_str())
    );
    // The client's query cannot lower the route's type.
    let refused = envoy_check(
        &site,
        "/admin?device_type=any",
        "enclave_only",
        &with_session,
    )
    .await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_eq!(refused.json()["error"], "DEVICE_TYPE_REQUIRED");
    // A host the gate does not protect.
    let mut request = format!(
        "GET /forward-auth/ HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\
         X-Enroll-Device-Type: any\r\nCookie: {cookie}\r\n{IDENTITY_HEADER}: {}\r\n\r\n",
        site.jwt("alice")
    );
    let gate = site.stack.device().gate_addr.expect("the gate listens");
    let other = raw_http(gate, std::mem::take(&mut request)).await;
    assert_eq!(other.status, 403, "{other:?}");
    assert_eq!(other.json()["error"], "HOST_NOT_PROTECTED");
}

enroll_e2e::on_both_backends!(checks_under_the_path_prefix);
