//! Enrollment links: issued by an admin for one user and device type, redeemed once.
use std::time::Duration;

use enroll_shared::proto::device::v1 as pb;
use enroll_shared::proto::policy::v1 as policy_pb;
use enroll_shared::time::to_timestamp;

use super::{Devices, kind_to_proto, register_ask};
use crate::domain::devices::{DeviceKind, LinkSecret, link_state, link_url};
use crate::domain::names::{Realm, UserName};
use crate::error::DeviceError;
use crate::policy_gate::{Ask, Decision, open_response, seal_response};
use crate::store::devices::LinkFilter;
use crate::store::entities::enrollment_links;
use crate::store::tokens::EnrollOutcome;
use crate::token_service::Actor;

/// A validated CreateEnrollmentLink request.
#[derive(Debug, Clone)]
pub struct NewLink {
    pub realm: Realm,
    pub user: UserName,
    pub kind: Option<DeviceKind>,
    pub redirect_url: Option<String>,
    pub ttl: Option<Duration>,
    pub created_by: String,
    pub request_id: Option<String>,
}

impl Devices {
    /// Issues a single-use link. The secret is in the returned URL only.
    #[tracing::instrument(skip_all, fields(realm = %request.realm, user = %request.user))]
    pub async fn create_link(
        &self,
        actor: &Actor,
        request: NewLink,
    ) -> Result<pb::EnrollmentLink, DeviceError> {
        let idempotency = match &request.request_id {
            Some(id) => {
                let cipher = self.cipher.as_deref().ok_or_else(|| {
                    DeviceError::FailedPrecondition(
                        "request_id needs secrets.seed_keys to seal the first response".to_owned(),
                    )
                })?;
                let key = format!("{}|CreateEnrollmentLink|{id}", actor.name);
                if let Some(first) = self.store.find_response(&key).await? {
                    return open_response(cipher, &key, &first);
                }
                Some((key, cipher))
            }
            None => None,
        };
        let ask = Ask::webauthn(
            policy_pb::Action::CreateLink,
            "create_link",
            &request.realm,
            &request.user,
            "",
        );
        let decision = self.gate.decide(actor, &ask).await?;
        let checked = self.link_terms(&decision, &request);
        let (kind, ttl, redirect_url) = match checked {
            Ok(terms) => terms,
            Err(error) => {
                self.gate.deny(actor, &ask, &error).await?;
                return Err(error);
            }
        };
        let secret = LinkSecret::generate(&mut rand::rng());
        let now = self.clock.now();
        let expire_time = now
            + chrono::Duration::from_std(ttl)
                .map_err(|_| DeviceError::invalid("ttl", "too long"))?;
        let link = enrollment_links::Model {
            id: uuid::Uuid::new_v4().to_string(),
            realm: request.realm.to_string(),
            user_name: request.user.to_string(),
            device_type: kind.as_str().to_owned(),
            redirect_url,
            secret_hash: secret.hash(),
            state: link_state::ACTIVE.to_owned(),
            created_by: request.created_by.clone(),
            create_time: now,
            expire_time,
            device_id: None,
        };
        let mut response = link_to_proto(&link, now);
        response.url = link_url(&self.settings.base_url, &secret);
        let mut record = self.gate.record(
            actor,
            "create_link",
            &request.realm,
            Some(&request.user),
            &link.id,
        );
        record.reason = format!(
            "created by {}; device type {}",
            request.created_by,
            kind.as_str()
        );
        let sealed = match idempotency {
            Some((key, cipher)) => Some((key.clone(), seal_response(cipher, &key, &response)?)),
            None => None,
        };
        match self.store.create_link(link, record, sealed.clone()).await? {
            EnrollOutcome::Created => Ok(response),
            EnrollOutcome::Replayed(first) => match (sealed, self.cipher.as_deref()) {
                (Some((key, _)), Some(cipher)) => open_response(cipher, &key, &first),
                _ => Ok(response),
            },
        }
    }

    /// The device type, lifetime and redirect of a new link, within the policy.
    fn link_terms(
        &self,
        decision: &Decision,
        request: &NewLink,
    ) -> Result<(DeviceKind, Duration, String), DeviceError> {
        let policy_kind =
            DeviceKind::parse(&decision.settings.webauthn_device_type).unwrap_or(DeviceKind::Any);
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
        let max_hours = match decision.settings.enrollment_link_ttl_hours {
            0 => 24,
            hours => hours,
        };
        let max = Duration::from_secs(u64::from(max_hours) * 3_600);
        let ttl = match request.ttl {
            None => max,
            Some(ttl) if ttl.is_zero() => {
                return Err(DeviceError::invalid("ttl", "must be positive"));
            }
            Some(ttl) if ttl > max => {
                let policy = decision.decided("enrollment_link_ttl_hours");
                let by = if policy.is_empty() {
                    "the default".to_owned()
                } else {
                    format!("policy {policy}")
                };
                return Err(DeviceError::invalid(
                    "ttl",
                    format!("longer than the {max_hours} h that {by} allows"),
                ));
            }
            Some(ttl) => ttl,
        };
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

    pub async fn list_links(
        &self,
        filter: &LinkFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<pb::EnrollmentLink>, DeviceError> {
        let now = self.clock.now();
        Ok(self
            .store
            .list_links(filter, now, after, limit)
            .await?
            .iter()
            .map(|link| link_to_proto(link, now))
            .collect())
    }

    pub async fn revoke_link(
        &self,
        actor: &Actor,
        id: &str,
        revoked_by: &str,
    ) -> Result<pb::EnrollmentLink, DeviceError> {
        let found = self.link_by_id(id).await?;
        let realm = Realm::parse(&found.realm).map_err(DeviceError::FailedPrecondition)?;
        let user = UserName::parse(&found.user_name).map_err(DeviceError::FailedPrecondition)?;
        self.gate
            .decide(
                actor,
                &Ask::webauthn(policy_pb::Action::Manage, "revoke_link", &realm, &user, id),
            )
            .await?;
        let mut record = self
            .gate
            .record(actor, "revoke_link", &realm, Some(&user), id);
        record.reason = format!("revoked by {revoked_by}");
        let link = self.store.revoke_link(id, record).await?;
        Ok(link_to_proto(&link, self.clock.now()))
    }

    pub(super) async fn link_by_id(
        &self,
        id: &str,
    ) -> Result<enrollment_links::Model, DeviceError> {
        self.store
            .link(id)
            .await?
            .ok_or_else(|| DeviceError::NotFound(format!("enrollment link `{id}`")))
    }

    /// The link behind a secret, if it can still be used.
    pub(super) async fn live_link(
        &self,
        actor: &Actor,
        secret: &LinkSecret,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<enrollment_links::Model, DeviceError> {
        let link = self
            .store
            .link_by_secret_hash(&secret.hash())
            .await?
            .ok_or_else(|| DeviceError::NotFound("enrollment link".to_owned()))?;
        let unusable = match link.state.as_str() {
            link_state::USED => "this enrollment link was already used",
            link_state::REVOKED => "this enrollment link was revoked",
            _ if link.expire_time <= now => "this enrollment link has expired",
            _ => return Ok(link),
        };
        let error = DeviceError::FailedPrecondition(format!(
            "{unusable}; ask your administrator for a new one"
        ));
        // The refusal is audited under the link's id (never its secret).
        if let (Ok(realm), Ok(user)) = (Realm::parse(&link.realm), UserName::parse(&link.user_name))
        {
            self.gate
                .deny(actor, &register_ask(&realm, &user, &link.id), &error)
                .await?;
        }
        Err(error)
    }
}

pub fn link_to_proto(
    link: &enrollment_links::Model,
    now: chrono::DateTime<chrono::Utc>,
) -> pb::EnrollmentLink {
    let state = match link.state.as_str() {
        link_state::USED => pb::LinkState::Used,
        link_state::REVOKED => pb::LinkState::Revoked,
        _ if link.expire_time <= now => pb::LinkState::Expired,
        _ => pb::LinkState::Active,
    };
    pb::EnrollmentLink {
        id: link.id.clone(),
        realm: link.realm.clone(),
        user: link.user_name.clone(),
        device_type: DeviceKind::parse(&link.device_type)
            .map(kind_to_proto)
            .unwrap_or(pb::DeviceType::Unspecified) as i32,
        redirect_url: link.redirect_url.clone(),
        url: String::new(),
        expire_time: Some(to_timestamp(link.expire_time)),
        state: state as i32,
        created_by: link.created_by.clone(),
        create_time: Some(to_timestamp(link.create_time)),
        device_id: link.device_id.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn link_state_shows_expiry() {
        let now = Utc::now();
        let link = enrollment_links::Model {
            id: "l".into(),
            realm: "acme".into(),
            user_name: "alice".into(),
            device_type: "any".into(),
            redirect_url: String::new(),
            secret_hash: "h".into(),
            state: link_state::ACTIVE.into(),
            created_by: "admin".into(),
            create_time: now,
            expire_time: now,
            device_id: None,
        };
        assert_eq!(
            link_to_proto(&link, now).state,
            pb::LinkState::Expired as i32
        );
        assert!(link_to_proto(&link, now).url.is_empty());
    }
}
