//! The page queries of the list RPCs, one plain statement each: equality filters, the
//! keyset condition (after the last key of the previous page, never an OFFSET), `ORDER BY`
//! the key and `LIMIT`. Migration m0019 gives every filter an index whose leading columns
//! are the filter's followed by the key, so a page reads about a page of index entries
//! whatever the table's size; rows inserted while a caller pages through land before or
//! after its position and never shift it (no duplicates, no skipped rows). The builders are
//! public so that plans can be checked (`EXPLAIN`) and benchmarks can run the very same SQL.
use chrono::{DateTime, Utc};
use sea_orm::{ActiveEnum, ConnectionTrait, DbBackend, Statement, Value};

use super::entities::columns::{DeviceKindColumn, DeviceStateColumn, LinkStateColumn};
use super::sql::statement;
use crate::domain::audit::AuditFilter;
use crate::domain::devices::{DeviceFilter, LinkFilter};
use crate::domain::names::{Realm, UserName};
use crate::domain::otp_links::OtpLinkFilter;
use crate::domain::tokens::TokenFilter;
use crate::error::DeviceError;

/// The columns ListTokens reads: never the sealed seed or the PIN hash.
pub const TOKEN_COLUMNS: &str = "serial, realm, user_id, token_type, state, digits, period, \
     algorithm, pin_hash IS NOT NULL AS has_pin, failure_count, label, description, \
     create_time, expire_time, verify_state, verify_deadline";

/// A `WHERE` clause under construction, with `$n` placeholders.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    values: Vec<Value>,
}

impl Conditions {
    fn compare(&mut self, column: &str, operator: &str, value: impl Into<Value>) {
        self.values.push(value.into());
        self.clauses
            .push(format!("{column} {operator} ${}", self.values.len()));
    }

    fn equal(&mut self, column: &str, value: Option<impl Into<Value>>) {
        if let Some(value) = value {
            self.compare(column, "=", value);
        }
    }

    /// `user_id` among `owners` (the ids of the users a user filter names).
    fn owners(&mut self, owners: &[i64]) {
        if let [one] = owners {
            self.compare("user_id", "=", *one);
            return;
        }
        let mut placeholders = Vec::with_capacity(owners.len());
        for id in owners {
            self.values.push((*id).into());
            placeholders.push(format!("${}", self.values.len()));
        }
        self.clauses
            .push(format!("user_id IN ({})", placeholders.join(", ")));
    }

    fn raw(&mut self, clause: &str) {
        self.clauses.push(clause.to_owned());
    }

    fn page(self, backend: DbBackend, select: &str, order: &str, limit: u64) -> Statement {
        let mut sql = select.to_owned();
        if !self.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&self.clauses.join(" AND "));
        }
        // A literal, not a parameter: a generic plan would guess a tenth of the table.
        sql.push_str(&format!(" ORDER BY {order} LIMIT {limit}"));
        statement(backend, &sql, self.values)
    }
}

/// A user filter resolved to user ids (`users` by realm and name, or by name alone). Empty
/// when nobody has that name: the caller then lists nothing and runs no page query.
pub type Owners<'a> = Option<&'a [i64]>;

/// ListDevices: devices by id after `after`. With `owners` the realm is implied by them.
pub fn devices(
    backend: DbBackend,
    filter: &DeviceFilter,
    owners: Owners<'_>,
    after: Option<&str>,
    limit: u64,
) -> Statement {
    let mut conditions = Conditions::default();
    match owners {
        Some(owners) => conditions.owners(owners),
        None => conditions.equal("realm", filter.realm.as_ref().map(|r| r.as_str())),
    }
    conditions.equal(
        "device_type",
        filter
            .kind
            .map(|kind| DeviceKindColumn::from(kind).to_value()),
    );
    conditions.equal(
        "state",
        filter
            .state
            .map(|state| DeviceStateColumn::from(state).to_value()),
    );
    if let Some(after) = after {
        conditions.compare("id", ">", after);
    }
    conditions.page(backend, "SELECT * FROM devices", "id", limit)
}

/// ListTokens: tokens by serial after `after` ([`TOKEN_COLUMNS`] only). With `owners` the
/// realm is implied by them.
pub fn tokens(
    backend: DbBackend,
    filter: &TokenFilter,
    owners: Owners<'_>,
    after: Option<&str>,
    limit: u64,
) -> Statement {
    let mut conditions = Conditions::default();
    match owners {
        Some(owners) => conditions.owners(owners),
        None => conditions.equal("realm", filter.realm.as_ref().map(|r| r.as_str())),
    }
    conditions.equal("token_type", filter.kind.map(|kind| kind.as_str()));
    conditions.equal("state", filter.state.map(|state| state.as_str()));
    // Spelled as the partial indexes' predicates.
    match filter.assigned {
        Some(true) => conditions.raw("user_id IS NOT NULL"),
        Some(false) => conditions.raw("user_id IS NULL"),
        None => {}
    }
    if let Some(after) = after {
        conditions.compare("serial", ">", after);
    }
    let select = format!("SELECT {TOKEN_COLUMNS} FROM tokens");
    conditions.page(backend, &select, "serial", limit)
}

/// ListAuditEvents: events newest first, with ids below `before`.
pub fn audit_events(
    backend: DbBackend,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: u64,
) -> Statement {
    let mut conditions = Conditions::default();
    for (column, value) in [
        ("realm", &filter.realm),
        ("user_name", &filter.user),
        ("action", &filter.action),
        ("subject", &filter.subject),
        ("result", &filter.result),
    ] {
        conditions.equal(column, value.as_deref());
    }
    if let Some(before) = before {
        conditions.compare("id", "<", before);
    }
    conditions.page(backend, "SELECT * FROM audit_events", "id DESC", limit)
}

/// ListEnrollmentLinks: links by id after `after`; `expired` compares with `now`.
pub fn links(
    backend: DbBackend,
    filter: &LinkFilter,
    now: DateTime<Utc>,
    after: Option<&str>,
    limit: u64,
) -> Statement {
    let mut conditions = Conditions::default();
    conditions.equal("realm", filter.realm.as_ref().map(|r| r.as_str()));
    conditions.equal("user_name", filter.user.as_ref().map(|u| u.as_str()));
    conditions.equal(
        "state",
        filter
            .state
            .map(|state| LinkStateColumn::from(state).to_value()),
    );
    match filter.expired {
        Some(true) => conditions.compare("expire_time", "<=", now),
        Some(false) => conditions.compare("expire_time", ">", now),
        None => {}
    }
    if let Some(after) = after {
        conditions.compare("id", ">", after);
    }
    conditions.page(backend, "SELECT * FROM enrollment_links", "id", limit)
}

/// ListOtpEnrollmentLinks: links by id after `after`.
pub fn otp_links(
    backend: DbBackend,
    filter: &OtpLinkFilter,
    after: Option<&str>,
    limit: u64,
) -> Statement {
    let mut conditions = Conditions::default();
    conditions.equal("realm", filter.realm.as_ref().map(|r| r.as_str()));
    conditions.equal("user_name", filter.user.as_ref().map(|u| u.as_str()));
    if let Some(after) = after {
        conditions.compare("id", ">", after);
    }
    conditions.page(backend, "SELECT * FROM otp_enrollment_links", "id", limit)
}

/// The ids of the users a user filter names: within `realm` when given (at most one), else
/// every realm's user of that name.
pub fn owners(backend: DbBackend, realm: Option<&str>, user: &str) -> Statement {
    let mut conditions = Conditions::default();
    conditions.equal("realm", realm);
    conditions.compare("name", "=", user);
    // A name is held in a few realms; the limit only bounds a pathological one.
    conditions.page(backend, "SELECT id FROM users", "id", 10_000)
}

/// Runs [`owners`].
pub(super) async fn owner_ids(
    db: &impl ConnectionTrait,
    realm: Option<&Realm>,
    user: &UserName,
) -> Result<Vec<i64>, DeviceError> {
    let backend = db.get_database_backend();
    let statement = owners(backend, realm.map(Realm::as_str), user.as_str());
    db.query_all_raw(statement)
        .await?
        .iter()
        .map(|row| Ok(row.try_get_by_index::<i64>(0)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::devices::DeviceState;

    #[test]
    fn statements_are_plain_keyset_pages() {
        let filter = DeviceFilter {
            realm: Some(Realm::parse("acme").unwrap()),
            state: Some(DeviceState::PendingApproval),
            ..Default::default()
        };
        let page = devices(DbBackend::Postgres, &filter, None, Some("d-9"), 101);
        assert_eq!(
            page.sql,
            "SELECT * FROM devices WHERE realm = $1 AND state = $2 AND id > $3 \
             ORDER BY id LIMIT 101"
        );
        let owned = devices(DbBackend::Sqlite, &filter, Some(&[7]), None, 11);
        assert_eq!(
            owned.sql,
            "SELECT * FROM devices WHERE user_id = ? AND state = ? ORDER BY id LIMIT 11"
        );
        let shared = devices(DbBackend::Postgres, &filter, Some(&[7, 9]), None, 11);
        assert!(shared.sql.contains("user_id IN ($1, $2) AND state = $3"));
        let audit = audit_events(
            DbBackend::Postgres,
            &AuditFilter {
                result: Some("denied".into()),
                ..Default::default()
            },
            Some(40),
            3,
        );
        assert_eq!(
            audit.sql,
            "SELECT * FROM audit_events WHERE result = $1 AND id < $2 ORDER BY id DESC LIMIT 3"
        );
        let pool = tokens(
            DbBackend::Postgres,
            &TokenFilter {
                assigned: Some(false),
                ..Default::default()
            },
            None,
            None,
            5,
        );
        assert!(
            pool.sql
                .ends_with("WHERE user_id IS NULL ORDER BY serial LIMIT 5")
        );
    }
}
