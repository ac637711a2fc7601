//! The command line (clap derive).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::EXIT_CODES_HELP;
use crate::output::OutputFormat;

const CONNECTION_HELP: &str = "\
Connection settings come from flags, else ENROLLCTL_* environment variables, else the
selected profile of the config file (--config, default
$XDG_CONFIG_HOME/enrollctl/config.toml or ~/.config/enrollctl/config.toml), else its
top-level keys, else the defaults (policy http://127.0.0.1:50051, device
http://127.0.0.1:50052). Config keys: policy_addr, device_addr, api_key, api_key_file,
ca, cert, key, server_name, timeout_secs, actor, output; profiles in [profiles.NAME],
chosen with --profile or default_profile. Relative paths are relative to the config file.";

// No `Debug` here or on `GlobalArgs`: the global options hold the API key.
/// Operate the enrollment services: policies, tokens, enrollment links, devices, audit.
#[derive(Parser)]
#[command(
    name = "enrollctl",
    version,
    after_help = EXIT_CODES_HELP,
    after_long_help = format!("{CONNECTION_HELP}\n\n{EXIT_CODES_HELP}")
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Connection and output options, accepted before or after the subcommand.
#[derive(Args)]
pub struct GlobalArgs {
    /// Config file (TOML) [default: ~/.config/enrollctl/config.toml when it exists].
    #[arg(long, global = true, env = "ENROLLCTL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Profile of the config file to use ([profiles.NAME]).
    #[arg(long, global = true, env = "ENROLLCTL_PROFILE")]
    pub profile: Option<String>,
    /// Policy service address, e.g. https://policy.example:50051.
    #[arg(long, global = true, env = "ENROLLCTL_POLICY_ADDR", value_name = "URL")]
    pub policy_addr: Option<String>,
    /// Device service address, e.g. https://device.example:50052.
    #[arg(long, global = true, env = "ENROLLCTL_DEVICE_ADDR", value_name = "URL")]
    pub device_addr: Option<String>,
    /// API key sent as `authorization: Bearer <key>`. Prefer the environment or a key file:
    /// a flag is visible in the process list.
    #[arg(
        long,
        global = true,
        env = "ENROLLCTL_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// File holding the API key (surrounding whitespace ignored).
    #[arg(
        long,
        global = true,
        env = "ENROLLCTL_API_KEY_FILE",
        value_name = "FILE"
    )]
    pub api_key_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the services' certificates (https:// addresses).
    #[arg(long, global = true, env = "ENROLLCTL_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, global = true, env = "ENROLLCTL_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --cert.
    #[arg(long, global = true, env = "ENROLLCTL_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Name to verify the servers' certificates against, when it is not the address's host.
    #[arg(long, global = true, env = "ENROLLCTL_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Deadline of each call, in seconds [default: 30].
    #[arg(long, global = true, env = "ENROLLCTL_TIMEOUT", value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Who acts, recorded in the audit trail and the policy history [default: $USER].
    #[arg(long, global = true, env = "ENROLLCTL_ACTOR")]
    pub actor: Option<String>,
    /// Output format [default: table].
    #[arg(short, long, global = true, env = "ENROLLCTL_OUTPUT", value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrollment policies: list, read, apply from a file, delete, history, explain.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// OTP tokens: enroll, import a pool, assign, enable, disable, delete, lost, PIN.
    #[command(subcommand)]
    Token(TokenCommand),
    /// WebAuthn enrollment links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// OTP enrollment links: the user makes the TOTP/HOTP token on the enrollment page.
    #[command(subcommand)]
    OtpLink(OtpLinkCommand),
    /// WebAuthn devices: list, read, approve, revoke.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// The device service's audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// FIDO metadata (MDS3): the BLOB in use, and accepting a BLOB number that jumps.
    #[command(subcommand)]
    Metadata(MetadataCommand),
    /// Enrollment events (device registered, token enrolled, lost, ...) as they happen.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Outgoing event streams: Shared Signals / CAEP security event tokens or Standard
    /// Webhooks pushed to a receiver (a SIEM, an identity provider).
    #[command(subcommand)]
    Stream(StreamCommand),
    /// The key that signs the CAEP streams' security event tokens.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Health of both services (grpc.health.v1); exit code 5 when one is not SERVING.
    Health,
    /// Before upgrading: who the release's trust changes affect (devices refused at
    /// authentication, self-registrations that will wait for approval, policies that need
    /// client_ip). Read-only: an ops key is enough.
    UpgradeReport,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the policies.
    List(ListArgs),
    /// Show one policy with the conflicts it takes part in.
    Get { name: String },
    /// Create or update the policies of a YAML or TOML file; shows what changes and the
    /// conflicts the change would cause before applying it.
    Apply(ApplyArgs),
    /// Delete a policy.
    Delete {
        name: String,
        /// Only delete when the policy's etag is still this one.
        #[arg(long)]
        etag: Option<String>,
    },
    /// The change history, newest first (of one policy or all).
    History {
        name: Option<String>,
        /// Most changes shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// The decision for a subject and action: every setting, its value and the policy
    /// that decided it.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Most items shown (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The policy file (`-` reads standard input). YAML: a list of policies, a mapping
    /// with `policies:`, or one policy per document. TOML: [[policies]] tables.
    #[arg(short, long, value_name = "FILE")]
    pub file: PathBuf,
    /// Show the changes and conflicts, apply nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even when the change would cause policy conflicts (decisions for the
    /// overlapping subjects then fail until the conflict is resolved).
    #[arg(long)]
    pub allow_conflicts: bool,
    /// File format [default: from the extension; YAML for `-`].
    #[arg(long, value_enum)]
    pub format: Option<PolicyFileFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyFileFormat {
    Yaml,
    Toml,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[arg(long)]
    pub realm: String,
    /// User name (empty for pool actions).
    #[arg(long, default_value = "")]
    pub user: String,
    /// Client IP address.
    #[arg(long)]
    pub client: Option<String>,
    /// The request has no end user's address (an admin's own action): policies restricted
    /// to client networks do not match. Without it and without --client, a decision about a
    /// user such a policy matches is refused.
    #[arg(long, conflicts_with = "client")]
    pub no_client: bool,
    #[arg(long, value_enum)]
    pub action: ExplainAction,
    /// Token type (totp, hotp, webauthn, password); needed for enroll, assign, autoassign.
    #[arg(long)]
    pub token_type: Option<String>,
    /// Serial, to render `<s>` in label and issuer.
    #[arg(long)]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainAction {
    Enroll,
    Assign,
    Autoassign,
    SetPin,
    LostToken,
    CreateLink,
    RegisterDevice,
    Manage,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Enroll a TOTP/HOTP token; prints the otpauth URI, the seed and a QR code once.
    Enroll(EnrollArgs),
    /// Import hardware tokens into a realm's pool from CSV
    /// (`serial,seed,type,digits,period_or_counter`).
    Import(ImportArgs),
    /// List tokens.
    List(TokenListArgs),
    /// Show one token.
    Get { serial: String },
    /// Assign a pool token to a user.
    Assign {
        serial: String,
        #[arg(long)]
        realm: String,
        #[arg(long)]
        user: String,
        /// Client IP for the policy decision.
        #[arg(long)]
        client: Option<String>,
        /// Idempotency key: a retry with the same id changes nothing more.
        #[arg(long)]
        request_id: Option<String>,
        /// Possession proof: a code the token shows now; assigned only if it verifies.
        #[arg(long)]
        code: Option<String>,
    },
    /// Verify the first code of a token enrolled with `--verify`: it becomes usable.
    Verify {
        serial: String,
        code: String,
        /// The token's realm [default: read from the token].
        #[arg(long)]
        realm: Option<String>,
        #[arg(long)]
        client: Option<String>,
    },
    /// Return a token to its realm's pool (its PIN is cleared).
    Unassign { serial: String },
    /// Enable a disabled or locked token.
    Enable { serial: String },
    /// Disable a token.
    Disable { serial: String },
    /// Delete a token.
    Delete { serial: String },
    /// Mark a token lost and issue a temporary password (printed once).
    Lost {
        serial: String,
        #[arg(long)]
        client: Option<String>,
    },
    /// Set a token's PIN, read from the terminal without echo.
    SetPin {
        serial: String,
        /// Read the PIN from the first line of standard input (scripts).
        #[arg(long)]
        pin_stdin: bool,
        #[arg(long)]
        client: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[arg(long)]
    pub realm: String,
    /// Owner; without it the token goes to the realm's pool.
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long = "type", value_enum, default_value_t = OtpType::Totp)]
    pub token_type: OtpType,
    /// Code length: 6 or 8 [default: 6].
    #[arg(long)]
    pub digits: Option<u32>,
    /// TOTP step in seconds [default: 30].
    #[arg(long)]
    pub period: Option<i64>,
    #[arg(long, value_enum)]
    pub algorithm: Option<Algorithm>,
    #[arg(long)]
    pub description: Option<String>,
    /// Client IP for the policy decision.
    #[arg(long)]
    pub client: Option<String>,
    /// Idempotency key: a retry with the same id returns the first result.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Do not draw the QR code.
    #[arg(long)]
    pub no_qr: bool,
    /// Draw the QR code dark on light (for terminals with a light background).
    #[arg(long)]
    pub qr_invert: bool,
    /// Enroll verify pending: the token validates only after `token verify` with a first
    /// correct code within the policy's window.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtpType {
    Totp,
    Hotp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file (`-` reads standard input).
    pub file: PathBuf,
    #[arg(long)]
    pub realm: String,
    /// Rows per request (progress is shown between requests; each request is checked
    /// against max_token_per_realm on its own). 0: the whole file in one request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

#[derive(Debug, Args)]
pub struct TokenListArgs {
    #[arg(long)]
    pub realm: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long = "type", value_enum)]
    pub token_type: Option<TokenTypeFilter>,
    #[arg(long, value_enum)]
    pub state: Option<TokenStateFilter>,
    /// Only assigned tokens.
    #[arg(long, conflicts_with = "pool")]
    pub assigned: bool,
    /// Only pool (unassigned) tokens.
    #[arg(long)]
    pub pool: bool,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenTypeFilter {
    Totp,
    Hotp,
    Password,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenStateFilter {
    Enabled,
    Disabled,
    Locked,
    Lost,
}

#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Create a single-use enrollment link; prints its URL (it holds the secret) once.
    Create {
        #[arg(long)]
        realm: String,
        #[arg(long)]
        user: String,
        /// [default: the policy's webauthn_device_type]
        #[arg(long, value_enum)]
        device_type: Option<DeviceTypeArg>,
        /// Where the page sends the user after registration.
        #[arg(long)]
        redirect_url: Option<String>,
        /// Lifetime: 90s, 30m, 12h, 2d or seconds [default: the policy's].
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Idempotency key.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// List enrollment links (never their secrets).
    List {
        #[arg(long)]
        realm: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_enum)]
        state: Option<LinkStateFilter>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Revoke an unused link.
    Revoke { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceTypeArg {
    Any,
    EnclaveOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinkStateFilter {
    Active,
    Used,
    Revoked,
    Expired,
}

#[derive(Debug, Subcommand)]
pub enum OtpLinkCommand {
    /// Create a single-use OTP enrollment link (no seed is made until the user opens it);
    /// prints its URL (it holds the secret) once. An unredeemed earlier link of the same
    /// user and token type is superseded.
    Create(OtpLinkCreateArgs),
    /// List OTP enrollment links (never their secrets).
    List {
        #[arg(long)]
        realm: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_enum)]
        state: Option<OtpLinkStateFilter>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Revoke a link; a token made through it that still waits for its first code is
    /// deleted with it. A link whose token is enrolled is refused: delete the token.
    Revoke {
        id: String,
        /// Client IP for the policy decision.
        #[arg(long)]
        client: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct OtpLinkCreateArgs {
    #[arg(long)]
    pub realm: String,
    #[arg(long)]
    pub user: String,
    #[arg(long = "type", value_enum, default_value_t = OtpType::Totp)]
    pub token_type: OtpType,
    /// Code length: 6 or 8 [default: 6].
    #[arg(long)]
    pub digits: Option<u32>,
    /// TOTP step in seconds [default: 30].
    #[arg(long)]
    pub period: Option<i64>,
    #[arg(long, value_enum)]
    pub algorithm: Option<Algorithm>,
    /// The account name the authenticator app shows [default: the policy's tokenlabel].
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Lifetime: 90s, 30m, 12h, 2d or seconds [default: the policy's].
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// Client IP for the policy decision.
    #[arg(long)]
    pub client: Option<String>,
    /// Idempotency key: a retry with the same id returns the first result.
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtpLinkStateFilter {
    Issued,
    Expired,
    VerifyPending,
    Enrolled,
    VerifyFailed,
    VerifyExpired,
    Revoked,
    Superseded,
    TokenDeleted,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List devices.
    List {
        #[arg(long)]
        realm: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long = "type", value_enum)]
        device_type: Option<DeviceTypeArg>,
        #[arg(long, value_enum)]
        state: Option<DeviceStateFilter>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one device.
    Get { id: String },
    /// Approve a device pending approval.
    Approve { id: String },
    /// Revoke a device.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetadataCommand {
    /// The BLOB the device service uses: number, nextUpdate, source, staleness, the
    /// signer's keys, a number waiting for acceptance.
    Status,
    /// Accept BLOB number `--no` although it jumps beyond webauthn.metadata.max_no_jump
    /// (check the number out of band first). Audited.
    Accept {
        /// The BLOB number to accept.
        #[arg(long)]
        no: u64,
        /// Why, e.g. how the number was checked.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceStateFilter {
    Pending,
    Approved,
    Revoked,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit events, newest first.
    List {
        #[command(flatten)]
        filter: AuditFilter,
        /// Most events shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Follow new audit events (oldest first) until Ctrl-C.
    Tail {
        #[command(flatten)]
        filter: AuditFilter,
        /// How many past events to show first.
        #[arg(long, default_value_t = 10)]
        backlog: usize,
        /// Seconds between polls.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Stop after this long: 90s, 30m, 12h or seconds [default: until Ctrl-C].
        #[arg(long, value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// Stop after this many events (the backlog included).
        #[arg(long)]
        max_events: Option<usize>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct AuditFilter {
    #[arg(long)]
    pub realm: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    /// e.g. enroll_token, register_device.
    #[arg(long)]
    pub action: Option<String>,
    /// Token serial or device id.
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long, value_enum)]
    pub result: Option<AuditResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditResult {
    Ok,
    Denied,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print enrollment events as they happen (oldest first, one line each; JSON lines with
    /// `-o json`) until Ctrl-C. Without --after or --from-now: from the first event kept.
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Resume after this `seq` (the last one printed before).
    #[arg(long, value_name = "SEQ", conflicts_with = "from_now")]
    pub after: Option<i64>,
    /// Only the events that happen from now on.
    #[arg(long)]
    pub from_now: bool,
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Stop after this many events [default: until Ctrl-C].
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The event filter of a watch or a stream.
#[derive(Debug, Clone, Args)]
pub struct EventFilterArgs {
    /// Only this event type, e.g. device.registered, token.lost (repeatable) [default: all].
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Only events of this realm (repeatable) [default: all].
    #[arg(long = "realm", value_name = "REALM")]
    pub realms: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream; a webhook stream's signing secret, or a poll stream's bearer token,
    /// is printed once.
    Create(StreamCreateArgs),
    /// List the streams with their delivery state (cursor, backlog, last error).
    List,
    /// Stop delivering; events are held and go out on resume.
    Pause { id: String },
    /// Deliver again (a paused stream, or a disabled one from now on).
    Resume { id: String },
    /// Stop delivering and keep nothing: the stream skips every event while disabled.
    Disable { id: String },
    /// Replace a stream's filter (no --type and no --realm: every event).
    Filter {
        id: String,
        #[command(flatten)]
        filter: EventFilterArgs,
    },
    /// Delete a stream and its dead letters.
    Delete { id: String },
    /// A webhook stream's new signing secret, or a poll stream's new bearer token, printed
    /// once; deliveries carry signatures with the new and the previous secret (polls are
    /// accepted with either token) until the next rotation.
    RotateSecret { id: String },
    /// The events a stream gave up on, and those held behind them, oldest first.
    DeadLetters {
        id: String,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Deliver a stream's dead letters again, in order, before its new events.
    Redeliver { id: String },
    /// Send the stream (and no other) the Shared Signals verification event, in order
    /// with its events; prints the event's id (the token's `jti`).
    Verify {
        id: String,
        /// Echoed to the receiver in the event (`state`).
        #[arg(long)]
        state: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct StreamCreateArgs {
    /// A unique name (at most 64 characters).
    #[arg(long)]
    pub name: String,
    /// `caep`: security event tokens pushed per RFC 8935; `caep-poll`: the same tokens,
    /// polled by the receiver per RFC 8936; `webhook`: Standard Webhooks.
    #[arg(long, value_enum)]
    pub encoding: StreamEncoding,
    /// The receiver's https URL (on a public address); none for caep-poll.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The security event tokens' `aud` (required for caep and caep-poll).
    #[arg(long)]
    pub audience: Option<String>,
    /// How caep tokens name the user: `iss-sub` (default), `opaque`, or `email` (users of
    /// realms the service maps to a mail domain; `iss-sub` for others).
    #[arg(long, value_enum)]
    pub subject_format: Option<StreamSubjectFormat>,
    #[command(flatten)]
    pub filter: EventFilterArgs,
    /// Start with the first event kept instead of from now.
    #[arg(long)]
    pub from_beginning: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamSubjectFormat {
    IssSub,
    Opaque,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamEncoding {
    Caep,
    Webhook,
    CaepPoll,
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Sign new security event tokens with a new key; the previous key stays published in
    /// the JWKS for --overlap. Prints the new key's id and the JWKS.
    Rotate(SigningKeyRotateArgs),
}

#[derive(Debug, Args)]
pub struct SigningKeyRotateArgs {
    /// ES256 (made by the service) or RS256 (needs --rsa-key) [default: ES256, or RS256
    /// with --rsa-key].
    #[arg(long, value_enum)]
    pub algorithm: Option<SigningAlgorithm>,
    /// The RSA private key for RS256: PKCS#8, DER or PEM (`-----BEGIN PRIVATE KEY-----`),
    /// at least 2,048 bits.
    #[arg(long, value_name = "FILE")]
    pub rsa_key: Option<PathBuf>,
    /// How long the previous key stays published: 90s, 30m, 12h, 2d or seconds
    /// [default: 24h].
    #[arg(long, value_parser = parse_duration)]
    pub overlap: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SigningAlgorithm {
    #[value(name = "ES256", alias = "es256")]
    Es256,
    #[value(name = "RS256", alias = "rs256")]
    Rs256,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::Rs256 => "RS256",
        }
    }
}

/// `90s`, `30m`, `12h`, `2d` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(index) => text.split_at(index),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 90s, 30m, 12h or 2d"))?;
    let seconds = match unit {
        "s" => Some(number),
        "m" => number.checked_mul(60),
        "h" => number.checked_mul(3600),
        "d" => number.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("`{text}` is not a duration such as 90s, 30m, 12h or 2d"))?;
    Ok(std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("enrollctl").chain(args.iter().copied()))
    }

    #[test]
    fn events_watch_takes_a_cursor_filters_and_a_limit() {
        let cli = parse(&[
            "events",
            "watch",
            "--after",
            "42",
            "--type",
            "token.lost",
            "--type",
            "device.registered",
            "--realm",
            "corp",
            "--limit",
            "2",
        ])
        .unwrap();
        let Command::Events(EventsCommand::Watch(args)) = cli.command else {
            panic!("not events watch");
        };
        assert_eq!(args.after, Some(42));
        assert!(!args.from_now);
        assert_eq!(args.filter.types, ["token.lost", "device.registered"]);
        assert_eq!(args.filter.realms, ["corp"]);
        assert_eq!(args.limit, Some(2));
        assert!(parse(&["events", "watch", "--after", "1", "--from-now"]).is_err());
        let Command::Events(EventsCommand::Watch(args)) =
            parse(&["events", "watch", "--from-now"]).unwrap().command
        else {
            panic!("not events watch");
        };
        assert!(args.from_now && args.after.is_none() && args.filter.types.is_empty());
    }

    #[test]
    fn stream_commands_parse() {
        let cli = parse(&[
            "stream",
            "create",
            "--name",
            "siem",
            "--encoding",
            "webhook",
            "--endpoint",
            "https://siem.example/hook",
            "--type",
            "token.lost",
            "--from-beginning",
        ])
        .unwrap();
        let Command::Stream(StreamCommand::Create(args)) = cli.command else {
            panic!("not stream create");
        };
        assert_eq!(args.encoding, StreamEncoding::Webhook);
        assert_eq!(args.endpoint.as_deref(), Some("https://siem.example/hook"));
        assert_eq!(args.filter.types, ["token.lost"]);
        assert!(args.filter.realms.is_empty() && args.from_beginning && args.audience.is_none());
        assert!(
            parse(&[
                "stream",
                "create",
                "--name",
                "x",
                "--encoding",
                "jwt",
                "--endpoint",
                "u"
            ])
            .is_err()
        );
        assert!(parse(&["stream", "create", "--encoding", "caep", "--endpoint", "u"]).is_err());
        let cli = parse(&[
            "stream",
            "create",
            "--name",
            "fw",
            "--encoding",
            "caep-poll",
            "--audience",
            "a",
        ])
        .unwrap();
        let Command::Stream(StreamCommand::Create(args)) = cli.command else {
            panic!("not stream create");
        };
        assert_eq!(args.encoding, StreamEncoding::CaepPoll);
        assert!(args.endpoint.is_none());
        let cli = parse(&["stream", "verify", "abc", "--state", "s1"]).unwrap();
        let Command::Stream(StreamCommand::Verify { id, state }) = cli.command else {
            panic!("not stream verify");
        };
        assert_eq!((id.as_str(), state.as_deref()), ("abc", Some("s1")));
        let cli = parse(&["stream", "filter", "abc", "--realm", "a", "--realm", "b"]).unwrap();
        let Command::Stream(StreamCommand::Filter { id, filter }) = cli.command else {
            panic!("not stream filter");
        };
        assert_eq!(id, "abc");
        assert_eq!(filter.realms, ["a", "b"]);
        let cli = parse(&["stream", "dead-letters", "abc", "--limit", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Stream(StreamCommand::DeadLetters {
                list: ListArgs { limit: 5 },
                ..
            })
        ));
        for command in [
            "pause",
            "resume",
            "disable",
            "delete",
            "rotate-secret",
            "redeliver",
        ] {
            assert!(parse(&["stream", command, "abc"]).is_ok(), "{command}");
            assert!(
                parse(&["stream", command]).is_err(),
                "{command} needs an id"
            );
        }
    }

    #[test]
    fn signing_key_rotate_takes_an_algorithm_a_key_and_an_overlap() {
        let cli = parse(&[
            "signing-key",
            "rotate",
            "--algorithm",
            "RS256",
            "--rsa-key",
            "k.pem",
            "--overlap",
            "2d",
        ])
        .unwrap();
        let Command::SigningKey(SigningKeyCommand::Rotate(args)) = cli.command else {
            panic!("not signing-key rotate");
        };
        assert_eq!(args.algorithm, Some(SigningAlgorithm::Rs256));
        assert_eq!(args.rsa_key, Some(PathBuf::from("k.pem")));
        assert_eq!(args.overlap.map(|d| d.as_secs()), Some(172_800));
        let Command::SigningKey(SigningKeyCommand::Rotate(args)) =
            parse(&["signing-key", "rotate", "--algorithm", "es256"])
                .unwrap()
                .command
        else {
            panic!("not signing-key rotate");
        };
        assert_eq!(args.algorithm, Some(SigningAlgorithm::Es256));
        assert!(parse(&["signing-key", "rotate", "--algorithm", "HS256"]).is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        assert!(parse_duration("2w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
