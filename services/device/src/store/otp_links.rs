//! OTP enrollment links. Creation supersedes the user's earlier unredeemed link of the same
//! type, and redemption consumes the link and stores the verify-pending token, each in one
//! transaction that locks the user (and the realm for its limit) first, so racing
//! creations leave one live link and racing redemptions make one token.
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
    TransactionTrait,
};

use super::entities::{otp_enrollment_links, tokens};
use super::idempotency::{self, Idempotency, Outcome};
use super::sql::{exceeded, lock_realm, lock_user, statement};
use super::tokens::TokenStore;
use crate::domain::audit::AuditRecord;
use crate::domain::decision::Limits;
use crate::domain::names::{Realm, UserName};
use crate::domain::otp_links::{ACTIVE, OtpLinkFilter, REVOKED, SUPERSEDED};
use crate::domain::verify::PENDING;
use crate::error::DeviceError;

/// A link row with its token's row, once redeemed (None when not, or deleted since).
#[derive(Debug, Clone)]
pub struct OtpLinkRow {
    pub link: otp_enrollment_links::Model,
    pub token: Option<tokens::Model>,
}

/// Why a redemption wrote nothing.
#[derive(Debug)]
pub enum RedeemRefused {
    /// Another redemption consumed the link first, or it expired, was revoked or
    /// superseded meanwhile.
    LinkGone,
    /// A token limit; audited by the store already.
    Limit(DeviceError),
}

impl TokenStore {
    /// Stores a new link, superseding the user's earlier unredeemed, unexpired links of the
    /// same token type (one audit event each, from `superseded`), with the creation's audit
    /// event and the sealed response of its request id.
    pub async fn create_otp_link(
        &self,
        link: otp_enrollment_links::Model,
        audit: AuditRecord,
        superseded: impl Fn(&str) -> AuditRecord,
        idempotency: Option<Idempotency<'_, ()>>,
    ) -> Result<Outcome<()>, DeviceError> {
        let now = audit.time;
        let realm = Realm::parse(&link.realm)
            .map_err(|problem| DeviceError::corrupt("otp link realm", problem))?;
        let user = UserName::parse(&link.user_name)
            .map_err(|problem| DeviceError::corrupt("otp link user", problem))?;
        let transaction = self.db.begin().await?;
        // Serializes the user's link creations, so two racing ones leave one live link.
        lock_user(&transaction, &realm, &user, now).await?;
        if let Some(first) = idempotency::replayed(idempotency.as_ref(), &transaction, now).await? {
            transaction.commit().await?;
            return Ok(Outcome::Replayed(first));
        }
        use otp_enrollment_links::Column;
        let earlier: Vec<String> = otp_enrollment_links::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::Realm.eq(link.realm.as_str()))
            .filter(Column::UserName.eq(link.user_name.as_str()))
            .filter(Column::TokenType.eq(link.token_type.as_str()))
            .filter(Column::State.eq(ACTIVE))
            .filter(Column::Serial.is_null())
            .filter(Column::ExpireTime.gt(now))
            .into_tuple()
            .all(&transaction)
            .await?;
        let backend = transaction.get_database_backend();
        for id in &earlier {
            transaction
                .execute_raw(statement(
                    backend,
                    &format!(
                        "UPDATE otp_enrollment_links SET state = '{SUPERSEDED}' \
                         WHERE id = $1 AND state = '{ACTIVE}' AND serial IS NULL"
                    ),
                    vec![id.as_str().into()],
                ))
                .await?;
            Self::insert_audit(&transaction, superseded(id)).await?;
        }
        otp_enrollment_links::Entity::insert(link.into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        Self::insert_audit(&transaction, audit).await?;
        let retention = &self.records.retention;
        idempotency::remember(idempotency.as_ref(), &transaction, &(), now, retention).await?;
        transaction.commit().await?;
        Ok(Outcome::Done(()))
    }

    pub async fn otp_link(&self, id: &str) -> Result<Option<OtpLinkRow>, DeviceError> {
        let found = otp_enrollment_links::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?;
        self.with_token(found).await
    }

    pub async fn otp_link_by_secret_hash(
        &self,
        hash: &str,
    ) -> Result<Option<OtpLinkRow>, DeviceError> {
        let found = otp_enrollment_links::Entity::find()
            .filter(otp_enrollment_links::Column::SecretHash.eq(hash))
            .one(&self.db)
            .await?;
        self.with_token(found).await
    }

    pub async fn otp_link_by_session_hash(
        &self,
        hash: &str,
    ) -> Result<Option<OtpLinkRow>, DeviceError> {
        let found = otp_enrollment_links::Entity::find()
            .filter(otp_enrollment_links::Column::SessionHash.eq(hash))
            .one(&self.db)
            .await?;
        self.with_token(found).await
    }

    async fn with_token(
        &self,
        link: Option<otp_enrollment_links::Model>,
    ) -> Result<Option<OtpLinkRow>, DeviceError> {
        let Some(link) = link else {
            return Ok(None);
        };
        let token = match &link.serial {
            Some(serial) => {
                tokens::Entity::find_by_id(serial.clone())
                    .one(&self.db)
                    .await?
            }
            None => None,
        };
        Ok(Some(OtpLinkRow { link, token }))
    }

    /// A page of links ordered by id, after `after`, each with its token.
    pub async fn list_otp_links(
        &self,
        filter: &OtpLinkFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<OtpLinkRow>, DeviceError> {
        let backend = self.db.get_database_backend();
        let links = otp_enrollment_links::Entity::find()
            .from_raw_sql(super::lists::otp_links(backend, filter, after, limit))
            .all(&self.db)
            .await?;
        let serials: Vec<String> = links
            .iter()
            .filter_map(|link| link.serial.clone())
            .collect();
        let mut tokens_by_serial: std::collections::HashMap<String, tokens::Model> =
            if serials.is_empty() {
                Default::default()
            } else {
                tokens::Entity::find()
                    .filter(tokens::Column::Serial.is_in(serials))
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .map(|token| (token.serial.clone(), token))
                    .collect()
            };
        Ok(links
            .into_iter()
            .map(|link| {
                let token = link
                    .serial
                    .as_ref()
                    .and_then(|serial| tokens_by_serial.remove(serial));
                OtpLinkRow { link, token }
            })
            .collect())
    }

    /// Consumes the link `id` for `session_hash` and stores `token` verify pending for its
    /// user, within `limits`, with the audit event: all or nothing. The link must still be
    /// active, unredeemed and unexpired at `now` (a racing redemption finds it gone).
    #[allow(clippy::too_many_arguments)]
    pub async fn redeem_otp_link(
        &self,
        id: &str,
        session_hash: &str,
        realm: &Realm,
        user: &UserName,
        mut token: tokens::Model,
        limits: &Limits,
        audit: AuditRecord,
    ) -> Result<Result<(), RedeemRefused>, DeviceError> {
        let now = audit.time;
        let transaction = self.db.begin().await?;
        // Lock order: realm, then user (every writer takes them in this order).
        if limits.per_realm.is_some() {
            lock_realm(&transaction, realm).await?;
        }
        let user_id = lock_user(&transaction, realm, user, now).await?;
        let backend = transaction.get_database_backend();
        let consumed = transaction
            .execute_raw(statement(
                backend,
                &format!(
                    "UPDATE otp_enrollment_links SET serial = $1, session_hash = $2, \
                     redeem_time = $3 WHERE id = $4 AND state = '{ACTIVE}' AND serial IS NULL \
                     AND expire_time > $5"
                ),
                // SQLite binds by position: each placeholder once, in order.
                vec![
                    token.serial.as_str().into(),
                    session_hash.into(),
                    now.into(),
                    id.into(),
                    now.into(),
                ],
            ))
            .await?
            .rows_affected();
        if consumed != 1 {
            transaction.rollback().await?;
            return Ok(Err(RedeemRefused::LinkGone));
        }
        if let Some(error) = exceeded(&transaction, realm, Some(user_id), limits, now).await? {
            // Nothing of the redemption stays: the link is still unused.
            transaction.rollback().await?;
            self.insert_audit_alone(audit.denied(error.audit_reason()))
                .await?;
            return Ok(Err(RedeemRefused::Limit(error)));
        }
        token.user_id = Some(user_id);
        let serial = token.serial.clone();
        tokens::Entity::insert(token.into_active_model())
            .exec_without_returning(&transaction)
            .await?;
        super::events::record(
            &transaction,
            &audit,
            crate::domain::events::EventKind::TokenEnrollmentPending,
            &serial,
        )
        .await?;
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(Ok(()))
    }

    /// Revokes a link. A redeemed link whose token is still verify pending loses the token
    /// (deleted with its sealed seed) in the same transaction. Returns whether anything
    /// changed (a revoked or superseded link stays as it is, and so does one whose token is
    /// enrolled).
    pub async fn revoke_otp_link(&self, id: &str, audit: AuditRecord) -> Result<bool, DeviceError> {
        let now = audit.time;
        let transaction = self.db.begin().await?;
        let backend = transaction.get_database_backend();
        // The pending token goes first: deleting it takes its row, so a first code racing
        // this revocation either enrolled it before (then the update below finds an
        // enrolled token and nothing is revoked) or finds it gone.
        transaction
            .execute_raw(statement(
                backend,
                &format!(
                    "DELETE FROM tokens WHERE serial = (SELECT serial FROM \
                     otp_enrollment_links WHERE id = $1 AND state = '{ACTIVE}') \
                     AND verify_state = '{PENDING}' AND verify_deadline > $2"
                ),
                vec![id.into(), now.into()],
            ))
            .await?;
        let revoked = transaction
            .execute_raw(statement(
                backend,
                // Never a link whose token is enrolled: that token is the user's.
                &format!(
                    "UPDATE otp_enrollment_links SET state = '{REVOKED}' \
                     WHERE id = $1 AND state = '{ACTIVE}' AND NOT EXISTS (SELECT 1 FROM tokens \
                     WHERE tokens.serial = otp_enrollment_links.serial \
                     AND tokens.verify_state IS NULL)"
                ),
                vec![id.into()],
            ))
            .await?
            .rows_affected();
        if revoked != 1 {
            transaction.rollback().await?;
            return Ok(false);
        }
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(true)
    }

    /// An audit event in a transaction of its own (a refusal whose work was rolled back).
    pub(super) async fn insert_audit_alone(&self, audit: AuditRecord) -> Result<(), DeviceError> {
        let transaction = self.db.begin().await?;
        Self::insert_audit(&transaction, audit).await?;
        transaction.commit().await?;
        Ok(())
    }
}
