//! The list queries pay by the page, not by the table: every list query (`store::lists`,
//! the statements the service runs) with every combination of its filters, on a first page
//! and a later one, is planned on an index: no sequential scan, and a sort only of at most
//! two pages of matches (the planner's choice when an index range holds about a page: a
//! bitmap scan, then a sort; more matches are walked in index order, stopping at the page's
//! end, with no sort). PostgreSQL: `EXPLAIN (FORMAT JSON)` after `ANALYZE` over tens of
//! thousands of seeded rows, the planner's own choice (no `enable_seqscan = off`). SQLite:
//! `EXPLAIN QUERY PLAN`, every filtered read an index search and no temporary B-tree for
//! the order (but for the live links, a range of their expiry).
use enroll_device::domain::audit::AuditFilter;
use enroll_device::domain::devices::{
    DeviceFilter, DeviceKind, DeviceState, LinkFilter, LinkState,
};
use enroll_device::domain::names::{Realm, UserName};
use enroll_device::domain::otp_links::OtpLinkFilter;
use enroll_device::domain::tokens::{TokenFilter, TokenKind, TokenState};
use enroll_device::store::lists;
use enroll_device::store::migration::{MIGRATION_LOCK_KEY, Migrator};
use enroll_e2e::{Backend, TestDatabase};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

const USERS: u32 = 4_000;
const REALMS: u32 = 20;

/// Rows in every state, type and realm; user `n` is in realm `n % 20`.
fn seed(backend: DbBackend) -> Vec<String> {
    let blob = match backend {
        DbBackend::Postgres => "decode('00', 'hex')",
        _ => "X'00'",
    };
    let numbers = |count: u32| {
        format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})")
    };
    // A user id from a row number, and that user's realm.
    let user = format!("((i % {USERS}) + 1)");
    let realm = format!("'realm' || ({user} % {REALMS})");
    vec![
        format!(
            "{} INSERT INTO users (realm, name, create_time, lock_version) \
             SELECT 'realm' || (i % {REALMS}), 'user' || i, CURRENT_TIMESTAMP, 0 FROM n",
            numbers(USERS)
        ),
        format!(
            "{} INSERT INTO devices (id, realm, user_id, credential_id, device_type, state, \
             aaguid, backup_eligible, user_agent, credential, create_time, approved_by) \
             SELECT 'dev-' || i, {realm}, {user}, 'cred-' || i, \
             CASE WHEN i % 7 = 0 THEN 'enclave_only' ELSE 'any' END, \
             CASE WHEN i % 23 = 0 THEN 'pending_approval' WHEN i % 5 = 0 THEN 'revoked' \
             ELSE 'approved' END, '', false, '', '{{}}', CURRENT_TIMESTAMP, '' FROM n",
            numbers(30_000)
        ),
        // A quarter in the pool (no user).
        format!(
            "{} INSERT INTO tokens (serial, realm, user_id, token_type, state, seed_key_id, seed, \
             digits, period, algorithm, counter, failure_count, label, description, create_time) \
             SELECT 'TOK' || i, {realm}, CASE WHEN i % 4 = 0 THEN NULL ELSE {user} END, \
             CASE WHEN i % 9 = 0 THEN 'hotp' ELSE 'totp' END, \
             CASE WHEN i % 31 = 0 THEN 'lost' WHEN i % 13 = 0 THEN 'disabled' \
             ELSE 'enabled' END, 'k1', {blob}, 6, 30, 'sha1', 0, 0, '', '', CURRENT_TIMESTAMP \
             FROM n",
            numbers(30_000)
        ),
        format!(
            "{} INSERT INTO audit_events (time, actor, action, realm, user_name, subject, result, \
             reason, trace_id) \
             SELECT CURRENT_TIMESTAMP, 'admin', \
             CASE WHEN i % 17 = 0 THEN 'delete_token' WHEN i % 3 = 0 THEN 'validate' \
             ELSE 'enroll_token' END, {realm}, 'user' || {user}, 'TOK' || (i % 30000), \
             CASE WHEN i % 19 = 0 THEN 'denied' ELSE 'ok' END, '', '' FROM n",
            numbers(60_000)
        ),
        format!(
            "{} INSERT INTO enrollment_links (id, realm, user_name, device_type, redirect_url, \
             secret_hash, state, created_by, create_time, expire_time) \
             SELECT 'link-' || i, {realm}, 'user' || {user}, 'any', '', 'hash-' || i, \
             CASE WHEN i % 29 = 0 THEN 'revoked' WHEN i % 3 = 0 THEN 'used' ELSE 'active' END, \
             'admin', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM n",
            numbers(20_000)
        ),
        format!(
            "{} INSERT INTO otp_enrollment_links (id, realm, user_name, token_type, digits, \
             period, algorithm, label, description, secret_hash, state, created_by, \
             create_time, expire_time) \
             SELECT 'otp-' || i, {realm}, 'user' || {user}, 'totp', 6, 30, 'sha1', '', '', \
             'hash-' || i, 'active', 'admin', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM n",
            numbers(20_000)
        ),
        "ANALYZE".to_owned(),
    ]
}

/// Every subset of `n` optional filters, as bit masks.
fn subsets(n: u32) -> impl Iterator<Item = u32> {
    0..(1 << n)
}

fn realm() -> Realm {
    Realm::parse("realm3").unwrap()
}

/// User 23 is in realm 3.
fn user() -> UserName {
    UserName::parse("user23").unwrap()
}

struct Planner {
    db: DatabaseConnection,
    backend: DbBackend,
    checked: usize,
    /// The statements planned otherwise, with their plans.
    failures: Vec<String>,
}

impl Planner {
    /// Records `statement` as a failure unless it reads a page through an index.
    async fn check(&mut self, what: &str, statement: Statement, filtered: bool, limit: u64) {
        self.checked += 1;
        let explained = Statement {
            sql: match self.backend {
                DbBackend::Postgres => format!("EXPLAIN (FORMAT JSON) {}", statement.sql),
                _ => format!("EXPLAIN QUERY PLAN {}", statement.sql),
            },
            ..statement.clone()
        };
        let rows = self.db.query_all_raw(explained).await.expect("explain");
        match self.backend {
            DbBackend::Postgres => {
                let plan: serde_json::Value = rows[0].try_get_by_index(0).expect("a JSON plan");
                let mut nodes = Vec::new();
                node_types(&plan[0]["Plan"], &mut nodes);
                let indexed = nodes.iter().any(|node| node.kind.contains("Index Scan"))
                    && !nodes.iter().any(|node| node.kind == "Seq Scan");
                // A sort only of about a page of matches: the planner's choice when an
                // index range holds about a page (bitmap, then sort); more are walked in
                // index order and the walk stops at the page's end.
                let sorted_at_most_pages = nodes
                    .iter()
                    .filter(|node| node.kind.contains("Sort"))
                    .all(|node| node.rows <= 2.0 * limit as f64);
                if !indexed || !sorted_at_most_pages {
                    let nodes: Vec<String> = nodes
                        .iter()
                        .map(|node| format!("{} {} ({} rows)", node.kind, node.index, node.rows))
                        .collect();
                    self.failures
                        .push(format!("{what}: {}\n  {nodes:?}", statement.sql));
                }
            }
            _ => {
                let details: Vec<String> = rows
                    .iter()
                    .map(|row| row.try_get::<String>("", "detail").expect("detail"))
                    .collect();
                // SQLite gives no row estimates: the one sort allowed is that of the live
                // links (unexpired: few by construction), read by a range of the expiry.
                let live_links = details
                    .iter()
                    .any(|line| line.contains("links_by_expiry (expire_time>?)"));
                let sorted = !live_links && details.iter().any(|line| line.contains("TEMP B-TREE"));
                // Unfiltered, the audit trail is read in rowid order: its primary key.
                let unindexed = filtered
                    && details.iter().any(|line| {
                        (line.starts_with("SCAN") || line.starts_with("SEARCH"))
                            && !line.contains("INDEX")
                            && !line.contains("PRIMARY KEY")
                    });
                if sorted || unindexed {
                    self.failures
                        .push(format!("{what}: {}\n  {details:?}", statement.sql));
                }
            }
        }
    }
}

/// A node of a PostgreSQL plan: its type, index and estimated rows.
struct Node {
    kind: String,
    index: String,
    rows: f64,
}

fn node_types(node: &serde_json::Value, out: &mut Vec<Node>) {
    if let Some(kind) = node["Node Type"].as_str() {
        out.push(Node {
            kind: kind.to_owned(),
            index: node["Index Name"].as_str().unwrap_or_default().to_owned(),
            rows: node["Plan Rows"].as_f64().unwrap_or_default(),
        });
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            node_types(child, out);
        }
    }
}

async fn every_list_query_reads_a_page_through_an_index(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let url = match backend {
        Backend::Postgres => database.url.clone(),
        Backend::Sqlite => format!("{}?mode=rwc", database.url),
    };
    let db = Database::connect(&url).await.expect("connect");
    enroll_shared::db::migrate::<Migrator>(&db, MIGRATION_LOCK_KEY)
        .await
        .expect("migrate");
    let db_backend = db.get_database_backend();
    for sql in seed(db_backend) {
        db.execute_unprepared(&sql).await.expect(&sql);
    }
    let mut planner = Planner {
        db,
        backend: db_backend,
        checked: 0,
        failures: Vec::new(),
    };
    let limit = 101;

    // The user filter's lookup: within a realm, and by name alone.
    for realm in [Some(realm()), None] {
        let lookup = lists::owners(db_backend, realm.as_ref().map(Realm::as_str), "user23");
        planner.check("users by name", lookup, true, 1).await;
    }

    for mask in subsets(4) {
        for after in [None, Some("dev-5")] {
            let filter = DeviceFilter {
                realm: (mask & 1 != 0).then(realm),
                user: (mask & 2 != 0).then(user),
                kind: (mask & 4 != 0).then_some(DeviceKind::EnclaveOnly),
                state: (mask & 8 != 0).then_some(DeviceState::PendingApproval),
            };
            let owners = filter.user.as_ref().map(|_| vec![23_i64]);
            let page = lists::devices(db_backend, &filter, owners.as_deref(), after, limit);
            planner
                .check(&format!("ListDevices {filter:?}"), page, mask != 0, limit)
                .await;
        }
    }

    for mask in subsets(4) {
        for assigned in [None, Some(true), Some(false)] {
            for after in [None, Some("TOK5")] {
                let filter = TokenFilter {
                    realm: (mask & 1 != 0).then(realm),
                    user: (mask & 2 != 0).then(user),
                    kind: (mask & 4 != 0).then_some(TokenKind::Hotp),
                    state: (mask & 8 != 0).then_some(TokenState::Disabled),
                    assigned,
                };
                if filter.user.is_some() && assigned == Some(false) {
                    continue; // a user's pool tokens: none, the store reads nothing
                }
                let owners = filter.user.as_ref().map(|_| vec![23_i64]);
                let page = lists::tokens(db_backend, &filter, owners.as_deref(), after, limit);
                let filtered = mask != 0 || assigned.is_some();
                planner
                    .check(&format!("ListTokens {filter:?}"), page, filtered, limit)
                    .await;
            }
        }
    }

    for mask in subsets(5) {
        for before in [None, Some(50_000)] {
            let pick = |bit: u32, value: &str| (mask & bit != 0).then(|| value.to_owned());
            let filter = AuditFilter {
                realm: pick(1, "realm3"),
                user: pick(2, "user23"),
                action: pick(4, "delete_token"),
                subject: pick(8, "TOK23"),
                result: pick(16, "denied"),
            };
            let page = lists::audit_events(db_backend, &filter, before, limit);
            planner
                .check(
                    &format!("ListAuditEvents {filter:?}"),
                    page,
                    mask != 0,
                    limit,
                )
                .await;
        }
    }

    let now = chrono::Utc::now();
    for mask in subsets(3) {
        for expired in [None, Some(true), Some(false)] {
            for after in [None, Some("link-5")] {
                let filter = LinkFilter {
                    realm: (mask & 1 != 0).then(realm),
                    user: (mask & 2 != 0).then(user),
                    state: (mask & 4 != 0).then_some(LinkState::Revoked),
                    expired,
                };
                let page = lists::links(db_backend, &filter, now, after, limit);
                // `expired` alone is a range checked per row, on the primary key's order.
                planner
                    .check(
                        &format!("ListEnrollmentLinks {filter:?}"),
                        page,
                        mask != 0,
                        limit,
                    )
                    .await;
            }
        }
    }

    for mask in subsets(2) {
        for after in [None, Some("otp-5")] {
            let filter = OtpLinkFilter {
                realm: (mask & 1 != 0).then(realm),
                user: (mask & 2 != 0).then(user),
            };
            let page = lists::otp_links(db_backend, &filter, after, limit);
            planner
                .check(
                    &format!("ListOtpEnrollmentLinks {filter:?}"),
                    page,
                    mask != 0,
                    limit,
                )
                .await;
        }
    }
    assert_eq!(planner.checked, 2 + 32 + 80 + 64 + 48 + 8);
    assert!(
        planner.failures.is_empty(),
        "{} of {} statements read more than a page or the table:\n{}",
        planner.failures.len(),
        planner.checked,
        planner.failures.join("\n")
    );
}

enroll_e2e::on_both_backends!(every_list_query_reads_a_page_through_an_index);
