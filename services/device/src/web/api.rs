//! The page's two JSON endpoints, wrapping BeginDeviceRegistration and
//! FinishDeviceRegistration as a proxy-role caller.
use super::*;

#[derive(Debug, Deserialize)]
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
    expire_time: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct FinishBody {
    ceremony_id: String,
    credential: Value,
}

#[derive(Debug, Serialize)]
pub(super) struct FinishAnswer {
    device: Option<DeviceAnswer>,
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
    body: Result<Json<BeginBody>, JsonRejection>,
) -> Result<Json<BeginAnswer>, WebError> {
    let Json(body) = body.map_err(WebError::from)?;
    let request = page_request(pb::BeginDeviceRegistrationRequest {
        link_secret: body.secret,
        client_ip: client_ip(peer),
        ..Default::default()
    });
    let answer = call(state.timeout, state.registrar.begin(request)).await?;
    let options = serde_json::from_str(&answer.creation_options_json).map_err(|error| {
        tracing::error!(%error, "BeginDeviceRegistration returned options that are not JSON");
        WebError::internal()
    })?;
    Ok(Json(BeginAnswer {
        ceremony_id: answer.ceremony_id,
        options,
        realm: answer.realm,
        user: answer.user,
        device_type: device_type_name(answer.device_type),
        expire_time: answer.expire_time.and_then(rfc3339),
    }))
}

pub(super) async fn finish<R: Registrar>(
    State(state): State<WebState<R>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<FinishBody>, JsonRejection>,
) -> Result<Json<FinishAnswer>, WebError> {
    let Json(body) = body.map_err(WebError::from)?;
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request = page_request(pb::FinishDeviceRegistrationRequest {
        ceremony_id: body.ceremony_id,
        credential_json: body.credential.to_string(),
        user_agent,
        client_ip: client_ip(peer),
    });
    let answer = call(state.timeout, state.registrar.finish(request)).await?;
    Ok(Json(FinishAnswer {
        device: answer.device.map(|device| DeviceAnswer {
            id: device.id,
            credential_id: device.credential_id,
            device_type: device_type_name(device.device_type),
            state: device_state_name(device.state),
        }),
        redirect_url: answer.redirect_url,
    }))
}

/// A request as the gRPC handlers expect it: the auth layer would have put the caller in
/// the extensions; the page is a proxy-role caller under its own name.
fn page_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(Caller {
        name: PAGE_CALLER.to_owned(),
        role: Role::Proxy,
    });
    request
}

/// The TCP peer's address. Forwarding headers are ignored on purpose: anyone can send
/// them, and the address feeds policy decisions (client networks).
fn client_ip(peer: SocketAddr) -> String {
    peer.ip().to_canonical().to_string()
}

async fn call<T>(
    timeout: Duration,
    rpc: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, WebError> {
    match tokio::time::timeout(timeout, rpc).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(WebError::from(status)),
        Err(_) => Err(WebError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the request took too long; please try again",
        )),
    }
}

fn rfc3339(timestamp: prost_types::Timestamp) -> Option<String> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    chrono::DateTime::from_timestamp(timestamp.seconds, nanos).map(|time| time.to_rfc3339())
}

fn device_type_name(value: i32) -> &'static str {
    match pb::DeviceType::try_from(value) {
        Ok(pb::DeviceType::Any) => "any",
        Ok(pb::DeviceType::EnclaveOnly) => "enclave_only",
        _ => "unspecified",
    }
}

fn device_state_name(value: i32) -> &'static str {
    match pb::DeviceState::try_from(value) {
        Ok(pb::DeviceState::PendingApproval) => "pending_approval",
        Ok(pb::DeviceState::Approved) => "approved",
        Ok(pb::DeviceState::Revoked) => "revoked",
        _ => "unspecified",
    }
}
