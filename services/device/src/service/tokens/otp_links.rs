//! OTP enrollment by one-time link: an admin issues the link (no key material), the person
//! holding it redeems it on the enrollment page (the seed is made then, as a verify-pending
//! token, shown only to the redeeming session), and the first correct code enrolls it.
//! Whoever holds only a link learns nothing: unknown, expired, used, revoked and superseded
//! links (and a wrong identity) answer alike; the audit event keeps the reason.
use std::time::Duration;

use super::verify::FirstCodeError;
use super::*;
use crate::domain::devices::LinkSecret;
use crate::domain::otp_links::OtpLinkFilter;
use crate::domain::otp_links::{
    ACTIVE, FinishedEnrollment, OtpLink, OtpLinkStatus, PendingEnrollment, PinRule,
    VerifiedIdentity, otp_link_url,
};
use crate::domain::verify::EnrollmentState;
use crate::store::otp_links::{OtpLinkRow, RedeemRefused};

/// The one answer a bearer gets for a link that cannot be redeemed, whatever the reason.
/// (NOT_FOUND: "OTP enrollment link not found").
pub const UNUSABLE_LINK: &str = "OTP enrollment link";
/// The one answer for a redemption session that has nothing pending.
/// (NOT_FOUND: "pending OTP enrollment not found").
pub const NO_PENDING_ENROLLMENT: &str = "pending OTP enrollment";

/// Links are scanned in batches of this many when a state filter drops some.
const LIST_BATCH: u64 = 200;

/// A validated CreateOtpEnrollmentLink request.
#[derive(Debug, Clone)]
pub struct NewOtpLink {
    pub realm: Realm,
    pub user: UserName,
    pub parameters: OtpParameters,
    /// "" = the policy's label.
    pub label: String,
    pub description: String,
    pub ttl: Option<Duration>,
    pub created_by: String,
    pub request_id: Option<RequestId>,
}

impl NewOtpLink {
    fn digest(&self) -> Digest {
        let parameters = &self.parameters;
        let ttl = self.ttl.map(|ttl| ttl.as_nanos().to_string());
        Digest::new()
            .text("realm", self.realm.as_str())
            .text("user", self.user.as_str())
            .text("type", parameters.kind.as_str())
            .number("digits", parameters.digits)
            .number("period", parameters.period)
            .text("algorithm", parameters.algorithm.as_str())
            .text("label", &self.label)
            .text("description", &self.description)
            .optional("ttl_ns", ttl.as_deref())
            .text("created_by", &self.created_by)
    }
}

impl Tokens {
    /// Issues a one-time OTP enrollment link; the secret is in the returned URL only.
    #[tracing::instrument(skip_all, fields(realm = %request.realm, user = %request.user))]
    pub async fn create_otp_link(
        &self,
        actor: &Actor,
        request: NewOtpLink,
    ) -> Result<OtpLink, DeviceError> {
        let idempotent = Idempotent::new(
            actor,
            Rpc::CreateOtpEnrollmentLink,
            request.request_id.as_ref(),
            request.digest(),
            Some(self.cipher()?),
        )?;
        if let Some(first) = self.first_response(idempotent.as_ref()).await? {
            return Ok(first);
        }
        let kind = request.parameters.kind.as_str();
        let question = PolicyQuestion::token(
            PolicyAction::Enroll,
            "create_otp_link",
            &request.realm,
            Some(&request.user),
            kind,
            "",
        );
        let decision = self.gate.decide(actor, &question).await?;
        let ttl = match decision
            .link_lifetime(request.ttl)
            .map_err(|problem| DeviceError::invalid("ttl", problem))
            .and_then(|ttl| label_allowed(&decision, &request.label).map(|()| ttl))
        {
            Ok(ttl) => ttl,
            Err(error) => {
                self.gate.deny(actor, &question, &error).await?;
                return Err(error);
            }
        };
        let secret = LinkSecret::generate(&mut rand::rng());
        let now = self.clock.now();
        let expire_time = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .ok_or_else(|| DeviceError::invalid("ttl", "too long"))?;
        let id = uuid::Uuid::new_v4().to_string();
        let row = otp_enrollment_links::Model {
            id: id.clone(),
            realm: request.realm.to_string(),
            user_name: request.user.to_string(),
            token_type: kind.to_owned(),
            digits: i32::from(request.parameters.digits),
            period: request.parameters.period as i32,
            algorithm: request.parameters.algorithm.as_str().to_owned(),
            label: request.label.clone(),
            description: request.description.clone(),
            secret_hash: secret.hash(),
            state: ACTIVE.to_owned(),
            created_by: request.created_by.clone(),
            create_time: now,
            expire_time,
            serial: None,
            session_hash: None,
            redeem_time: None,
            expiry_recorded: false,
        };
        let link = OtpLink {
            url: Some(otp_link_url(&self.enrollment_page, &secret)),
            ..otp_link_of(
                &OtpLinkRow {
                    link: row.clone(),
                    token: None,
                },
                now,
            )?
        };
        let record = self
            .gate
            .record(
                actor,
                "create_otp_link",
                &request.realm,
                Some(&request.user),
                &id,
            )
            .with_reason(format!(
                "created by {}; {kind}, expires {expire_time}",
                request.created_by
            ));
        let superseded = |earlier: &str| {
            self.gate
                .record(
                    actor,
                    "supersede_otp_link",
                    &request.realm,
                    Some(&request.user),
                    earlier,
                )
                .with_reason(format!("superseded by link {id}, unredeemed"))
        };
        let sealed = idempotent
            .as_ref()
            .map(|idempotent| idempotent.seal(&link))
            .transpose()?;
        let seal = move |_: &()| {
            sealed
                .clone()
                .ok_or_else(|| DeviceError::Unavailable("no sealed response".to_owned()))
        };
        let outcome = self
            .store
            .create_otp_link(
                row,
                record,
                superseded,
                idempotent
                    .as_ref()
                    .map(|idempotent| idempotent.for_store(&seal)),
            )
            .await?;
        tracing::info!(link = %id, "OTP enrollment link issued");
        respond(idempotent.as_ref(), outcome, |()| Ok(link))
    }

    /// A page of OTP links ordered by id, optionally only those in `status` now.
    pub async fn list_otp_links(
        &self,
        filter: &OtpLinkFilter,
        status: Option<OtpLinkStatus>,
        page: &PageRequest<String>,
    ) -> Result<Page<OtpLink>, DeviceError> {
        let now = self.clock.now();
        let wanted = page.fetch();
        let mut links = Vec::new();
        let mut after = page.after.clone();
        'scan: loop {
            let batch = if status.is_some() { LIST_BATCH } else { wanted };
            let rows = self
                .store
                .list_otp_links(filter, after.as_deref(), batch)
                .await?;
            let exhausted = (rows.len() as u64) < batch;
            for row in &rows {
                after = Some(row.link.id.clone());
                let link = otp_link_of(row, now)?;
                if status.is_none_or(|status| status == link.status) {
                    links.push(link);
                    if links.len() as u64 >= wanted {
                        break 'scan;
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(Page::cut(links, page.size, |link| link.id.clone()))
    }

    /// Revokes a link (and a verify-pending token made through it). An enrolled token is
    /// the user's: FAILED_PRECONDITION, delete the token instead.
    pub async fn revoke_otp_link(
        &self,
        actor: &Actor,
        id: &str,
        revoked_by: &str,
    ) -> Result<OtpLink, DeviceError> {
        let found = self
            .store
            .otp_link(id)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("OTP enrollment link `{id}`")))?;
        let link = otp_link_of(&found, self.clock.now())?;
        let question = PolicyQuestion::token(
            PolicyAction::Manage,
            "revoke_otp_link",
            &link.realm,
            Some(&link.user),
            link.parameters.kind.as_str(),
            id,
        );
        let mut reason = format!("revoked by {revoked_by}; was {}", link.status.as_str());
        if let Some(note) = self.gate.decide_removal(actor, &question).await? {
            reason = format!("{reason}; {note}");
        }
        let record = self
            .gate
            .record(actor, "revoke_otp_link", &link.realm, Some(&link.user), id)
            .with_reason(reason);
        let changed = self.store.revoke_otp_link(id, record).await?;
        let after = self
            .store
            .otp_link(id)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("OTP enrollment link `{id}`")))?;
        let after = otp_link_of(&after, self.clock.now())?;
        if !changed && after.status == OtpLinkStatus::Enrolled {
            // Checked by the write itself, so a first code racing the revocation cannot
            // leave an enrolled token behind a revoked link.
            return Err(DeviceError::FailedPrecondition(format!(
                "OTP enrollment link `{id}` enrolled token `{}`; delete the token instead",
                after.serial.as_deref().unwrap_or_default()
            )));
        }
        Ok(after)
    }

    /// Redeems a link: after the policy's ENROLL decision (and, with `require_identity`,
    /// the verified identity of the link's user), makes the seed as a verify-pending token
    /// and a redemption session, returned once.
    #[tracing::instrument(skip_all)]
    pub async fn redeem_otp_link(
        &self,
        actor: &Actor,
        secret: &LinkSecret,
        identity: Option<&VerifiedIdentity>,
    ) -> Result<PendingEnrollment, DeviceError> {
        let cipher = self.cipher()?.clone();
        let now = self.clock.now();
        let Some(found) = self.store.otp_link_by_secret_hash(&secret.hash()).await? else {
            return Err(unusable_link());
        };
        let link = otp_link_of(&found, now)?;
        let record = |reason: String| {
            self.gate
                .record(
                    actor,
                    "redeem_otp_link",
                    &link.realm,
                    Some(&link.user),
                    &link.id,
                )
                .denied(reason)
        };
        if link.status != OtpLinkStatus::Issued {
            self.gate
                .audit(record(format!("link is {}", link.status.as_str())))
                .await?;
            return Err(unusable_link());
        }
        let kind = link.parameters.kind.as_str();
        let question = PolicyQuestion::token(
            PolicyAction::Enroll,
            "redeem_otp_link",
            &link.realm,
            Some(&link.user),
            kind,
            "",
        );
        let decision = self.gate.decide(actor, &question).await?;
        let settings = &decision.settings;
        if settings.require_identity {
            let refused = match identity {
                None => Some("require_identity: no verified identity".to_owned()),
                Some(who) if who.realm != link.realm || who.user != link.user => Some(format!(
                    "require_identity: signed in as {}/{}, not the link's user",
                    who.realm, who.user
                )),
                Some(_) => None,
            };
            if let Some(reason) = refused {
                self.gate.audit(record(reason)).await?;
                return Err(unusable_link());
            }
        }
        if let Err(error) = label_unchanged(&decision, &link.label) {
            self.gate.deny(actor, &question, &error).await?;
            return Err(error);
        }
        let (serial, seed) = {
            let mut rng = rand::rng();
            (
                new_serial(link.parameters.kind, &mut rng),
                new_seed(link.parameters.algorithm, &mut rng),
            )
        };
        let label = if link.label.is_empty() {
            render_serial(&settings.token_label, &serial)
        } else {
            link.label.clone()
        };
        let (seed_key_id, sealed_seed) = cipher
            .encrypt(&seed, &serial)
            .map_err(|error| DeviceError::FailedPrecondition(error.to_string()))?;
        let window = chrono::Duration::minutes(i64::from(settings.otp_verify_window_minutes));
        let deadline = now.checked_add_signed(window).unwrap_or(now);
        let attempts = i32::try_from(settings.otp_verify_attempts).unwrap_or(1);
        let row = tokens::Model {
            serial: serial.clone(),
            realm: link.realm.to_string(),
            user_id: None,
            token_type: kind.to_owned(),
            state: TokenState::Enabled.into(),
            seed_key_id,
            seed: sealed_seed,
            digits: i32::from(link.parameters.digits),
            period: link.parameters.period as i32,
            algorithm: link.parameters.algorithm.as_str().to_owned(),
            counter: 0,
            pin_hash: None,
            failure_count: 0,
            label,
            description: link.description.clone(),
            create_time: now,
            expire_time: None,
            locked_until: None,
            replaced_by: None,
            hardware: false,
            verify_state: Some(VERIFY_PENDING.to_owned()),
            verify_deadline: Some(deadline),
            verify_attempts_left: Some(attempts),
        };
        let session = LinkSecret::generate(&mut rand::rng());
        let audit = self
            .gate
            .record(actor, "redeem_otp_link", &link.realm, Some(&link.user), &link.id)
            .with_reason(format!(
                "redeemed: token {serial} verify pending until {deadline}, {attempts} wrong codes allowed"
            ));
        let redeemed = self
            .store
            .redeem_otp_link(
                &link.id,
                &session.hash(),
                &link.realm,
                &link.user,
                row.clone(),
                &decision.limits(),
                audit,
            )
            .await?;
        match redeemed {
            Ok(()) => {}
            Err(RedeemRefused::Limit(limit)) => return self.metrics.limits(Err(limit)),
            Err(RedeemRefused::LinkGone) => {
                // A racing redemption (or the link's end) got there first.
                self.gate
                    .audit(record("link was redeemed or ended meanwhile".to_owned()))
                    .await?;
                return Err(unusable_link());
            }
        }
        tracing::info!(serial = %serial, "OTP enrollment link redeemed: token verify pending");
        let mut pending = self.pending(&row, &link, &seed, settings)?;
        pending.session = Some(session);
        Ok(pending)
    }

    /// The redeemed enrollment again, for its session only, while it waits for its code.
    pub async fn resume_otp_enrollment(
        &self,
        actor: &Actor,
        session: &LinkSecret,
    ) -> Result<PendingEnrollment, DeviceError> {
        let (token, link) = self.pending_of(session).await?;
        let decision = self
            .gate
            .decide_unaudited(
                actor,
                &PolicyQuestion::token(
                    PolicyAction::Enroll,
                    "resume_otp_enrollment",
                    &link.realm,
                    Some(&link.user),
                    &token.token_type,
                    &token.serial,
                ),
            )
            .await?;
        let seed = self
            .cipher()?
            .decrypt(&token.seed_key_id, &token.seed, &token.serial)
            .map_err(|_| no_pending_enrollment())?;
        self.pending(&token, &link, &seed, &decision.settings)
    }

    /// Completes a redeemed enrollment with its first code (and the PIN step).
    #[tracing::instrument(skip_all)]
    pub async fn finish_otp_enrollment(
        &self,
        actor: &Actor,
        session: &LinkSecret,
        code: String,
        pin: Option<String>,
    ) -> Result<FinishedEnrollment, DeviceError> {
        let (token, link) = self.pending_of(session).await?;
        let serial = token.serial.clone();
        let question = PolicyQuestion::token(
            PolicyAction::Enroll,
            "finish_otp_enrollment",
            &link.realm,
            Some(&link.user),
            &token.token_type,
            &serial,
        );
        let decision = self.gate.decide(actor, &question).await?;
        if let Err(error) = label_unchanged(&decision, &link.label) {
            self.gate.deny(actor, &question, &error).await?;
            return Err(error);
        }
        let settings = &decision.settings;
        let audit = self.gate.record(
            actor,
            "finish_otp_enrollment",
            &link.realm,
            Some(&link.user),
            &serial,
        );
        let (pin_hash, random_pin) = if let Some(length) = settings.otp_pin_random {
            let pin = random_string(
                &mut rand::rng(),
                length as usize,
                &settings.otp_pin_random_content,
            );
            let hash = self
                .seal_pin(&pin, settings.otp_pin_encrypt, &serial)
                .await?;
            (Some(hash), pin)
        } else {
            match pin.filter(|pin| !pin.is_empty()) {
                None if settings.otp_pin_minlength > 0 => {
                    let error = DeviceError::invalid(
                        "pin",
                        format!(
                            "required: at least {} characters{}",
                            settings.otp_pin_minlength,
                            by_policy(&decision.decided("otp_pin_minlength"))
                        ),
                    );
                    self.gate
                        .audit(audit.clone().denied(error.audit_reason()))
                        .await?;
                    return Err(error);
                }
                None => (None, String::new()),
                Some(pin) => {
                    self.gate
                        .check_pin(actor, audit.clone(), &link.realm, &link.user, &pin)
                        .await?;
                    let hash = self
                        .seal_pin(&pin, settings.otp_pin_encrypt, &serial)
                        .await?;
                    (Some(hash), String::new())
                }
            }
        };
        let now = self.clock.now();
        let serial = Serial::parse(&serial)
            .map_err(|problem| DeviceError::corrupt("OTP link serial", problem))?;
        match self
            .first_code(&serial, &token, code, pin_hash, now, audit)
            .await
        {
            Ok(()) => {}
            // Raced to the end (another finish, a revocation, or the window closed):
            // nothing pending.
            Err(
                FirstCodeError::NotPending(_) | FirstCodeError::Refused(DeviceError::NotFound(_)),
            ) => {
                return Err(no_pending_enrollment());
            }
            Err(FirstCodeError::Refused(error)) => return Err(error),
        }
        let after = self.existing(&serial).await?;
        Ok(FinishedEnrollment {
            token: convert::token(&after.token, Some(&link.user), self.clock.now())?,
            pin: random_pin,
        })
    }

    /// The link and verify-pending token of a redemption session, or the one NOT_FOUND.
    async fn pending_of(
        &self,
        session: &LinkSecret,
    ) -> Result<(tokens::Model, OtpLink), DeviceError> {
        let now = self.clock.now();
        let found = self
            .store
            .otp_link_by_session_hash(&session.hash())
            .await?
            .ok_or_else(no_pending_enrollment)?;
        let link = otp_link_of(&found, now)?;
        match (found.token, link.status) {
            (Some(token), OtpLinkStatus::VerifyPending) => Ok((token, link)),
            _ => Err(no_pending_enrollment()),
        }
    }

    /// What the redeeming session is shown for `token` with `seed`.
    fn pending(
        &self,
        token: &tokens::Model,
        link: &OtpLink,
        seed: &[u8],
        settings: &crate::domain::decision::Settings,
    ) -> Result<PendingEnrollment, DeviceError> {
        let now = self.clock.now();
        let issuer = render_serial(&settings.token_issuer, &token.serial);
        let otpauth_uri = ProvisioningUri {
            parameters: link.parameters,
            seed,
            label: &token.label,
            issuer: &issuer,
            counter: 0,
        }
        .to_string();
        let qr_png = qr_png(&otpauth_uri)
            .map_err(|message| DeviceError::FailedPrecondition(message.to_owned()))?;
        Ok(PendingEnrollment {
            session: None,
            token: convert::token(token, Some(&link.user), now)?,
            realm: link.realm.clone(),
            user: link.user.clone(),
            otpauth_uri,
            secret_base32: base32(seed),
            qr_png,
            verify_deadline: token.verify_deadline.unwrap_or(now),
            attempts_left: token
                .verify_attempts_left
                .and_then(|left| u32::try_from(left).ok())
                .unwrap_or(0),
            pin: PinRule {
                required: settings.otp_pin_random.is_none() && settings.otp_pin_minlength > 0,
                random: settings.otp_pin_random.is_some(),
                min_length: settings.otp_pin_minlength,
            },
        })
    }
}

/// The link as admins see it, its status computed at `now`.
pub(crate) fn otp_link_of(row: &OtpLinkRow, now: DateTime<Utc>) -> Result<OtpLink, DeviceError> {
    let link = &row.link;
    let corrupt =
        |problem: String| DeviceError::corrupt(format!("OTP link `{}`", link.id), problem);
    let kind = TokenKind::parse(&link.token_type).ok_or_else(|| corrupt("token type".into()))?;
    let algorithm =
        HashAlgorithm::parse(&link.algorithm).ok_or_else(|| corrupt("algorithm".into()))?;
    let parameters = OtpParameters::new(
        kind,
        u32::try_from(link.digits).unwrap_or(0),
        u64::try_from(link.period).unwrap_or(0),
        algorithm,
    )
    .map_err(|(field, problem)| corrupt(format!("{field}: {problem}")))?;
    let token_state = row.token.as_ref().map(|token| {
        EnrollmentState::of(token.verify_state.as_deref(), token.verify_deadline, now)
    });
    Ok(OtpLink {
        id: link.id.clone(),
        realm: Realm::parse(&link.realm).map_err(|problem| corrupt(problem.to_string()))?,
        user: UserName::parse(&link.user_name).map_err(|problem| corrupt(problem.to_string()))?,
        parameters,
        label: link.label.clone(),
        description: link.description.clone(),
        url: None,
        create_time: link.create_time,
        expire_time: link.expire_time,
        created_by: link.created_by.clone(),
        status: OtpLinkStatus::of(
            &link.state,
            link.serial.is_some(),
            link.expire_time,
            token_state,
            now,
        ),
        serial: link.serial.clone(),
        redeem_time: link.redeem_time,
        verify_deadline: row.token.as_ref().and_then(|token| token.verify_deadline),
    })
}

fn unusable_link() -> DeviceError {
    DeviceError::NotFound(UNUSABLE_LINK.to_owned())
}

fn no_pending_enrollment() -> DeviceError {
    DeviceError::NotFound(NO_PENDING_ENROLLMENT.to_owned())
}

fn by_policy(policy: &str) -> String {
    if policy.is_empty() {
        String::new()
    } else {
        format!(" (policy {policy})")
    }
}

/// A label of the caller's is refused when a policy sets `tokenlabel`.
fn label_allowed(decision: &Decision, label: &str) -> Result<(), DeviceError> {
    let policy = decision.decided("token_label");
    if label.is_empty() || policy.is_empty() {
        return Ok(());
    }
    Err(DeviceError::invalid(
        "label",
        format!("policy {policy} sets the token label; leave label empty"),
    ))
}

/// At redemption and the first code: the label checked at creation still holds.
fn label_unchanged(decision: &Decision, label: &str) -> Result<(), DeviceError> {
    label_allowed(decision, label).map_err(|_| {
        DeviceError::FailedPrecondition(format!(
            "the policy changed since this link was made: policy {} now sets the token label; ask for a new link",
            decision.decided("token_label")
        ))
    })
}
