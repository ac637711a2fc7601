//! ImportTokens: a CSV of hardware tokens into a realm's pool, one transaction. These rows
//! are the only ones marked `hardware`, so the only ones autoassignment may hand out.
use super::admin::seal;
use super::*;
use crate::domain::import::ImportReport;
use crate::domain::import::{RowError, parse_csv};

impl Tokens {
    /// Imports hardware tokens from CSV into the realm's pool: good rows are imported, bad
    /// rows reported with their line numbers; the realm limit applies to the whole import.
    #[tracing::instrument(skip_all, fields(realm = %realm))]
    pub async fn import(
        &self,
        actor: &Actor,
        realm: &Realm,
        csv: &str,
        request_id: Option<&RequestId>,
    ) -> Result<ImportReport, DeviceError> {
        let cipher = self.cipher()?.clone();
        let digest = Digest::new().text("realm", realm.as_str()).text("csv", csv);
        let idempotent =
            Idempotent::new(actor, Rpc::ImportTokens, request_id, digest, Some(&cipher))?;
        if let Some(first) = self.first_response(idempotent.as_ref()).await? {
            return Ok(first);
        }
        let (rows, errors) = parse_csv(csv);
        if rows.is_empty() {
            return Ok(ImportReport {
                imported: 0,
                errors,
            });
        }
        let mut kinds: Vec<&'static str> = rows
            .iter()
            .map(|row| row.parameters.kind.as_str())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        let mut per_realm: Option<(u32, String)> = None;
        for kind in kinds {
            let decision = self
                .gate
                .decide(
                    actor,
                    &PolicyQuestion::token(
                        PolicyAction::Enroll,
                        "import_tokens",
                        realm,
                        None,
                        kind,
                        "",
                    ),
                )
                .await?;
            // Each type's decision may set its own realm limit: the strictest holds.
            per_realm = match (per_realm, decision.limits().per_realm) {
                (Some(held), Some(next)) if next.0 < held.0 => Some(next),
                (None, next) => next,
                (held, _) => held,
            };
        }
        let now = self.clock.now();
        let mut batch = Vec::with_capacity(rows.len());
        let mut lines = std::collections::HashMap::new();
        for row in rows {
            let serial = row.serial.to_string();
            let (seed_key_id, seed) = cipher
                .encrypt(&row.seed, &serial)
                .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
            lines.insert(serial.clone(), row.line);
            batch.push(tokens::Model {
                serial: serial.clone(),
                realm: realm.to_string(),
                user_id: None,
                token_type: row.parameters.kind.as_str().to_owned(),
                state: TokenState::Enabled.into(),
                seed_key_id,
                seed,
                digits: i32::from(row.parameters.digits),
                period: row.parameters.period as i32,
                algorithm: row.parameters.algorithm.as_str().to_owned(),
                counter: i64::try_from(row.counter).unwrap_or(i64::MAX),
                pin_hash: None,
                failure_count: 0,
                label: serial,
                description: "imported".to_owned(),
                create_time: now,
                expire_time: None,
                locked_until: None,
                replaced_by: None,
                // The only way a token becomes hardware, and so autoassignable.
                hardware: true,
                verify_state: None,
                verify_deadline: None,
                verify_attempts_left: None,
            });
        }
        let total = batch.len();
        let audit = self.gate.record(actor, "import_tokens", realm, None, "");
        let report = |duplicates: &Vec<String>| {
            let mut errors = errors.clone();
            for serial in duplicates {
                errors.push(RowError {
                    line: lines.get(serial).copied().unwrap_or_default(),
                    serial: serial.clone(),
                    code: "ALREADY_EXISTS".to_owned(),
                    reason: format!("serial `{serial}` already exists"),
                });
            }
            errors.sort_by_key(|error| error.line);
            ImportReport {
                imported: total.saturating_sub(duplicates.len()) as u32,
                errors,
            }
        };
        let seal = |duplicates: &Vec<String>| seal(idempotent.as_ref(), &report(duplicates));
        let outcome = self.metrics.limits(
            self.store
                .import(
                    realm,
                    batch,
                    per_realm,
                    audit,
                    idempotent
                        .as_ref()
                        .map(|idempotent| idempotent.for_store(&seal)),
                )
                .await,
        )?;
        self.pool_index.invalidate(realm);
        respond(idempotent.as_ref(), outcome, |duplicates| {
            Ok(report(&duplicates))
        })
    }
}
