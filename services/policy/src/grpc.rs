//! The gRPC edge: decode and validate requests into domain types, call one use case, map
//! errors through `From<PolicyError> for Status`.
use enroll_shared::auth::caller;
use enroll_shared::paging::{PageKey, PageRequest};
use enroll_shared::proto::policy::v1 as pb;
use enroll_shared::time::to_timestamp;
use pb::policy_service_server::PolicyService;
use tonic::{Request, Response, Status};

use crate::domain::policy::PolicySpec;
use crate::error::PolicyError;
use crate::service::{Policies, PolicyView, SetWatch};
use crate::store::{PolicyChange, PolicyStore};
use crate::watchers::{WatchLease, Watchers};
use enroll_policy_engine::proto;
use enroll_shared::limits::InFlight;

pub struct PolicyGrpc<S> {
    policies: Policies<S>,
    watchers: Watchers,
}

impl<S> PolicyGrpc<S> {
    pub fn new(policies: Policies<S>, watchers: Watchers) -> Self {
        Self { policies, watchers }
    }
}

fn spec_from_proto(policy: Option<pb::Policy>) -> Result<PolicySpec, PolicyError> {
    let policy = policy.ok_or_else(|| PolicyError::invalid("policy", "required"))?;
    Ok(proto::spec_from_proto(policy))
}

fn view_to_proto(view: PolicyView) -> pb::Policy {
    let stored = view.policy;
    pb::Policy {
        etag: stored.etag,
        create_time: Some(to_timestamp(stored.create_time)),
        update_time: Some(to_timestamp(stored.update_time)),
        conflicts: view
            .conflicts
            .into_iter()
            .map(|conflict| pb::PolicyConflict {
                action: conflict.action.to_string(),
                message: conflict.to_string(),
                other_policy: conflict.second,
            })
            .collect(),
        ..proto::spec_to_proto(stored.spec)
    }
}

fn change_to_proto(change: PolicyChange) -> pb::PolicyChange {
    pb::PolicyChange {
        event_id: change.event_id().to_string(),
        id: change.id,
        policy_name: change.policy_name,
        change: change.change.as_str().to_owned(),
        actor: change.actor,
        change_time: Some(to_timestamp(change.change_time)),
        before: change.before.map(proto::spec_to_proto),
        after: change.after.map(proto::spec_to_proto),
    }
}

/// A free-text field, trimmed: INVALID_ARGUMENT naming it when it holds a NUL character
/// (PostgreSQL cannot store one) or more than `max` characters.
fn text(field: &str, raw: &str, max: usize) -> Result<String, PolicyError> {
    let value = raw.trim();
    enroll_shared::text::check_storable(value, max)
        .map_err(|message| PolicyError::invalid(field, message))?;
    Ok(value.to_owned())
}

/// A policy name to look up: a NUL is refused (it would reach the database), anything
/// else that is no policy's name is simply not found.
fn lookup_name(raw: &str) -> Result<String, PolicyError> {
    text("name", raw, 1024)
}

/// The actor of a change (recorded in the history): always the API key's name, which the
/// caller cannot choose; a caller-supplied actor (the console's user, say) is free text the
/// key's holder could set to anything, so it only ever stands beside the name:
/// `<key name> (for <actor>)`.
fn actor<T>(request: &Request<T>, explicit: &str) -> Result<String, Status> {
    let explicit = text("actor", explicit, 128)?;
    Ok(recorded_actor(&caller(request)?.name, &explicit))
}

fn recorded_actor(key_name: &str, explicit: &str) -> String {
    if explicit.is_empty() {
        key_name.to_owned()
    } else {
        format!("{key_name} (for {explicit})")
    }
}

fn page<K: PageKey>(page_size: u32, page_token: &str) -> Result<PageRequest<K>, PolicyError> {
    PageRequest::parse(page_size, page_token)
        .map_err(|error| PolicyError::invalid(error.field, error.message))
}

/// How often WatchPolicySet repeats the state unchanged (the version only: a few bytes), so
/// a watcher can tell a quiet stream from a dead one. Changes go out at once.
const WATCH_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

type PolicySetStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PolicySetState, Status>> + Send>>;

/// The published state now, then on every change and every heartbeat, until shutdown. The
/// policies themselves go out with the first served state and with every new version (never
/// with a heartbeat of a version this stream already carried): a device service keeps them
/// to decide from when this service cannot answer.
/// The stream ends at `ends_at` (the watcher subscribes again) and frees `lease` then.
fn policy_set_stream(
    watch: SetWatch,
    lease: WatchLease,
    ends_at: tokio::time::Instant,
) -> PolicySetStream {
    let mut heartbeat = tokio::time::interval(WATCH_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The version whose policies this stream sent last.
    let sent: Option<i64> = None;
    // The interval's first tick is immediate: the current state goes out at once.
    let stream = futures::stream::unfold(
        (watch, heartbeat, sent, lease),
        move |(mut watch, mut heartbeat, mut sent, lease)| async move {
            tokio::select! {
                changed = watch.published.changed() => changed.ok()?,
                _ = heartbeat.tick() => {}
                _ = tokio::time::sleep_until(ends_at) => return None,
            }
            let state = *watch.published.borrow_and_update();
            if state.closing {
                return None;
            }
            let set = (state.serving && sent != Some(state.version))
                .then(|| watch.served_set(state.version))
                .flatten();
            let mut message = pb::PolicySetState {
                version: state.version,
                serving: state.serving,
                client_ip_used: state.client_ip_used,
                ..Default::default()
            };
            if let Some(set) = set {
                message.includes_policies = true;
                message.policies = set
                    .specs()
                    .iter()
                    .cloned()
                    .map(proto::spec_to_proto)
                    .collect();
                sent = Some(state.version);
            }
            Some((Ok(message), (watch, heartbeat, sent, lease)))
        },
    );
    Box::pin(stream)
}

#[tonic::async_trait]
impl<S: PolicyStore> PolicyService for PolicyGrpc<S> {
    type WatchPolicySetStream = PolicySetStream;

    #[tracing::instrument(skip_all)]
    async fn watch_policy_set(
        &self,
        request: Request<pb::WatchPolicySetRequest>,
    ) -> Result<Response<Self::WatchPolicySetStream>, Status> {
        let key = caller(&request)?.name.clone();
        let in_flight = InFlight::of(&request);
        let lease = self.watchers.admit(&key, in_flight)?;
        // The limits layer's deadline ends at the first message; the stream's own ends at
        // the client's deadline or the configured life, whichever comes first.
        let life = in_flight
            .and_then(InFlight::client_deadline)
            .map_or(self.watchers.config().max_stream(), |client| {
                client.min(self.watchers.config().max_stream())
            });
        let ends_at = tokio::time::Instant::now() + life;
        Ok(Response::new(policy_set_stream(
            self.policies.watch_set(),
            lease,
            ends_at,
        )))
    }

    #[tracing::instrument(skip_all, fields(realm = %request.get_ref().realm, action = request.get_ref().action))]
    async fn evaluate_enrollment(
        &self,
        request: Request<pb::EvaluateEnrollmentRequest>,
    ) -> Result<Response<pb::EvaluateEnrollmentResponse>, Status> {
        let request = proto::evaluation_request(request.into_inner()).map_err(PolicyError::from)?;
        let decision = self.policies.evaluate(&request)?;
        Ok(Response::new(proto::decision_to_proto(decision)))
    }

    #[tracing::instrument(skip_all, fields(realm = %request.get_ref().realm))]
    async fn validate_pin(
        &self,
        request: Request<pb::ValidatePinRequest>,
    ) -> Result<Response<pb::ValidatePinResponse>, Status> {
        let request = request.into_inner();
        let subject = proto::subject(
            &request.realm,
            &request.user,
            &request.client_ip,
            request.no_client,
            true,
        )
        .map_err(PolicyError::from)?;
        let violations = self.policies.validate_pin(&subject, &request.pin)?;
        Ok(Response::new(pb::ValidatePinResponse {
            valid: violations.is_empty(),
            violations,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_policy(
        &self,
        request: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let actor = actor(&request, &request.get_ref().actor)?;
        let request = request.into_inner();
        let spec = spec_from_proto(request.policy)?;
        let view = if request.validate_only {
            self.policies.validate_create(spec).await?
        } else {
            self.policies.create(spec, actor).await?
        };
        Ok(Response::new(view_to_proto(view)))
    }

    #[tracing::instrument(skip_all)]
    async fn update_policy(
        &self,
        request: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let actor = actor(&request, &request.get_ref().actor)?;
        let request = request.into_inner();
        let spec = spec_from_proto(request.policy)?;
        let etag = text("etag", &request.etag, 128)?;
        let view = if request.validate_only {
            self.policies.validate_update(spec, &etag).await?
        } else {
            self.policies.update(spec, &etag, actor).await?
        };
        Ok(Response::new(view_to_proto(view)))
    }

    #[tracing::instrument(skip_all, fields(policy = %request.get_ref().name))]
    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let actor = actor(&request, &request.get_ref().actor)?;
        let request = request.into_inner();
        let etag = text("etag", &request.etag, 128)?;
        let etag = Some(etag.as_str()).filter(|etag| !etag.is_empty());
        self.policies
            .delete(&lookup_name(&request.name)?, etag, actor)
            .await?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    #[tracing::instrument(skip_all, fields(policy = %request.get_ref().name))]
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let view = self
            .policies
            .get(&lookup_name(&request.get_ref().name)?)
            .await?;
        Ok(Response::new(view_to_proto(view)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .policies
            .list(&page(request.page_size, &request.page_token)?)
            .await?;
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: page.items.into_iter().map(view_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_policy_history(
        &self,
        request: Request<pb::ListPolicyHistoryRequest>,
    ) -> Result<Response<pb::ListPolicyHistoryResponse>, Status> {
        let request = request.into_inner();
        let name = lookup_name(&request.name)?;
        let name = Some(name.as_str()).filter(|name| !name.is_empty());
        let page_request = page(request.page_size, &request.page_token)?;
        let page = match request.after_id {
            Some(after_id) if after_id < 0 => {
                return Err(PolicyError::invalid("after_id", "must not be negative").into());
            }
            Some(after_id) => {
                self.policies
                    .history_after(name, after_id, &page_request)
                    .await?
            }
            None => self.policies.history(name, &page_request).await?,
        };
        Ok(Response::new(pb::ListPolicyHistoryResponse {
            changes: page.items.into_iter().map(change_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use enroll_shared::auth::{Caller, Role};

    use super::*;

    fn request_by(name: &str) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(Caller {
            name: name.to_owned(),
            role: Role::Admin,
        });
        request
    }

    #[test]
    fn the_history_records_the_key_name_and_free_text_only_beside_it() {
        let request = request_by("console");
        assert_eq!(actor(&request, "").unwrap(), "console");
        assert_eq!(
            actor(&request, "  alice@console ").unwrap(),
            "console (for alice@console)"
        );
        // Free text naming another caller never replaces the key's name.
        assert_eq!(
            actor(&request, "enrollment-page").unwrap(),
            "console (for enrollment-page)"
        );
    }
}
