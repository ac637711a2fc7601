//! Indexes for the list RPCs (ListDevices, ListTokens, ListAuditEvents, ListEnrollmentLinks,
//! ListOtpEnrollmentLinks), so a page costs a page however large the table is.
//!
//! Every list is a keyset page: `ORDER BY <key> LIMIT n` after the last key of the previous
//! page (devices, links: `id`; tokens: `serial`; audit events: `id` descending). Each
//! filter a request allows has an index whose leading columns are that filter's equality
//! columns followed by the sort key, so the database walks the index in page order and stops
//! after one page, with no sort (when the range holds about a page or less, PostgreSQL may
//! read it as a bitmap and sort those few rows instead): every filter alone, and every
//! filter within a realm (the realm is the tenant an administrator works in). A combination beyond that (a realm, a
//! state and a type, say) walks one of those indexes in page order and checks the other
//! columns per row. A user filter becomes the user's id (`user_id`, looked up first): the
//! user's rows are few. Links' `expired` is a range over `expire_time`: alone, the live
//! links come from an index on it (their ids sorted: few), the expired ones from the primary
//! key in page order; with other filters it is checked per row.
//! The shapes are in `store::lists`; the test `list_plans` in the end-to-end suite checks
//! the plans on both backends.
//!
//! Three indexes are widened rather than added beside their narrower twin, which they
//! serve as well (a prefix): `devices_by_user` (user_id, state) and `tokens_by_user`
//! (user_id, state) gain the sort key, `links_by_user` (realm, user_name) too.
//!
//! Locks: the migrator runs every migration in one transaction on PostgreSQL (see
//! `enroll_shared::db::migrate`: an advisory transaction lock serialises replicas), and
//! `CREATE INDEX CONCURRENTLY` cannot run inside a transaction, so these are plain
//! `CREATE INDEX`: each takes a SHARE lock on its table (reads go on, writes to that table
//! wait) held until the migration's transaction commits, that is for the time to build all
//! of them. On a large database (the audit trail above all), build them beforehand by hand
//! with `CREATE INDEX CONCURRENTLY IF NOT EXISTS` (same names, columns and predicates as
//! below; writes go on meanwhile): this migration then finds them and only drops the three
//! replaced ones. SQLite locks the database for the migration either way.
use sea_orm_migration::prelude::*;

/// (name, table, columns, partial-index predicate).
#[rustfmt::skip]
const INDEXES: &[(&str, &str, &str, &str)] = &[
    // ListDevices and ListTokens without a realm look users up by name.
    ("users_by_name", "users", "name", ""),
    // ListDevices: by id.
    ("devices_by_user_and_id", "devices", "user_id, id", ""),
    ("devices_by_user_state_and_id", "devices", "user_id, state, id", ""),
    ("devices_by_state", "devices", "state, id", ""),
    ("devices_by_type", "devices", "device_type, id", ""),
    ("devices_by_realm_and_state", "devices", "realm, state, id", ""),
    ("devices_by_realm_and_type", "devices", "realm, device_type, id", ""),
    // ListTokens: by serial. `assigned` is `user_id IS [NOT] NULL`, which no index on
    // user_id returns in serial order: partial indexes, one of each pair holds each token.
    ("tokens_by_user_and_serial", "tokens", "user_id, serial", ""),
    ("tokens_by_user_state_and_serial", "tokens", "user_id, state, serial", ""),
    ("tokens_by_state", "tokens", "state, serial", ""),
    ("tokens_by_type", "tokens", "token_type, serial", ""),
    ("tokens_by_realm_and_state", "tokens", "realm, state, serial", ""),
    ("tokens_by_realm_and_type", "tokens", "realm, token_type, serial", ""),
    ("tokens_assigned", "tokens", "serial", "user_id IS NOT NULL"),
    ("tokens_in_pool", "tokens", "serial", "user_id IS NULL"),
    ("tokens_assigned_by_realm", "tokens", "realm, serial", "user_id IS NOT NULL"),
    ("tokens_in_pool_by_realm", "tokens", "realm, serial", "user_id IS NULL"),
    // ListAuditEvents: by id, newest first (an index is read backwards as well). A user or
    // a subject is selective alone: its index serves it within a realm too.
    ("audit_events_by_realm", "audit_events", "realm, id", ""),
    ("audit_events_by_user", "audit_events", "user_name, id", ""),
    ("audit_events_by_subject", "audit_events", "subject, id", ""),
    ("audit_events_by_action", "audit_events", "action, id", ""),
    ("audit_events_by_result", "audit_events", "result, id", ""),
    ("audit_events_by_realm_and_action", "audit_events", "realm, action, id", ""),
    ("audit_events_by_realm_and_result", "audit_events", "realm, result, id", ""),
    // ListEnrollmentLinks: by id. `expired: false` alone (the live links) is a range over
    // the expire time: its matches sorted.
    ("links_by_realm", "enrollment_links", "realm, id", ""),
    ("links_by_realm_user_and_id", "enrollment_links", "realm, user_name, id", ""),
    ("links_by_user_name", "enrollment_links", "user_name, id", ""),
    ("links_by_state", "enrollment_links", "state, id", ""),
    ("links_by_realm_and_state", "enrollment_links", "realm, state, id", ""),
    ("links_by_expiry", "enrollment_links", "expire_time", ""),
    // ListOtpEnrollmentLinks: by id (its state is computed, then filtered).
    ("otp_links_by_realm", "otp_enrollment_links", "realm, id", ""),
    ("otp_links_by_realm_user_and_id", "otp_enrollment_links", "realm, user_name, id", ""),
    ("otp_links_by_user_name", "otp_enrollment_links", "user_name, id", ""),
];

/// The indexes the wider ones above replace: (name, table, columns).
const REPLACED: &[(&str, &str, &str)] = &[
    ("devices_by_user", "devices", "user_id, state"),
    ("tokens_by_user", "tokens", "user_id, state"),
    ("links_by_user", "enrollment_links", "realm, user_name"),
];

pub struct ListIndexes;

impl MigrationName for ListIndexes {
    fn name(&self) -> &str {
        "m0019_list_indexes"
    }
}

fn create(name: &str, table: &str, columns: &str, predicate: &str) -> String {
    let mut sql = format!("CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})");
    if !predicate.is_empty() {
        sql.push_str(&format!(" WHERE {predicate}"));
    }
    sql
}

#[async_trait::async_trait]
impl MigrationTrait for ListIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, table, columns, predicate) in INDEXES {
            db.execute_unprepared(&create(name, table, columns, predicate))
                .await?;
        }
        for (name, _, _) in REPLACED {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, table, columns) in REPLACED {
            db.execute_unprepared(&create(name, table, columns, ""))
                .await?;
        }
        for (name, _, _, _) in INDEXES.iter().rev() {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        Ok(())
    }
}
