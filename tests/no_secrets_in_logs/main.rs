//! Secret hygiene: a scenario that calls every RPC of both services (and the gate: its page
//! and Envoy's ext_authz check, with JWTs and session cookies) with secrets in play runs
//! with every log line captured (TRACE, all crates) and every span exported to memory;
//! no seed, PIN, pass, OTP, password, link secret, API key, JWT or session cookie appears in
//! the logs, the spans, the audit events or the error messages.
mod envoy;
mod events;
mod otp_links;
mod scenario;

use enroll_e2e::{
    Backend, Captured, DEVICE_SERVICE, POLICY_SERVICE, base32_of, capture, rpc_paths,
};
use enroll_shared::proto::{device::v1 as device_pb, policy::v1 as policy_pb};

/// What the scenario used and saw.
#[derive(Default)]
pub struct Used {
    /// Every secret, as bytes (raw seeds are not text), with what it is.
    pub secrets: Vec<(String, Vec<u8>)>,
    /// Non-secrets that must show up somewhere (the scan is not vacuous).
    pub serials: Vec<String>,
    /// The messages of the statuses the scenario provoked.
    pub errors: Vec<String>,
    /// Every audit event, listed at the end.
    pub audit: Vec<String>,
}

impl Used {
    pub fn secret(&mut self, what: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref().to_vec();
        assert!(value.len() >= 8, "{what} is too short to be searched for");
        self.secrets.push((what.to_owned(), value));
    }

    /// A seed in every form it could leak in: raw, hex (either case) and base32.
    pub fn seed(&mut self, what: &str, seed: &[u8]) {
        self.secret(&format!("{what} (raw)"), seed);
        self.secret(&format!("{what} (hex)"), hex::encode(seed));
        self.secret(&format!("{what} (HEX)"), hex::encode_upper(seed));
        self.secret(&format!("{what} (base32)"), base32_of(seed));
    }

    pub fn error(&mut self, status: tonic::Status) {
        self.errors.push(format!("{status:?}"));
    }
}

/// Bytes as text, one char per byte: byte-exact substring search with the standard
/// library's (optimised) string search, raw seeds included.
fn bytes_as_text(bytes: &[u8]) -> String {
    bytes.iter().map(|&byte| char::from(byte)).collect()
}

async fn check(backend: Backend) {
    let (used, Captured { logs, spans }) = capture(scenario::run(backend)).await;
    let logs = bytes_as_text(&logs);
    let used_spans = spans.len();
    let spans = bytes_as_text(spans.join("\n").as_bytes());
    let audit = bytes_as_text(used.audit.join("\n").as_bytes());
    let errors = bytes_as_text(used.errors.join("\n").as_bytes());

    // Not vacuous: every RPC of both services ran (its path is in the logs and in a span),
    // there are audit events, and non-secret data (the serials) is found where it belongs.
    let ext_authz = enroll_device::grpc::ext_authz::METHODS;
    let paths = [
        rpc_paths(device_pb::FILE_DESCRIPTOR_SET),
        rpc_paths(policy_pb::FILE_DESCRIPTOR_SET),
        ext_authz.iter().map(|path| path.to_string()).collect(),
    ]
    .concat();
    let services: Vec<_> = paths
        .iter()
        .filter(|path| {
            path.contains(DEVICE_SERVICE)
                || path.contains(POLICY_SERVICE)
                || ext_authz.contains(&path.as_str())
        })
        .collect();
    assert!(services.len() >= 30, "{services:?}");
    for path in services {
        let marker = format!("rpc.method={path}");
        assert!(logs.contains(&marker), "{path} is not in the logs");
        assert!(
            spans.contains(&marker),
            "{path} is in no span ({} spans exported); its first log lines: {:#?}",
            used_spans,
            logs.lines()
                .filter(|line| line.contains(&marker))
                .take(3)
                .collect::<Vec<_>>()
        );
    }
    assert!(logs.len() > 100_000, "{} bytes of logs", logs.len());
    assert!(!used.audit.is_empty() && !used.errors.is_empty());
    // Log events inside spans are exported as span events: those are searched too.
    assert!(spans.contains(" | event "), "no span carries an event");
    for serial in &used.serials {
        assert!(audit.contains(serial.as_str()), "{serial} is not audited");
        assert!(logs.contains(serial.as_str()), "{serial} is not logged");
    }

    assert!(used.secrets.len() >= 30, "{} secrets", used.secrets.len());
    let mut leaks = Vec::new();
    for (what, secret) in &used.secrets {
        for (place, text) in [
            ("logs", &logs),
            ("spans", &spans),
            ("audit events", &audit),
            ("error messages", &errors),
        ] {
            if text.contains(&bytes_as_text(secret)) {
                leaks.push(format!("{what} in the {place}"));
            }
        }
    }
    // The report names the secret, never its value.
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}

// A current-thread runtime: every server task runs on this thread, under the capturing
// subscriber (`on_both_backends!` runs on a multi-thread runtime, whose workers it would
// not see).
#[tokio::test]
async fn postgres() {
    check(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite() {
    check(Backend::Sqlite).await;
}
