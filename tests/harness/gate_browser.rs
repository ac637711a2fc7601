//! The gate's sign-in page in the shared Chromium: the identity proxy in front simulated by
//! a header every request of the tab carries, the page's state as its script shows it, a
//! device registered through an enrollment link in the same tab (so the tab's virtual
//! authenticator holds it), and the app's answer a tab ends on.
use std::time::{Duration, Instant};

use enroll_shared::proto::device::v1 as pb;
use serde_json::{Value, json};

use crate::{Browser, Echo, IDENTITY_HEADER, STATE_WAIT, Tab, TestStack};

/// What the gate's page shows: `#status` data-state, data-code and data-next, the
/// message, the reasons listed, and which buttons are visible.
#[derive(Debug, Default, Clone)]
pub struct GatePage {
    pub state: String,
    pub code: String,
    pub next: String,
    pub message: String,
    pub reasons: Vec<String>,
    pub button_visible: bool,
    pub button_text: String,
    pub signout_visible: bool,
    pub user: String,
}

impl Browser {
    /// Every request of `tab` carries `jwt` in the identity header, as the identity proxy
    /// in front would add it (also turns on the tab's network events).
    pub async fn set_identity(&mut self, tab: &Tab, jwt: &str) {
        self.call(Some(&tab.session_id), "Network.enable", json!({}))
            .await;
        self.call(
            Some(&tab.session_id),
            "Network.setExtraHTTPHeaders",
            json!({"headers": {IDENTITY_HEADER: jwt}}),
        )
        .await;
    }

    /// The gate page's state, or the default while the tab shows something else.
    pub async fn gate_page(&mut self, tab: &Tab) -> GatePage {
        let value = self
            .try_eval(
                tab,
                r#"(() => {
                    const status = document.querySelector('#status');
                    const action = document.querySelector('#action');
                    const signout = document.querySelector('#signout');
                    if (!status || !action || !signout) { return null; }
                    return {
                        state: status.dataset.state || '',
                        code: status.dataset.code || '',
                        next: status.dataset.next || '',
                        message: document.querySelector('#message').textContent,
                        reasons: [...document.querySelectorAll('#reasons li')].map((li) => li.textContent),
                        button_visible: !action.hidden,
                        button_text: action.textContent,
                        signout_visible: !signout.hidden,
                        user: document.querySelector('#user').textContent,
                    };
                })()"#,
            )
            .await
            .filter(|value| !value.is_null());
        let Some(value) = value else {
            return GatePage::default();
        };
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
        GatePage {
            state: text("state"),
            code: text("code"),
            next: text("next"),
            message: text("message"),
            reasons: value["reasons"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|reason| reason.as_str().map(str::to_owned))
                .collect(),
            button_visible: value["button_visible"].as_bool().unwrap_or(false),
            button_text: text("button_text"),
            signout_visible: value["signout_visible"].as_bool().unwrap_or(false),
            user: text("user"),
        }
    }

    /// Polls the gate page until its state is one of `wanted`.
    pub async fn wait_for_gate_state(&mut self, tab: &Tab, wanted: &[&str]) -> GatePage {
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            let page = self.gate_page(tab).await;
            if wanted.contains(&page.state.as_str()) {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "the gate page stayed in {page:?} (at {}), wanted one of {wanted:?}",
                self.url(tab).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the tab's URL satisfies `wanted`; returns it.
    pub async fn wait_for_url(&mut self, tab: &Tab, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            let url = self.url(tab).await;
            if wanted(&url) {
                return url;
            }
            assert!(Instant::now() < deadline, "the tab stayed at {url}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The echo app's answer the tab shows (polls until the document is one).
    pub async fn app_echo(&mut self, tab: &Tab) -> Echo {
        let deadline = Instant::now() + STATE_WAIT;
        loop {
            let text = self
                .try_eval(
                    tab,
                    "(() => { const pre = document.querySelector('#echo'); \
                     return pre ? pre.textContent : null; })()",
                )
                .await;
            if let Some(Value::String(text)) = text {
                return Echo::parse(&text);
            }
            assert!(
                Instant::now() < deadline,
                "the tab shows no app answer (at {})",
                self.url(tab).await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cookies the tab's browser context holds for `url`.
    pub async fn cookies(&mut self, tab: &Tab, url: &str) -> Vec<Value> {
        let answer = self
            .call(
                Some(&tab.session_id),
                "Network.getCookies",
                json!({"urls": [url]}),
            )
            .await;
        answer["cookies"].as_array().cloned().unwrap_or_default()
    }

    /// Registers the tab's authenticator for `realm`/`user` through an enrollment link
    /// (ANY device) on the stack's enrollment page, as a person does: the device then
    /// lives in this tab's virtual authenticator. Returns the device's id.
    pub async fn register_by_link(
        &mut self,
        tab: &Tab,
        stack: &TestStack,
        realm: &str,
        user: &str,
    ) -> String {
        let link = stack
            .admin()
            .create_enrollment_link(pb::CreateEnrollmentLinkRequest {
                realm: realm.into(),
                user: user.into(),
                device_type: pb::DeviceType::Any as i32,
                created_by: "console-admin".into(),
                ..Default::default()
            })
            .await
            .expect("create enrollment link")
            .into_inner();
        self.open(tab, &stack.page_url_of(&link.url)).await;
        let ready = self.wait_for_state(tab, &["ready", "error"]).await;
        assert_eq!(ready.state, "ready", "the enrollment page: {ready:?}");
        self.eval(tab, "document.querySelector('#register').click()")
            .await;
        let done = self.wait_for_state(tab, &["success", "error"]).await;
        assert_eq!(done.state, "success", "registration failed: {done:?}");
        done.device_id
    }
}
