//! The gate behind a real nginx running the shipped `deploy/gate/nginx/enroll-gate.conf`,
//! over plain HTTP (the browser flows are in `gate_nginx_browser`): every identity that is
//! not valid is 401; cookies that are no session are refused with 401 and deleted, never a
//! 5xx; without a session a fetch gets 401 JSON and a navigation the sign-in page; the app
//! gets the gate's identity and the cookies without the gate's, never a client's identity
//! headers; an enclave_only route refuses an `any` device; a WebSocket is checked when it
//! opens; a return URL on another host is refused; a refreshed session reaches the
//! browser, not the app. `gate_caddy` runs the same checks behind Caddy.
use enroll_e2e::{Backend, Echo, GateSite, IDENTITY_HEADER, JwtIssuer, ProxyKind, clears_session};
use serde_json::json;

/// Headers of a browser navigation, and of a script's fetch.
const NAVIGATE: &[(&str, &str)] = &[
    ("Accept", "text/html,application/xhtml+xml"),
    ("Sec-Fetch-Mode", "navigate"),
];
const FETCH: &[(&str, &str)] = &[("Accept", "application/json"), ("Sec-Fetch-Mode", "cors")];

async fn site(backend: Backend, test: &str) -> Option<GateSite> {
    GateSite::start(backend, ProxyKind::Nginx, test, Vec::new()).await
}

/// `base` plus the identity header (when `jwt` is given) and `more`.
fn with<'a>(
    base: &[(&'a str, &'a str)],
    jwt: Option<&'a str>,
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut headers = base.to_vec();
    if let Some(jwt) = jwt {
        headers.push((IDENTITY_HEADER, jwt));
    }
    headers.extend_from_slice(more);
    headers
}

pub(crate) async fn refuses_identities_that_are_not_valid(site: &GateSite) {
    let issuer: &JwtIssuer = &site.issuer;
    let now = chrono::Utc::now().timestamp();
    let cases = [
        ("no JWT", None),
        ("forged", Some(issuer.forged_token("acme", "alice"))),
        (
            "expired",
            Some(issuer.token_with("acme", "alice", |claims| {
                claims["iat"] = json!(now - 900);
                claims["nbf"] = json!(now - 900);
                claims["exp"] = json!(now - 600);
            })),
        ),
        (
            "wrong audience",
            Some(issuer.token_with("acme", "alice", |claims| {
                claims["aud"] = json!("another-app");
            })),
        ),
        ("alg none", Some(issuer.unsigned_token("acme", "alice"))),
        (
            "HMAC signed with the public key",
            Some(issuer.hmac_with_public_key("acme", "alice")),
        ),
        (
            "unknown kid",
            Some(issuer.token_with_unknown_key("acme", "alice")),
        ),
    ];
    for (case, jwt) in &cases {
        for (kind, base) in [("navigation", NAVIGATE), ("fetch", FETCH)] {
            let answer = site
                .proxy
                .get("/reports?q=1", &with(base, jwt.as_deref(), &[]))
                .await;
            assert_eq!(answer.status, 401, "{case}, {kind}: {answer:?}");
            assert_eq!(answer.json()["error"], "UNAUTHENTICATED", "{case}, {kind}");
            assert_eq!(
                answer.header("x-enroll-gate-error"),
                Some("UNAUTHENTICATED"),
                "{case}, {kind}"
            );
            assert!(answer.header("location").is_none(), "{case}, {kind}");
        }
        // The page's API says no more.
        let status = site
            .proxy
            .page_api(
                "status",
                jwt.as_deref().unwrap_or(""),
                &json!({"type": "any"}),
            )
            .await;
        assert_eq!(status.status, 401, "{case}: {status:?}");
    }
    // The same request with a valid identity gets past it (no session yet).
    let answer = site
        .proxy
        .get("/reports?q=1", &with(FETCH, Some(&site.jwt("alice")), &[]))
        .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.json()["error"], "DEVICE_SESSION_REQUIRED");
    assert!(
        !site.proxy.log().contains(&site.jwt("alice")),
        "nginx logged no JWT"
    );
}

pub(crate) async fn refuses_cookies_that_are_no_session(site: &GateSite) {
    let (_, _, alice_cookie) = site.enrolled_session("alice").await;
    let (_, _, bob_cookie) = site.enrolled_session("bob").await;
    let alice = site.jwt("alice");
    let name = alice_cookie
        .split('=')
        .next()
        .unwrap_or_default()
        .to_owned();
    let value = alice_cookie
        .split_once('=')
        .map(|(_, v)| v)
        .unwrap_or_default();
    // A sealed value with one character changed: the tag no longer matches.
    let tampered = {
        let mut chars: Vec<char> = value.chars().collect();
        let last = chars.len() - 2;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let cases = [
        (
            "garbage",
            format!("{name}=garbage"),
            "DEVICE_SESSION_INVALID",
        ),
        (
            "oversized",
            format!("{name}=v1.s1.{}", "A".repeat(4000)),
            "DEVICE_SESSION_INVALID",
        ),
        (
            "unknown key",
            format!("{name}=v1.nokey.AAAA"),
            "DEVICE_SESSION_INVALID",
        ),
        (
            "tampered",
            format!("{name}={tampered}"),
            "DEVICE_SESSION_INVALID",
        ),
        (
            "another user's",
            bob_cookie.clone(),
            "DEVICE_SESSION_OTHER_USER",
        ),
    ];
    for (case, cookie, code) in &cases {
        let answer = site
            .proxy
            .get("/", &with(FETCH, Some(&alice), &[("Cookie", cookie)]))
            .await;
        assert_eq!(answer.status, 401, "{case}: {answer:?}");
        assert_eq!(answer.json()["error"], *code, "{case}");
        assert!(
            clears_session(&answer),
            "{case}: the cookie is deleted: {answer:?}"
        );
        let navigation = site
            .proxy
            .get("/", &with(NAVIGATE, Some(&alice), &[("Cookie", cookie)]))
            .await;
        assert_eq!(navigation.status, 302, "{case}: {navigation:?}");
        assert!(clears_session(&navigation), "{case}: {navigation:?}");
    }
    // A Cookie header past nginx's header buffers: nginx's own 400; never a 5xx.
    let huge = format!("{name}={}", "A".repeat(20_000));
    let answer = site
        .proxy
        .get("/", &with(FETCH, Some(&alice), &[("Cookie", &huge)]))
        .await;
    assert!(
        (400..500).contains(&answer.status),
        "a huge cookie: {answer:?}"
    );
    // A control character the gate's HTTP parser refuses (and Caddy's): 400, never a 500
    // (nginx's answer to a check that is neither 2xx, 401 nor 403).
    let control = format!("{alice_cookie}; other=\u{7f}x");
    let answer = site
        .proxy
        .get("/", &with(FETCH, Some(&alice), &[("Cookie", &control)]))
        .await;
    assert_eq!(answer.status, 400, "a control character: {answer:?}");
    // The real session still works, also next to cookies of other names that are junk.
    let mixed = format!("junk=%%%; {alice_cookie}; other=\"q\"");
    let answer = site
        .proxy
        .get("/", &with(FETCH, Some(&alice), &[("Cookie", &mixed)]))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        Echo::parse(&answer.body).header("cookie").as_deref(),
        Some("junk=%%%; other=\"q\"")
    );
}

pub(crate) async fn answers_without_a_session(site: &GateSite) {
    let jwt = site.jwt("alice");
    let origin = site.proxy.origin();
    let signin = |path: &str, kind: &str| {
        let original = format!("{origin}{path}");
        let encoded: String = url::form_urlencoded::byte_serialize(original.as_bytes()).collect();
        format!("/.enroll-gate/?type={kind}&rd={encoded}")
    };
    let answer = site
        .proxy
        .get("/reports/q3?sort=desc", &with(FETCH, Some(&jwt), &[]))
        .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.header("location").is_none());
    let body = answer.json();
    assert_eq!(body["error"], "DEVICE_SESSION_REQUIRED");
    assert_eq!(body["signin"], signin("/reports/q3?sort=desc", "any"));
    assert_eq!(answer.header("www-authenticate"), Some("Enroll-Gate"));

    // XHR and a plain API client: JSON, even when they accept HTML.
    for extra in [
        vec![
            ("Accept", "text/html"),
            ("X-Requested-With", "XMLHttpRequest"),
        ],
        vec![("Accept", "*/*")],
    ] {
        let answer = site
            .proxy
            .get("/api/items", &with(&extra, Some(&jwt), &[]))
            .await;
        assert_eq!(answer.status, 401, "{extra:?}: {answer:?}");
        assert_eq!(answer.json()["error"], "DEVICE_SESSION_REQUIRED");
    }

    // A navigation, a form POST too (its body is not sent to the gate), goes to the page.
    let answer = site
        .proxy
        .get("/reports/q3?sort=desc", &with(NAVIGATE, Some(&jwt), &[]))
        .await;
    assert_eq!(answer.status, 302, "{answer:?}");
    assert_eq!(
        answer.header("location"),
        Some(signin("/reports/q3?sort=desc", "any").as_str())
    );
    let posted = site
        .proxy
        .request(
            "POST",
            "/forms/submit",
            &with(NAVIGATE, Some(&jwt), &[]),
            Some(r#"{"field":"value"}"#),
        )
        .await;
    assert_eq!(posted.status, 302, "{posted:?}");
    // The enclave_only route names its type.
    let answer = site
        .proxy
        .get("/admin/users", &with(NAVIGATE, Some(&jwt), &[]))
        .await;
    assert_eq!(answer.status, 302, "{answer:?}");
    assert_eq!(
        answer.header("location"),
        Some(signin("/admin/users", "enclave_only").as_str())
    );

    // The page itself is not behind the check; its bare prefix redirects to it.
    let page = site.proxy.get("/.enroll-gate/?type=any", NAVIGATE).await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("Sign in with your device"));
    let bare = site.proxy.get("/.enroll-gate", NAVIGATE).await;
    assert!(matches!(bare.status, 301 | 302), "{bare:?}");
    let location = bare.header("location").unwrap_or_default();
    assert!(
        location == "/.enroll-gate/" || location == format!("{origin}/.enroll-gate/"),
        "{bare:?}"
    );
    if site.kind == ProxyKind::Nginx {
        // Behind a proxy that terminated TLS, the browser's scheme; nothing else.
        for (sent, seen) in [("https", "https"), ("ftp", "http")] {
            let answer = site
                .proxy
                .get(
                    "/reports",
                    &with(NAVIGATE, Some(&jwt), &[("X-Forwarded-Proto", sent)]),
                )
                .await;
            let location = answer.header("location").unwrap_or_default();
            let rd = format!(
                "rd={seen}%3A%2F%2F{}",
                site.proxy.host().replace(':', "%3A")
            );
            assert!(location.contains(&rd), "{sent}: {answer:?}");
        }
        // A host the gate does not protect: the gate's 403 JSON, passed on by error_page.
        let request = format!(
            "GET /reports HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Accept: application/json\r\n{IDENTITY_HEADER}: {jwt}\r\n\r\n",
            site.proxy.port
        );
        let other = enroll_e2e::raw_http(site.proxy.addr(), request).await;
        assert_eq!(other.status, 403, "{other:?}");
        assert_eq!(other.json()["error"], "HOST_NOT_PROTECTED", "{other:?}");
        // The check's internal location is not reachable from outside.
        let internal = site
            .proxy
            .get("/.enroll-gate-auth", &with(FETCH, Some(&jwt), &[]))
            .await;
        assert_eq!(internal.status, 404, "{internal:?}");
    }
}

pub(crate) async fn gives_the_app_only_the_gates_identity(site: &GateSite) {
    let (device, _, cookie) = site.enrolled_session("alice").await;
    let session_value = cookie
        .split_once('=')
        .map(|(_, v)| v)
        .unwrap_or_default()
        .to_owned();
    let jwt = site.jwt("alice");
    let cookies = format!("theme=dark; {cookie}; lang=en");
    let spoofed = [
        ("Cookie", cookies.as_str()),
        ("X-Forwarded-User", "mallory"),
        ("X-Enroll-User", "mallory"),
        ("X-Enroll-Realm", "evilcorp"),
        ("X-Enroll-Device-Id", "forged-device"),
        ("X-Enroll-Device-Type", "enclave_only"),
        ("X-Enroll-Cookie", "stolen=1"),
        ("Remote-User", "mallory"),
        ("X-Auth-Request-User", "mallory"),
        ("X-Original-URL", "http://evil.example/"),
    ];
    let answer = site
        .proxy
        .get("/app/page?x=1", &with(FETCH, Some(&jwt), &spoofed))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // No session refresh is due: no Set-Cookie, not even an empty one.
    assert!(answer.header("set-cookie").is_none(), "{answer:?}");
    let echo = Echo::parse(&answer.body);
    assert_eq!(echo.path(), "/app/page?x=1");
    assert_eq!(echo.header("x-enroll-user").as_deref(), Some("alice"));
    assert_eq!(echo.header("x-enroll-realm").as_deref(), Some("acme"));
    assert_eq!(echo.header("x-enroll-device-id"), Some(device.id.clone()));
    assert_eq!(echo.header("x-enroll-device-type").as_deref(), Some("any"));
    assert_eq!(
        echo.header("cookie").as_deref(),
        Some("theme=dark; lang=en")
    );
    for absent in [
        "x-forwarded-user",
        "x-enroll-cookie",
        "remote-user",
        "x-auth-request-user",
        "x-original-url",
    ] {
        assert!(
            echo.headers(absent).is_empty(),
            "{absent} reached the app: {echo:?}"
        );
    }
    let everything = echo.text();
    for secret in [
        session_value.as_str(),
        "mallory",
        "evilcorp",
        "forged-device",
        "stolen",
    ] {
        assert!(
            !everything.contains(secret),
            "`{secret}` reached the app: {everything}"
        );
    }

    // A quarter of the idle lifetime later the session is re-sealed: the browser gets the
    // new cookie, the app does not.
    site.stack
        .clock()
        .advance(std::time::Duration::from_secs(20 * 60));
    let answer = site
        .proxy
        .get(
            "/app/page",
            &with(FETCH, Some(&jwt), &[("Cookie", &cookie)]),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let refreshed = enroll_e2e::session_cookie(&answer).expect("a refreshed session cookie");
    assert_ne!(refreshed, cookie);
    let echo = Echo::parse(&answer.body);
    assert!(echo.headers("set-cookie").is_empty(), "{echo:?}");
    // No cookies but the gate's: none for the app (Caddy sends an empty header).
    assert!(
        echo.headers("cookie").iter().all(String::is_empty),
        "{echo:?}"
    );
    assert!(!echo.text().contains("enroll-gate"), "{echo:?}");
    let again = site
        .proxy
        .get(
            "/app/page",
            &with(FETCH, Some(&jwt), &[("Cookie", &refreshed)]),
        )
        .await;
    assert_eq!(
        again.status, 200,
        "the refreshed cookie is a session: {again:?}"
    );
}

pub(crate) async fn refuses_an_any_device_on_enclave_only(site: &GateSite) {
    let (_, _, cookie) = site.enrolled_session("alice").await;
    let jwt = site.jwt("alice");
    let headers = with(FETCH, Some(&jwt), &[("Cookie", &cookie)]);
    let answer = site.proxy.get("/admin/users", &headers).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    let body = answer.json();
    assert_eq!(body["error"], "DEVICE_TYPE_REQUIRED");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("enclave_only"),
        "the reason names the type: {reason}"
    );
    assert!(
        !clears_session(&answer),
        "the session stays for other routes"
    );
    // The same session on an `any` route.
    assert_eq!(site.proxy.get("/reports", &headers).await.status, 200);
}

pub(crate) async fn checks_a_websocket_when_it_opens(site: &GateSite) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (_, _, cookie) = site.enrolled_session("alice").await;
    let jwt = site.jwt("alice");
    let url = format!("ws://{}/ws/feed", site.proxy.addr());
    let request = |cookie: Option<&str>| {
        let mut request = url.as_str().into_client_request().expect("ws request");
        let headers = request.headers_mut();
        headers.insert("host", site.proxy.host().parse().expect("host"));
        headers.insert(IDENTITY_HEADER, jwt.parse().expect("jwt header"));
        if let Some(cookie) = cookie {
            headers.insert("cookie", cookie.parse().expect("cookie header"));
        }
        request
    };
    match tokio_tungstenite::connect_async(request(None)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401, "{response:?}");
        }
        other => panic!("a handshake without a session opened: {other:?}"),
    }
    let (mut socket, response) = tokio_tungstenite::connect_async(request(Some(&cookie)))
        .await
        .expect("the handshake with a session opens");
    assert_eq!(response.status(), 101);
    let Some(Ok(Message::Text(first))) = socket.next().await else {
        panic!("no echo of the handshake");
    };
    let echo = Echo::parse(first.as_str());
    assert_eq!(echo.header("x-enroll-user").as_deref(), Some("alice"));
    assert!(!echo.text().contains("enroll-gate"), "{echo:?}");
    socket
        .send(Message::Text("ping".into()))
        .await
        .expect("send");
    let Some(Ok(Message::Text(pong))) = socket.next().await else {
        panic!("no echo");
    };
    assert_eq!(pong.as_str(), "ping");
}

pub(crate) async fn refuses_return_urls_on_other_hosts(site: &GateSite) {
    let jwt = site.jwt("alice");
    for rd in [
        "https://evil.example/",
        "http://localhost:1/",
        "javascript:alert(1)",
        "//evil.example/",
    ] {
        let answer = site
            .proxy
            .page_api("status", &jwt, &json!({"type": "any", "rd": rd}))
            .await;
        assert_eq!(answer.status, 400, "{rd}: {answer:?}");
        assert_eq!(
            answer.json()["code"],
            "RETURN_URL_REFUSED",
            "{rd}: {answer:?}"
        );
    }
    let good = format!("{}/reports", site.proxy.origin());
    let answer = site
        .proxy
        .page_api("status", &jwt, &json!({"type": "any", "rd": good}))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["return_url"], good);
}

async fn identities_that_are_not_valid_are_refused(backend: Backend) {
    if let Some(site) = site(backend, "gate_nginx::identities_that_are_not_valid").await {
        refuses_identities_that_are_not_valid(&site).await;
    }
}

async fn cookies_that_are_no_session_are_refused(backend: Backend) {
    if let Some(site) = site(backend, "gate_nginx::cookies_that_are_no_session").await {
        refuses_cookies_that_are_no_session(&site).await;
    }
}

async fn without_a_session_fetch_gets_json_and_a_navigation_the_page(backend: Backend) {
    if let Some(site) = site(backend, "gate_nginx::without_a_session").await {
        answers_without_a_session(&site).await;
    }
}

async fn the_app_gets_the_gates_identity_never_the_clients(backend: Backend) {
    if let Some(site) = site(backend, "gate_nginx::the_app_gets_the_gates_identity").await {
        gives_the_app_only_the_gates_identity(&site).await;
    }
}

async fn an_enclave_only_route_refuses_an_any_device(backend: Backend) {
    if let Some(site) = site(backend, "gate_nginx::an_enclave_only_route").await {
        refuses_an_any_device_on_enclave_only(&site).await;
    }
}

async fn a_websocket_is_checked_when_it_opens(backend: Backend) {
    if let Some(site) = site(backend, "gate_nginx::a_websocket_is_checked").await {
        checks_a_websocket_when_it_opens(&site).await;
    }
}

async fn a_return_url_on_another_host_is_refused(backend: Backend) {
    if let Some(site) = site(backend, "gate_nginx::a_return_url_on_another_host").await {
        refuses_return_urls_on_other_hosts(&site).await;
    }
}

enroll_e2e::on_both_backends!(
    identities_that_are_not_valid_are_refused,
    cookies_that_are_no_session_are_refused,
    without_a_session_fetch_gets_json_and_a_navigation_the_page,
    the_app_gets_the_gates_identity_never_the_clients,
    an_enclave_only_route_refuses_an_any_device,
    a_websocket_is_checked_when_it_opens,
    a_return_url_on_another_host_is_refused,
    a_clients_identity_header_never_reaches_the_gate,
);

/// A gate in header mode that trusts the proxy (127.0.0.1): the shipped configuration
/// strips the plain identity headers a client sends, so none of them names a user at the
/// check or on the sign-in page.
pub(crate) async fn site_trusting_plain_headers(
    backend: Backend,
    kind: ProxyKind,
    test: &str,
) -> Option<GateSite> {
    GateSite::start_with(backend, kind, test, Vec::new(), |gate| {
        gate.identity.mode = enroll_device::config::IdentityMode::Header;
        gate.identity.header = "X-Forwarded-User".to_owned();
        gate.identity.realm = "acme".to_owned();
    })
    .await
}

pub(crate) async fn never_passes_a_clients_identity_header_to_the_gate(site: &GateSite) {
    for header in ["X-Forwarded-User", "x-forwarded-user", "X-FORWARDED-USER"] {
        let spoofed = [(header, "alice")];
        let check = site.proxy.get("/app/", &with(FETCH, None, &spoofed)).await;
        assert_eq!(check.status, 401, "{header}: {check:?}");
        assert_eq!(
            check.json()["error"],
            "UNAUTHENTICATED",
            "{header}: {check:?}"
        );
        let navigation = site
            .proxy
            .get(
                "/admin/",
                &with(&[("Sec-Fetch-Mode", "navigate")], None, &spoofed),
            )
            .await;
        assert_eq!(navigation.status, 401, "{header}: {navigation:?}");
        let page = site
            .proxy
            .request(
                "POST",
                "/.enroll-gate/api/status",
                &[
                    (header, "alice"),
                    ("Origin", site.proxy.origin().as_str()),
                    ("Content-Type", "application/json"),
                ],
                Some(r#"{"type":"any"}"#),
            )
            .await;
        assert_eq!(page.status, 401, "{header}: {page:?}");
    }
}

async fn a_clients_identity_header_never_reaches_the_gate(backend: Backend) {
    let test = "gate_nginx::a_clients_identity_header_never_reaches_the_gate";
    if let Some(site) = site_trusting_plain_headers(backend, ProxyKind::Nginx, test).await {
        never_passes_a_clients_identity_header_to_the_gate(&site).await;
    }
}
