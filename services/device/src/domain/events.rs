//! Enrollment events: the structured record of each enrollment state change, written to the
//! outbox (`enrollment_events`) in the transaction of the change, and delivered to streams
//! (Shared Signals / CAEP security event tokens, Standard Webhooks, the gRPC watch). An
//! event's kind comes from the audited action and its outcome (typed values, never audit
//! text); its credential facts from the subject's row in the same transaction.
use chrono::{DateTime, Utc};

pub use super::policy_events::{PolicyChangeFacts, PolicySummary};

/// What happened. The `as_str` names are the Standard Webhooks `type` and the stream
/// filters' vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    DeviceRegistered,
    DeviceApproved,
    DeviceRevoked,
    /// The FIDO metadata flagged the device's model compromised.
    DeviceFlagged,
    /// An authentication was refused because the device's model is flagged compromised.
    DeviceAuthenticationRefused,
    LinkCreated,
    LinkUsed,
    LinkRevoked,
    LinkExpired,
    /// An OTP token was enrolled and is usable (at once, or after its first code).
    TokenEnrolled,
    /// An OTP token was enrolled with a verify step and waits for its first code.
    TokenEnrollmentPending,
    /// A verify-pending enrollment failed (wrong codes) or ended (window): never usable.
    TokenEnrollmentFailed,
    TokenImported,
    TokenAssigned,
    TokenUnassigned,
    TokenAutoassigned,
    TokenEnabled,
    TokenDisabled,
    /// Reported lost: disabled, and a temporary password issued (never in the event).
    TokenLost,
    TokenDeleted,
    TokenPinSet,
    OtpLinkCreated,
    OtpLinkRedeemed,
    OtpLinkRevoked,
    OtpLinkSuperseded,
    OtpLinkExpired,
    /// The SSF verification event an admin asked for one stream (VerifyEventStream): its
    /// `subject` is the stream's id, and only that stream sends it.
    StreamVerification,
    /// A policy was created, changed or deleted in the policy service (relayed from its
    /// history: `service::policy_events`).
    PolicyCreated,
    PolicyUpdated,
    PolicyDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 30] = [
        EventKind::DeviceRegistered,
        EventKind::DeviceApproved,
        EventKind::DeviceRevoked,
        EventKind::DeviceFlagged,
        EventKind::DeviceAuthenticationRefused,
        EventKind::LinkCreated,
        EventKind::LinkUsed,
        EventKind::LinkRevoked,
        EventKind::LinkExpired,
        EventKind::TokenEnrolled,
        EventKind::TokenEnrollmentPending,
        EventKind::TokenEnrollmentFailed,
        EventKind::TokenImported,
        EventKind::TokenAssigned,
        EventKind::TokenUnassigned,
        EventKind::TokenAutoassigned,
        EventKind::TokenEnabled,
        EventKind::TokenDisabled,
        EventKind::TokenLost,
        EventKind::TokenDeleted,
        EventKind::TokenPinSet,
        EventKind::OtpLinkCreated,
        EventKind::OtpLinkRedeemed,
        EventKind::OtpLinkRevoked,
        EventKind::OtpLinkSuperseded,
        EventKind::OtpLinkExpired,
        EventKind::StreamVerification,
        EventKind::PolicyCreated,
        EventKind::PolicyUpdated,
        EventKind::PolicyDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::DeviceRegistered => "device.registered",
            EventKind::DeviceApproved => "device.approved",
            EventKind::DeviceRevoked => "device.revoked",
            EventKind::DeviceFlagged => "device.flagged",
            EventKind::DeviceAuthenticationRefused => "device.authentication_refused",
            EventKind::LinkCreated => "link.created",
            EventKind::LinkUsed => "link.used",
            EventKind::LinkRevoked => "link.revoked",
            EventKind::LinkExpired => "link.expired",
            EventKind::TokenEnrolled => "token.enrolled",
            EventKind::TokenEnrollmentPending => "token.enrollment_pending",
            EventKind::TokenEnrollmentFailed => "token.enrollment_failed",
            EventKind::TokenImported => "token.imported",
            EventKind::TokenAssigned => "token.assigned",
            EventKind::TokenUnassigned => "token.unassigned",
            EventKind::TokenAutoassigned => "token.autoassigned",
            EventKind::TokenEnabled => "token.enabled",
            EventKind::TokenDisabled => "token.disabled",
            EventKind::TokenLost => "token.lost",
            EventKind::TokenDeleted => "token.deleted",
            EventKind::TokenPinSet => "token.pin_set",
            EventKind::OtpLinkCreated => "otp_link.created",
            EventKind::OtpLinkRedeemed => "otp_link.redeemed",
            EventKind::OtpLinkRevoked => "otp_link.revoked",
            EventKind::OtpLinkSuperseded => "otp_link.superseded",
            EventKind::OtpLinkExpired => "otp_link.expired",
            EventKind::StreamVerification => "stream.verification",
            EventKind::PolicyCreated => "policy.created",
            EventKind::PolicyUpdated => "policy.updated",
            EventKind::PolicyDeleted => "policy.deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// The event an audited action is when it succeeded (`ok`), if any: the
    /// state-changing actions; refusals are events only where named (`with_event`).
    pub fn of_action(action: &str, ok: bool) -> Option<Self> {
        if !ok {
            return None;
        }
        Some(match action {
            "register_device" => EventKind::DeviceRegistered,
            "approve_device" => EventKind::DeviceApproved,
            "revoke_device" => EventKind::DeviceRevoked,
            "flag_device" => EventKind::DeviceFlagged,
            "create_link" => EventKind::LinkCreated,
            "revoke_link" => EventKind::LinkRevoked,
            "enroll_token" => EventKind::TokenEnrolled,
            "verify_token" | "finish_otp_enrollment" => EventKind::TokenEnrolled,
            "verify_token_expired" => EventKind::TokenEnrollmentFailed,
            "import_tokens" => EventKind::TokenImported,
            "assign_token" => EventKind::TokenAssigned,
            "unassign_token" => EventKind::TokenUnassigned,
            "autoassign" => EventKind::TokenAutoassigned,
            "enable_token" => EventKind::TokenEnabled,
            "disable_token" => EventKind::TokenDisabled,
            "report_lost_token" => EventKind::TokenLost,
            "delete_token" => EventKind::TokenDeleted,
            "set_pin" => EventKind::TokenPinSet,
            "create_otp_link" => EventKind::OtpLinkCreated,
            "redeem_otp_link" => EventKind::OtpLinkRedeemed,
            "revoke_otp_link" => EventKind::OtpLinkRevoked,
            "supersede_otp_link" => EventKind::OtpLinkSuperseded,
            "expire_link" => EventKind::LinkExpired,
            "expire_otp_link" => EventKind::OtpLinkExpired,
            _ => return None,
        })
    }

    /// The event of a policy change recorded as `create`, `update` or `delete`.
    pub fn of_policy_change(change: &str) -> Option<Self> {
        match change {
            "create" => Some(EventKind::PolicyCreated),
            "update" => Some(EventKind::PolicyUpdated),
            "delete" => Some(EventKind::PolicyDeleted),
            _ => None,
        }
    }

    /// Events that are refusals (written with a denied audit record).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            EventKind::DeviceAuthenticationRefused | EventKind::TokenEnrollmentFailed
        )
    }

    /// The CAEP `credential-change` `change_type` of a credential event; None for events
    /// that change no credential (links, a pending enrollment, a PIN).
    pub fn caep_change_type(self) -> Option<ChangeType> {
        Some(match self {
            EventKind::DeviceRegistered
            | EventKind::TokenEnrolled
            | EventKind::TokenAssigned
            | EventKind::TokenAutoassigned => ChangeType::Create,
            EventKind::DeviceApproved
            | EventKind::DeviceFlagged
            | EventKind::TokenEnabled
            | EventKind::TokenDisabled => ChangeType::Update,
            EventKind::DeviceRevoked | EventKind::TokenLost | EventKind::TokenUnassigned => {
                ChangeType::Revoke
            }
            EventKind::TokenDeleted => ChangeType::Delete,
            _ => return None,
        })
    }
}

/// CAEP `credential-change` `change_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChangeType {
    Create,
    Revoke,
    Update,
    Delete,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Create => "create",
            ChangeType::Revoke => "revoke",
            ChangeType::Update => "update",
            ChangeType::Delete => "delete",
        }
    }
}

/// What kind of credential an event is about (CAEP `credential_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CredentialKind {
    /// A WebAuthn device attached to the platform (TPM, Secure Enclave, Android keystore).
    Fido2Platform,
    /// A WebAuthn security key or other roaming authenticator (or attachment unknown).
    Fido2Roaming,
    /// A software OTP token (an authenticator app).
    SoftwareOtp,
    /// A hardware OTP token from the pool.
    HardwareOtp,
    /// A temporary password (a lost token's replacement).
    Password,
}

impl CredentialKind {
    /// The CAEP `credential_type` value (docs/events.md lists the mapping; `x509`-style
    /// values are not used; hardware OTP is `hotp-hardware`, the agreed custom value).
    pub fn caep(self) -> &'static str {
        match self {
            CredentialKind::Fido2Platform => "fido2-platform",
            CredentialKind::Fido2Roaming => "fido2-roaming",
            CredentialKind::SoftwareOtp => "app",
            CredentialKind::HardwareOtp => "hotp-hardware",
            CredentialKind::Password => "password",
        }
    }
}

/// Who started the change (CAEP `initiating_entity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InitiatingEntity {
    /// An administrator's API key.
    Admin,
    /// The end user (through the enrollment page, the proxy's ceremonies, Validate).
    User,
    /// The service on a policy's or the metadata's behalf (flags, expiry, purge).
    System,
}

impl InitiatingEntity {
    pub fn caep(self) -> &'static str {
        match self {
            InitiatingEntity::Admin => "admin",
            InitiatingEntity::User => "user",
            InitiatingEntity::System => "system",
        }
    }
}

/// The credential an event is about, read from its row in the change's transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CredentialFacts {
    pub kind: Option<CredentialKind>,
    /// The authenticator model (WebAuthn), lowercase hyphenated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aaguid: Option<String>,
    /// The device's name or the token's label.
    #[serde(default)]
    pub friendly_name: String,
    /// WebAuthn transports the browser reported (`usb`, `nfc`, `ble`, `internal`, `hybrid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<String>,
}

/// One enrollment event as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrollmentEvent {
    /// The delivery order (stamped after commit; see `store::events`): cursors are these.
    pub seq: i64,
    /// Stable id (a UUID): the SET's `jti`, the webhook's `webhook-id`, across retries.
    pub id: String,
    pub kind: EventKind,
    pub realm: String,
    /// Empty for pool tokens.
    pub user: String,
    /// The device id, token serial or link id.
    pub subject: String,
    pub time: DateTime<Utc>,
    /// The API key name or service actor that made the change.
    pub actor: String,
    pub initiating_entity: InitiatingEntity,
    /// Why (never a secret): the audit event's reason.
    pub reason: String,
    pub credential: CredentialFacts,
    /// The trace the change ran in (the SET's `txn`).
    pub trace_id: String,
    /// The policy change of a `policy.*` event; None for every other event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyChangeFacts>,
    /// A `stream.verification` event's `state` (SSF 1.0 §8.1.4.2: opaque, echoed to the
    /// receiver); None for every other event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_state: Option<String>,
}

/// The stream an event is for alone, if it is one of those (a stream's verification
/// event): only that stream sends it, whatever its filter, and no other stream or watcher
/// sees it. None: an ordinary event, for every stream whose filter it passes.
pub fn for_stream_only(event: &EnrollmentEvent) -> Option<&str> {
    (event.kind == EventKind::StreamVerification).then_some(event.subject.as_str())
}

/// What the registering browser reported about the authenticator (unverified: the CAEP
/// credential type, never a trust decision).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedAuthenticator {
    /// `platform`, `cross-platform`, or "" when not reported.
    pub attachment: String,
    /// Known WebAuthn transports, comma-separated.
    pub transports: String,
}

impl ReportedAuthenticator {
    const ATTACHMENTS: [&'static str; 2] = ["platform", "cross-platform"];
    const TRANSPORTS: [&'static str; 6] = ["usb", "nfc", "ble", "internal", "hybrid", "smart-card"];

    /// From the credential JSON of a registration (`authenticatorAttachment`,
    /// `response.transports`); anything else, or unknown values, are left out.
    pub fn from_credential_json(json: &str) -> Self {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
            return Self::default();
        };
        let attachment = value["authenticatorAttachment"]
            .as_str()
            .filter(|attachment| Self::ATTACHMENTS.contains(attachment))
            .unwrap_or_default()
            .to_owned();
        let mut transports: Vec<&str> = value["response"]["transports"]
            .as_array()
            .map(|list| list.iter().filter_map(|t| t.as_str()).collect())
            .unwrap_or_default();
        transports.retain(|transport| Self::TRANSPORTS.contains(transport));
        transports.sort_unstable();
        transports.dedup();
        Self {
            attachment,
            transports: transports.join(","),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_unique_name_that_parses_back() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
    }

    #[test]
    fn policy_changes_are_events_but_no_credential_changes() {
        for (change, kind) in [
            ("create", EventKind::PolicyCreated),
            ("update", EventKind::PolicyUpdated),
            ("delete", EventKind::PolicyDeleted),
        ] {
            assert_eq!(EventKind::of_policy_change(change), Some(kind));
            assert_eq!(kind.caep_change_type(), None, "CAEP streams skip {kind:?}");
            assert!(kind.as_str().starts_with("policy."));
        }
        assert_eq!(EventKind::of_policy_change("rename"), None);
    }

    #[test]
    fn only_ok_outcomes_of_changes_are_events() {
        assert_eq!(
            EventKind::of_action("register_device", true),
            Some(EventKind::DeviceRegistered)
        );
        assert_eq!(EventKind::of_action("register_device", false), None);
        assert_eq!(EventKind::of_action("validate", true), None);
        assert_eq!(
            EventKind::of_action("verify_token", true),
            Some(EventKind::TokenEnrolled)
        );
    }

    #[test]
    fn the_browser_report_keeps_known_values_only() {
        let reported = ReportedAuthenticator::from_credential_json(
            r#"{"authenticatorAttachment":"platform","response":{"transports":["internal","hybrid","<script>","internal"]}}"#,
        );
        assert_eq!(reported.attachment, "platform");
        assert_eq!(reported.transports, "hybrid,internal");
        let odd = ReportedAuthenticator::from_credential_json(r#"{"authenticatorAttachment":"x"}"#);
        assert_eq!(odd, ReportedAuthenticator::default());
        assert_eq!(
            ReportedAuthenticator::from_credential_json("not json"),
            ReportedAuthenticator::default()
        );
    }
}
