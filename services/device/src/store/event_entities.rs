//! Rows of the event outbox and its streams (migrations m0015 and m0016).

pub mod enrollment_events {
    use sea_orm::entity::prelude::*;

    /// One enrollment event. `seq` is NULL until the stamper orders it after its commit;
    /// `payload` holds the typed rest of the event as JSON (never a secret).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "enrollment_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub seq: Option<i64>,
        pub event_id: String,
        pub event_type: String,
        pub realm: String,
        pub user_name: String,
        pub subject: String,
        pub occurred_at: DateTimeUtc,
        pub payload: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event_streams {
    use sea_orm::entity::prelude::*;

    /// A receiver of events. `sealed_secrets` holds the webhook secrets (sealed like seeds
    /// under `secret_key_id`); `cursor` is the last `seq` delivered or dead-lettered.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_streams")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub encoding: String,
        pub endpoint: String,
        pub audience: String,
        /// CAEP: `iss_sub`, `opaque` or `email` (`sub_id`'s format).
        pub subject_format: String,
        pub event_types: String,
        pub realms: String,
        pub status: String,
        pub secret_key_id: String,
        pub sealed_secrets: Vec<u8>,
        pub cursor: i64,
        pub lease_owner: Option<String>,
        pub lease_until: Option<DateTimeUtc>,
        pub attempts: i32,
        pub next_attempt_at: Option<DateTimeUtc>,
        pub first_failure_at: Option<DateTimeUtc>,
        pub last_error: String,
        pub created_by: String,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event_dead_letters {
    use sea_orm::entity::prelude::*;

    /// An event a stream gave up on (or held behind an earlier dead letter of its subject).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_dead_letters")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub stream_id: String,
        pub seq: i64,
        pub event_id: String,
        pub subject_key: String,
        pub reason: String,
        pub attempts: i32,
        pub dead_at: DateTimeUtc,
        /// Queued for delivery again (RedeliverEvents), before the stream's new events.
        pub redrive: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event_signing_keys {
    use sea_orm::entity::prelude::*;

    /// A security event token signing key: PKCS#8, sealed like seeds. Retired keys stay
    /// published in the JWKS until `retire_time`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_signing_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kid: String,
        pub algorithm: String,
        pub seed_key_id: String,
        pub sealed_key: Vec<u8>,
        pub create_time: DateTimeUtc,
        pub retire_time: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event_poll_acks {
    use sea_orm::entity::prelude::*;

    /// An event a poll stream's receiver acknowledged (or reported an error for) beyond the
    /// stream's cursor (RFC 8936 acknowledgements may come out of order).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event_poll_acks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub stream_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
