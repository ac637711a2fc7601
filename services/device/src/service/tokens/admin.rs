//! An admin's changes to existing tokens: assign, enable, disable, unassign, delete, set
//! the PIN. Each returns the token after the change (a deleted token as it was).
use super::*;
use crate::domain::tokens::TokenChange;
use crate::store::idempotency::SealedResponse;
use crate::store::token_changes::ActiveLimit;

impl Tokens {
    /// Assigns a pool token to a user of the token's realm.
    #[tracing::instrument(skip_all, fields(serial = %serial, realm = %realm))]
    pub async fn assign(
        &self,
        actor: &Actor,
        serial: &Serial,
        realm: &Realm,
        user: &UserName,
        code: Option<String>,
        request_id: Option<&RequestId>,
    ) -> Result<Token, DeviceError> {
        // Whether a code came, never the code: a retry after success carries a used one.
        let digest = Digest::new()
            .text("serial", serial.as_str())
            .text("realm", realm.as_str())
            .text("user", user.as_str())
            .number("code", u8::from(code.is_some()));
        let idempotent = Idempotent::new(
            actor,
            Rpc::AssignToken,
            request_id,
            digest,
            self.cipher.as_deref(),
        )?;
        if let Some(first) = self.first_response(idempotent.as_ref()).await? {
            return Ok(first);
        }
        let row = self.existing(serial).await?;
        let decision = self
            .gate
            .decide(
                actor,
                &PolicyQuestion::token(
                    PolicyAction::Assign,
                    "assign_token",
                    realm,
                    Some(user),
                    &row.token.token_type,
                    serial.as_str(),
                ),
            )
            .await?;
        // Assigning moves a token within its realm: the realm count does not change.
        let mut limits = decision.limits();
        limits.per_realm = None;
        let audit = self
            .gate
            .record(actor, "assign_token", realm, Some(user), serial.as_str());
        // Possession proof: a code the token shows now, used up with the assignment.
        let factor = match code {
            Some(code) => match self.possession_factor(&row.token, code).await? {
                Some(factor) => Some(factor),
                None => {
                    self.gate
                        .audit(audit.denied("wrong code: possession not proven"))
                        .await?;
                    return Err(DeviceError::Refused {
                        reason: "WRONG_CODE",
                        message: format!("code: not a current code of token `{serial}`"),
                    });
                }
            },
            None => None,
        };
        let now = self.clock.now();
        let view = |after: &tokens::Model| convert::token(after, Some(user), now);
        let seal = |after: &tokens::Model| seal(idempotent.as_ref(), &view(after)?);
        let outcome = self.metrics.limits(
            self.store
                .assign(
                    serial.as_str(),
                    realm,
                    user,
                    factor,
                    &limits,
                    audit,
                    idempotent
                        .as_ref()
                        .map(|idempotent| idempotent.for_store(&seal)),
                )
                .await,
        )?;
        respond(idempotent.as_ref(), outcome, |after| view(&after))
    }

    /// Enables, disables, unassigns or deletes a token.
    #[tracing::instrument(skip_all, fields(serial = %serial))]
    pub async fn manage(
        &self,
        actor: &Actor,
        serial: &Serial,
        change: TokenChange,
        request_id: Option<&RequestId>,
    ) -> Result<Token, DeviceError> {
        let (action, rpc) = match change {
            TokenChange::Enable => ("enable_token", Rpc::EnableToken),
            TokenChange::Disable => ("disable_token", Rpc::DisableToken),
            TokenChange::Unassign => ("unassign_token", Rpc::UnassignToken),
            TokenChange::Delete => ("delete_token", Rpc::DeleteToken),
            TokenChange::SetPin(_) => ("set_pin", Rpc::SetPin),
        };
        let digest = Digest::new().text("serial", serial.as_str());
        let idempotent = Idempotent::new(actor, rpc, request_id, digest, self.cipher.as_deref())?;
        if let Some(first) = self.first_response(idempotent.as_ref()).await? {
            return Ok(first);
        }
        let row = match self.existing(serial).await {
            // A racing first request with this id may have deleted it meanwhile.
            Err(DeviceError::NotFound(message)) => {
                return match self.first_response(idempotent.as_ref()).await? {
                    Some(first) => Ok(first),
                    None => Err(DeviceError::NotFound(message)),
                };
            }
            found => found?,
        };
        let realm = realm_of(&row.token)?;
        let question = PolicyQuestion::token(
            PolicyAction::Manage,
            action,
            &realm,
            row.user.as_ref(),
            &row.token.token_type,
            serial.as_str(),
        );
        let mut audit = self
            .gate
            .record(actor, action, &realm, row.user.as_ref(), serial.as_str());
        let mut active_limit = None;
        if removes_access(&change) {
            // An admin can always cut access: see `PolicyGate::decide_removal`.
            if let Some(note) = self.gate.decide_removal(actor, &question).await? {
                audit = audit.with_reason(note);
            }
        } else {
            let decision = self.gate.decide(actor, &question).await?;
            if matches!(change, TokenChange::Enable) {
                active_limit = decision.limits().active_per_user;
            }
        }
        let owner = row.user.clone();
        let active_limit = match (&owner, active_limit) {
            (Some(user), Some(limit)) => Some(ActiveLimit {
                realm: &realm,
                user,
                limit,
            }),
            _ => None,
        };
        let unassigning = matches!(change, TokenChange::Unassign);
        self.change(
            serial,
            change,
            active_limit,
            audit,
            row,
            idempotent.as_ref(),
        )
        .await
        .inspect(|_| {
            if unassigning {
                self.pool_index.invalidate(&realm);
            }
        })
    }

    /// Sets an assigned token's PIN after checking it against the user's PIN rules.
    #[tracing::instrument(skip_all, fields(serial = %serial))]
    pub async fn set_pin(
        &self,
        actor: &Actor,
        serial: &Serial,
        pin: String,
        request_id: Option<&RequestId>,
    ) -> Result<Token, DeviceError> {
        // The PIN is part of the request: the stored digest is keyed, so it cannot be
        // searched for the PIN.
        let digest = Digest::new()
            .text("serial", serial.as_str())
            .text("pin", &pin);
        let idempotent = Idempotent::new(
            actor,
            Rpc::SetPin,
            request_id,
            digest,
            self.cipher.as_deref(),
        )?;
        if let Some(first) = self.first_response(idempotent.as_ref()).await? {
            return Ok(first);
        }
        let row = self.existing(serial).await?;
        let realm = realm_of(&row.token)?;
        let Some(user) = row.user.clone() else {
            return Err(DeviceError::FailedPrecondition(format!(
                "token `{serial}` is in the pool: assign it before setting a PIN"
            )));
        };
        let record = self
            .gate
            .record(actor, "set_pin", &realm, Some(&user), serial.as_str());
        self.gate
            .check_pin(actor, record.clone(), &realm, &user, &pin)
            .await?;
        let decision = self
            .gate
            .decide(
                actor,
                &PolicyQuestion::token(
                    PolicyAction::SetPin,
                    "set_pin",
                    &realm,
                    Some(&user),
                    &row.token.token_type,
                    serial.as_str(),
                ),
            )
            .await?;
        let sealed = self
            .seal_pin(&pin, decision.settings.otp_pin_encrypt, serial.as_str())
            .await?;
        self.change(
            serial,
            TokenChange::SetPin(sealed),
            None,
            record,
            row,
            idempotent.as_ref(),
        )
        .await
    }

    /// Applies a change in the store; the response is the token after it (unowned after an
    /// unassignment, as it was before a deletion).
    async fn change(
        &self,
        serial: &Serial,
        change: TokenChange,
        active_limit: Option<ActiveLimit<'_>>,
        audit: crate::domain::audit::AuditRecord,
        before: TokenRow,
        idempotent: Option<&Idempotent<'_>>,
    ) -> Result<Token, DeviceError> {
        let unassigning = matches!(change, TokenChange::Unassign);
        let owner = if unassigning { None } else { before.user };
        let view = |after: &Option<tokens::Model>| {
            convert::token(
                after.as_ref().unwrap_or(&before.token),
                owner.as_ref(),
                self.clock.now(),
            )
        };
        let seal = |after: &Option<tokens::Model>| seal(idempotent, &view(after)?);
        let outcome = self.metrics.limits(
            self.store
                .change(
                    serial.as_str(),
                    change,
                    active_limit,
                    audit,
                    idempotent.map(|idempotent| idempotent.for_store(&seal)),
                )
                .await,
        )?;
        respond(idempotent, outcome, |after| view(&after))
    }
}

/// Disabling, unassigning and deleting remove access and are never blocked by the policy
/// service; enabling and setting a PIN grant it and fail closed.
fn removes_access(change: &TokenChange) -> bool {
    match change {
        TokenChange::Disable | TokenChange::Unassign | TokenChange::Delete => true,
        TokenChange::Enable | TokenChange::SetPin(_) => false,
    }
}

/// Seals a response for storage (only ever called when the request has an id).
pub(super) fn seal<R: serde::Serialize>(
    idempotent: Option<&Idempotent<'_>>,
    response: &R,
) -> Result<SealedResponse, DeviceError> {
    idempotent
        .ok_or_else(|| DeviceError::Unavailable("no request id to seal under".to_owned()))?
        .seal(response)
}
