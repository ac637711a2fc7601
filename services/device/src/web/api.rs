//! The page's two JSON endpoints, wrapping the registration use cases as the actor
//! `enrollment-page`. They check their input the way the gRPC edge does (same codes and
//! messages), since the use cases take parsed values.
use super::*;

/// The begin call: the link secret and nothing else. Unknown fields are refused, so a body
/// naming a realm or user is an error, not silently a link lookup. No `Debug`: it holds
/// the secret.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BeginBody {
    secret: String,
}

#[derive(Debug, Serialize)]
pub(super) struct BeginAnswer {
    ceremony_id: String,
    /// The creation options as webauthn-rs produced them (`{"publicKey": {...}}`).
    options: Value,
    realm: String,
    user: String,
    device_type: &'static str,
    /// RFC 3339; the page starts a new ceremony when this one is about to expire.
    expire_time: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct FinishBody {
    ceremony_id: String,
    credential: Value,
}

#[derive(Debug, Serialize)]
pub(super) struct FinishAnswer {
    device: DeviceAnswer,
    redirect_url: String,
}

#[derive(Debug, Serialize)]
pub(super) struct DeviceAnswer {
    id: String,
    credential_id: String,
    device_type: &'static str,
    state: &'static str,
}

pub(super) async fn begin<R: Registrar>(
    State(state): State<WebState<R>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<BeginBody>, JsonRejection>,
) -> Result<Json<BeginAnswer>, WebError> {
    let actor = page_actor(&state, peer, &headers)?;
    let Json(body) = body.map_err(WebError::from)?;
    let secret = link_secret(&body.secret)?;
    // Keyed by the secret's hash: the limiter never holds a secret.
    let ticket = state.limiter.admit_begin(secret.hash())?;
    let challenge = match call(state.timeout, state.registrar.begin(&actor, secret)).await {
        Ok(challenge) => {
            ticket.found();
            challenge
        }
        Err(refusal) => {
            // A used, revoked or expired link (the refusal the use case audits) stays
            // dead: repeat the answer for the rest of the window instead of auditing
            // every retry. A secret that names no link gets no window at all.
            if refusal.is_dead_link() {
                ticket.refused(&refusal);
            } else if !refusal.is_unknown_link() {
                ticket.found();
            }
            return Err(refusal);
        }
    };
    drop(ticket);
    let options = serde_json::from_str(&challenge.options_json).map_err(|error| {
        tracing::error!(%error, "the registration options are not JSON");
        WebError::internal()
    })?;
    Ok(Json(BeginAnswer {
        ceremony_id: challenge.ceremony_id,
        options,
        realm: challenge.realm.to_string(),
        user: challenge.user.to_string(),
        device_type: challenge.kind.as_str(),
        expire_time: challenge.expire_time.to_rfc3339(),
    }))
}

pub(super) async fn finish<R: Registrar>(
    State(state): State<WebState<R>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Json<FinishAnswer>, WebError> {
    let actor = page_actor(&state, peer, &headers)?;
    let Json(body) = body.map_err(WebError::from)?;
    let ceremony_id = uuid::Uuid::parse_str(body.ceremony_id.trim())
        .map_err(|_| DeviceError::invalid("ceremony_id", "not a valid id"))?
        .to_string();
    if body.credential.is_null() {
        return Err(DeviceError::invalid("credential", "required").into());
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let registered = call(
        state.timeout,
        state.registrar.finish(
            &actor,
            &ceremony_id,
            body.credential.to_string(),
            &user_agent,
        ),
    )
    .await?;
    let device = registered.device;
    Ok(Json(FinishAnswer {
        device: DeviceAnswer {
            id: device.id,
            credential_id: device.credential_id,
            device_type: device.kind.as_str(),
            state: device.state.as_str(),
        },
        redirect_url: registered.redirect_url,
    }))
}

/// The secret from the body. A malformed one is treated like an unknown one (it names no
/// link), as over gRPC; the message never repeats it.
fn link_secret(raw: &str) -> Result<LinkSecret, WebError> {
    if raw.trim().is_empty() {
        return Err(DeviceError::invalid("secret", "required").into());
    }
    LinkSecret::parse(raw).ok_or_else(|| DeviceError::NotFound("enrollment link".to_owned()).into())
}

/// The page's actor: its own name, and the client's address, counted against the
/// per-address limit first. Forwarding headers count only from a configured trusted proxy:
/// anyone can send them, and the address feeds policy decisions (client networks).
pub(super) fn page_actor<R>(
    state: &WebState<R>,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<Actor, WebError> {
    let client = state.proxies.client(peer, headers);
    state.limiter.admit_client(client)?;
    Ok(Actor {
        name: PAGE_CALLER.to_owned(),
        client_ip: Some(client.to_canonical()),
    })
}

/// Runs one use case under the page's deadline (the gRPC server's timeout layer does not
/// apply here).
pub(super) async fn call<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, DeviceError>>,
) -> Result<T, WebError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(WebError::from(error)),
        Err(_) => Err(WebError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the request took too long; please try again",
        )),
    }
}
