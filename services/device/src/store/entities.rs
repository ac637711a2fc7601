//! Rows of the device service's tables. States and kinds are typed columns holding the
//! same strings as always (no migration): a value this service does not know fails the read
//! as unreadable stored data instead of passing as a string.

pub mod columns {
    use sea_orm::entity::prelude::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
    pub enum DeviceStateColumn {
        #[sea_orm(string_value = "pending_approval")]
        PendingApproval,
        #[sea_orm(string_value = "approved")]
        Approved,
        #[sea_orm(string_value = "revoked")]
        Revoked,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
    pub enum LinkStateColumn {
        #[sea_orm(string_value = "active")]
        Active,
        #[sea_orm(string_value = "used")]
        Used,
        #[sea_orm(string_value = "revoked")]
        Revoked,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
    pub enum TokenStateColumn {
        #[sea_orm(string_value = "enabled")]
        Enabled,
        #[sea_orm(string_value = "disabled")]
        Disabled,
        #[sea_orm(string_value = "locked")]
        Locked,
        #[sea_orm(string_value = "lost")]
        Lost,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
    #[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
    pub enum DeviceKindColumn {
        #[sea_orm(string_value = "any")]
        Any,
        #[sea_orm(string_value = "enclave_only")]
        EnclaveOnly,
    }
}

pub mod users {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub realm: String,
        pub name: String,
        pub create_time: DateTimeUtc,
        pub lock_version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod tokens {
    use sea_orm::entity::prelude::*;

    /// One OTP or password token. `seed` is AES-256-GCM ciphertext under `seed_key_id`.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub serial: String,
        pub realm: String,
        pub user_id: Option<i64>,
        pub token_type: String,
        pub state: super::columns::TokenStateColumn,
        pub seed_key_id: String,
        pub seed: Vec<u8>,
        pub digits: i32,
        pub period: i32,
        pub algorithm: String,
        pub counter: i64,
        pub pin_hash: Option<String>,
        pub failure_count: i32,
        pub label: String,
        pub description: String,
        pub create_time: DateTimeUtc,
        pub expire_time: Option<DateTimeUtc>,
        /// Refuses every pass until then (back-off after failed validations).
        pub locked_until: Option<DateTimeUtc>,
        /// For a lost token: the temporary password token issued in its place.
        pub replaced_by: Option<String>,
        /// Imported by ImportTokens as a hardware token: the only kind autoassignment may
        /// hand out (a software token's seed was shown to whoever enrolled it).
        pub hardware: bool,
        /// NULL: enrolled without a verify step; `pending` (waiting for a first code until
        /// `verify_deadline`) or `failed` (see `domain::tokens::EnrollmentState`).
        pub verify_state: Option<String>,
        pub verify_deadline: Option<DateTimeUtc>,
        /// Wrong first codes still allowed while pending.
        pub verify_attempts_left: Option<i32>,
    }

    // Seeds and PINs stay out of logs even as ciphertext and hashes.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Token")
                .field("serial", &self.serial)
                .field("realm", &self.realm)
                .field("user_id", &self.user_id)
                .field("state", &self.state)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_events {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub time: DateTimeUtc,
        pub actor: String,
        pub action: String,
        pub realm: String,
        pub user_name: String,
        pub subject: String,
        pub result: String,
        pub reason: String,
        pub trace_id: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod idempotency_keys {
    use sea_orm::entity::prelude::*;

    /// The first response to a request id, sealed (it may hold a secret returned once).
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub seal_key_id: String,
        pub response: Vec<u8>,
        pub create_time: DateTimeUtc,
        /// Keyed digest of the request's parameters (None: written before digests, expired).
        pub request_digest: Option<Vec<u8>>,
        /// Past it the record is treated as absent (None: written before expiry, expired).
        pub expire_time: Option<DateTimeUtc>,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("IdempotencyKey")
                .field("key", &self.key)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod devices {
    use sea_orm::entity::prelude::*;

    /// A registered WebAuthn device. `credential` is the webauthn-rs passkey as JSON (public
    /// key, counter, backup state): no secret.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "devices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub realm: String,
        pub user_id: i64,
        pub credential_id: String,
        pub device_type: super::columns::DeviceKindColumn,
        pub state: super::columns::DeviceStateColumn,
        pub aaguid: String,
        pub backup_eligible: bool,
        pub user_agent: String,
        pub enrollment_link_id: Option<String>,
        pub credential: String,
        pub create_time: DateTimeUtc,
        pub last_used_time: Option<DateTimeUtc>,
        pub approved_by: String,
        /// The authenticator's signature counter at its last use (0: it keeps none).
        pub sign_count: i64,
        /// The model's description in the FIDO metadata at registration ("" unknown).
        pub model: String,
        /// The model's FIDO certification level at registration ("" none known).
        pub certification_level: String,
        /// The attestation statement format (`packed`, `tpm`, `apple`, ...; "" unknown).
        pub attestation_format: String,
        /// The trusted root the attestation chain was verified to; "" when it was not.
        pub attestation_root: String,
        /// Whether the attestation certificate bound the AAGUID (migration m0012).
        pub aaguid_verified: bool,
        /// Why the FIDO metadata marks the model compromised; "" when it does not.
        pub model_compromise: String,
        /// `platform` or `cross-platform` as the registering browser reported it; "" unknown
        /// (m0015; CAEP's credential type).
        pub attachment: String,
        /// The WebAuthn transports the browser reported, comma-separated (m0015).
        pub transports: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod enrollment_links {
    use sea_orm::entity::prelude::*;

    /// A single-use enrollment link. Only the SHA-256 of its secret is stored.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "enrollment_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub realm: String,
        pub user_name: String,
        pub device_type: super::columns::DeviceKindColumn,
        pub redirect_url: String,
        pub secret_hash: String,
        pub state: super::columns::LinkStateColumn,
        pub created_by: String,
        pub create_time: DateTimeUtc,
        pub expire_time: DateTimeUtc,
        pub device_id: Option<String>,
        /// Whether its expiry was written as an event (m0015).
        pub expiry_recorded: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod otp_enrollment_links {
    use sea_orm::entity::prelude::*;

    /// A one-time OTP enrollment link. Only the SHA-256 of its secret and of its redemption
    /// session are stored; the seed lives with the token (`serial`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "otp_enrollment_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub realm: String,
        pub user_name: String,
        pub token_type: String,
        pub digits: i32,
        pub period: i32,
        pub algorithm: String,
        pub label: String,
        pub description: String,
        pub secret_hash: String,
        pub state: String,
        pub created_by: String,
        pub create_time: DateTimeUtc,
        pub expire_time: DateTimeUtc,
        pub serial: Option<String>,
        pub session_hash: Option<String>,
        pub redeem_time: Option<DateTimeUtc>,
        /// Whether its expiry was written as an event (m0015).
        pub expiry_recorded: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod ceremonies {
    use sea_orm::entity::prelude::*;

    /// The server half of a WebAuthn ceremony (challenge and expected credentials), consumed
    /// by the finish call on whichever replica receives it.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ceremonies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        pub realm: String,
        pub user_name: String,
        pub link_id: Option<String>,
        pub device_type: super::columns::DeviceKindColumn,
        pub state: String,
        /// Whether the device waits for approval, fixed when the ceremony begins.
        pub require_approval: bool,
        pub create_time: DateTimeUtc,
        pub expire_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod autoassign_challenges {
    use sea_orm::entity::prelude::*;

    /// An open autoassignment challenge of one user from one client. Real: the user's
    /// first code matched pool token `serial` at `factor`; the next consecutive code of
    /// that token (with the same PIN) completes it; `pin_hash` is the new PIN, sealed like
    /// a token's. Decoy (`decoy`): nothing matched; `serial` and `pin_hash` are empty and
    /// no answer completes it.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "autoassign_challenges")]
    pub struct Model {
        /// Random; the transaction id the caller holds is a keyed digest of it.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub realm: String,
        pub user_name: String,
        pub serial: String,
        pub factor: i64,
        pub pin_hash: String,
        pub create_time: DateTimeUtc,
        pub expire_time: DateTimeUtc,
        /// Confirmation attempts made; the first one spends the challenge.
        pub attempts: i32,
        /// The client address it is bound to ("-": requests without one).
        pub client: String,
        /// Keyed digest of the pass that opened it, to recognise the same pass retyped.
        pub pass_digest: String,
        pub decoy: bool,
    }

    // The sealed PIN stays out of logs.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AutoassignChallenge")
                .field("id", &self.id)
                .field("realm", &self.realm)
                .field("user_name", &self.user_name)
                .field("serial", &self.serial)
                .field("client", &self.client)
                .field("decoy", &self.decoy)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod attempt_budgets {
    use sea_orm::entity::prelude::*;

    /// Attempts spent under one budget key (e.g. `autoassign/client/192.0.2.7`) in the
    /// window that started at `window_start`; shared by every replica.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "attempt_budgets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub window_start: DateTimeUtc,
        pub count: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod policy_set_snapshots {
    use sea_orm::entity::prelude::*;

    /// The last policy set received from the policy service (one row: the newest).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "policy_set_snapshots")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        /// The active policies' contents as JSON (`enroll_policy_engine::policy::PolicySpec`).
        pub policies: String,
        pub receive_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod fido_metadata_blobs {
    use sea_orm::entity::prelude::*;

    /// The last verified FIDO metadata BLOB (the JWT as fetched; verified again on load).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "fido_metadata_blobs")]
    pub struct Model {
        /// The BLOB's serial number.
        #[sea_orm(primary_key, auto_increment = false)]
        pub no: i64,
        pub blob: String,
        pub next_update: String,
        pub source: String,
        pub load_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
