//! Enrollment events: the structured record of each enrollment state change, written to the
//! outbox (`enrollment_events`) in the transaction of the change, and delivered to streams
//! (Shared Signals / CAEP security event tokens, Standard Webhooks, the gRPC watch). An
//! event's kind comes from the audited action and its outcome (typed values, never audit
//! text); its credential facts from the subject's row in the same transaction.
use chrono::{DateTime, Utc};

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
}

impl EventKind {
    pub const ALL: [EventKind; 26] = [
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
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

    /// The event an audited action with this outcome is, if any. `ok` outcomes of the
    /// state-changing actions; refusals are events only where named (`with_event`).
    pub fn of_action(action: &str, result: &str) -> Option<Self> {
        if result != crate::domain::audit::OK {
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
            _ => return None,
        })
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
}
