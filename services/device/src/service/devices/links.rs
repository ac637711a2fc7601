//! Enrollment links: issued by an admin for one user and device type, redeemed once.
use enroll_shared::paging::{Page, PageRequest};

use super::*;
use crate::domain::decision::Decision;
use crate::domain::devices::LinkFilter;
use crate::domain::devices::{Link, LinkState, LinkStatus, link_url};
use crate::service::idempotency::{Digest, Idempotent, RequestId, Rpc, respond};
use crate::service::metrics::LinkChange;
use crate::store::entities::enrollment_links;
use crate::store::idempotency::Outcome;

/// A validated CreateEnrollmentLink request.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub realm: Realm,
    pub user: UserName,
    pub kind: Option<DeviceKind>,
    pub redirect_url: Option<String>,
    pub ttl: Option<Duration>,
    pub created_by: String,
    pub request_id: Option<RequestId>,
}

impl NewLink {
    /// What a request id is bound to: every parameter of the link.
    fn digest(&self) -> Digest {
        let ttl = self.ttl.map(|ttl| ttl.as_nanos().to_string());
        Digest::new()
            .text("realm", self.realm.as_str())
            .text("user", self.user.as_str())
            .optional("device_type", self.kind.map(DeviceKind::as_str))
            .optional("redirect_url", self.redirect_url.as_deref())
            .optional("ttl_ns", ttl.as_deref())
            .text("created_by", &self.created_by)
    }
}

impl Devices {
    /// Issues a single-use link. The secret is in the returned URL only.
    #[tracing::instrument(skip_all, fields(realm = %request.realm, user = %request.user))]
    pub async fn create_link(&self, actor: &Actor, request: NewLink) -> Result<Link, DeviceError> {
        let idempotent = Idempotent::new(
            actor,
            Rpc::CreateEnrollmentLink,
            request.request_id.as_ref(),
            request.digest(),
            self.cipher.as_deref(),
        )?;
        if let Some(idempotent) = &idempotent
            && let Some(first) = idempotent.first(
                self.store
                    .find_response(idempotent.key(), self.now())
                    .await?,
            )?
        {
            return Ok(first);
        }
        let question = PolicyQuestion::webauthn(
            PolicyAction::CreateLink,
            "create_link",
            &request.realm,
            &request.user,
            "",
        );
        let decision = self.gate.decide(actor, &question).await?;
        let (kind, ttl, redirect_url) = match self.link_terms(&decision, &request) {
            Ok(terms) => terms,
            Err(error) => {
                self.gate.deny(actor, &question, &error).await?;
                return Err(error);
            }
        };
        let secret = LinkSecret::generate(&mut rand::rng());
        let now = self.now();
        let expire_time = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| DeviceError::invalid("ttl", "too long"))?;
        let link = Link {
            id: uuid::Uuid::new_v4().to_string(),
            realm: request.realm.clone(),
            user: request.user.clone(),
            kind,
            redirect_url,
            url: Some(link_url(&self.settings.base_url, &secret)),
            expire_time,
            status: LinkStatus::Active,
            created_by: request.created_by.clone(),
            create_time: now,
            device_id: None,
        };
        let row = enrollment_links::Model {
            id: link.id.clone(),
            realm: link.realm.to_string(),
            user_name: link.user.to_string(),
            device_type: kind.into(),
            redirect_url: link.redirect_url.clone(),
            secret_hash: secret.hash(),
            state: LinkState::Active.into(),
            created_by: link.created_by.clone(),
            create_time: now,
            expire_time,
            device_id: None,
            expiry_recorded: false,
        };
        let record = self
            .gate
            .record(
                actor,
                "create_link",
                &request.realm,
                Some(&request.user),
                &link.id,
            )
            .with_reason(format!(
                "created by {}; device type {}",
                request.created_by,
                kind.as_str()
            ));
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
            .create_link(
                row,
                record,
                idempotent
                    .as_ref()
                    .map(|idempotent| idempotent.for_store(&seal)),
            )
            .await?;
        if matches!(outcome, Outcome::Done(_)) {
            self.metrics.link(LinkChange::Created);
        }
        respond(idempotent.as_ref(), outcome, |()| Ok(link))
    }

    /// The device type, lifetime and redirect of a new link, within the policy.
    fn link_terms(
        &self,
        decision: &Decision,
        request: &NewLink,
    ) -> Result<(DeviceKind, Duration, String), DeviceError> {
        let policy_kind = decision.settings.webauthn_device_type;
        let kind = request.kind.unwrap_or(policy_kind);
        if !kind.satisfies(policy_kind) {
            return Err(DeviceError::Denied {
                action: "create_link",
                code: "DEVICE_TYPE_NOT_ALLOWED".to_owned(),
                message: format!(
                    "the policy requires {} devices for this user",
                    policy_kind.as_str()
                ),
                policy: decision.decided("webauthn_device_type"),
            });
        }
        let ttl = decision
            .link_lifetime(request.ttl)
            .map_err(|problem| DeviceError::invalid("ttl", problem))?;
        let redirect_url = match &request.redirect_url {
            Some(raw) => self
                .settings
                .redirects
                .check(raw)
                .map_err(|message| DeviceError::invalid("redirect_url", message))?,
            None => String::new(),
        };
        Ok((kind, ttl, redirect_url))
    }

    /// A page of links ordered by id.
    pub async fn list_links(
        &self,
        filter: &LinkFilter,
        page: &PageRequest<String>,
    ) -> Result<Page<Link>, DeviceError> {
        let links = self
            .store
            .list_links(filter, self.now(), page.after.as_deref(), page.fetch())
            .await?;
        Ok(Page::cut(links, page.size, |link| link.id.clone()))
    }

    pub async fn revoke_link(
        &self,
        actor: &Actor,
        id: &str,
        revoked_by: &str,
    ) -> Result<Link, DeviceError> {
        let found = self.link_by_id(id).await?;
        let question = PolicyQuestion::webauthn(
            PolicyAction::Manage,
            "revoke_link",
            &found.realm,
            &found.user,
            id,
        );
        let mut reason = format!("revoked by {revoked_by}");
        if let Some(note) = self.gate.decide_removal(actor, &question).await? {
            reason = format!("{reason}; {note}");
        }
        let record = self
            .gate
            .record(actor, "revoke_link", &found.realm, Some(&found.user), id)
            .with_reason(reason);
        let revoked = self.store.revoke_link(id, record).await?;
        // Revoking a revoked link again changes nothing (and is not counted).
        if matches!(found.status, LinkStatus::Active | LinkStatus::Expired) {
            self.metrics.link(LinkChange::Revoked);
        }
        Ok(revoked)
    }

    pub(super) async fn link_by_id(&self, id: &str) -> Result<Link, DeviceError> {
        self.store
            .link(id, self.now())
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("enrollment link `{id}`")))
    }

    /// The link behind a secret, if it can still be used.
    pub(super) async fn live_link(
        &self,
        actor: &Actor,
        secret: &LinkSecret,
        now: DateTime<Utc>,
    ) -> Result<Link, DeviceError> {
        let link = self
            .store
            .link_by_secret_hash(&secret.hash(), now)
            .await?
            .ok_or_else(|| DeviceError::NotFound("enrollment link".to_owned()))?;
        let unusable = match link.status {
            LinkStatus::Used => "this enrollment link was already used",
            LinkStatus::Revoked => "this enrollment link was revoked",
            LinkStatus::Expired => {
                // Links expire by time alone; this is when one is seen to have expired.
                self.metrics.link(LinkChange::Expired);
                "this enrollment link has expired"
            }
            LinkStatus::Active => return Ok(link),
        };
        let error = DeviceError::FailedPrecondition(format!(
            "{unusable}; ask your administrator for a new one"
        ));
        // The refusal is audited under the link's id (never its secret).
        self.gate
            .deny(
                actor,
                &register_question(&link.realm, &link.user, &link.id),
                &error,
            )
            .await?;
        Err(error)
    }
}
