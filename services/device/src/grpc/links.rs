//! The enrollment-link RPCs: decode into domain values, call one use case, encode.
use enroll_shared::proto::device::v1 as pb;
use tonic::{Request, Response, Status};

use super::decode::{
    actor, device_kind, id, kind_to_proto, optional_realm, optional_user, page, realm, request_id,
    required_text, text, timestamp, user,
};
use crate::domain::devices::LinkFilter;
use crate::domain::devices::{Link, LinkState, LinkStatus};
use crate::error::DeviceError;
use crate::service::devices::{Devices, NewLink};

/// A link as callers see it; `url` (which carries the secret) only when just created.
pub fn link_to_proto(link: Link) -> pb::EnrollmentLink {
    let state = match link.status {
        LinkStatus::Active => pb::LinkState::Active,
        LinkStatus::Expired => pb::LinkState::Expired,
        LinkStatus::Used => pb::LinkState::Used,
        LinkStatus::Revoked => pb::LinkState::Revoked,
    };
    pb::EnrollmentLink {
        id: link.id,
        realm: link.realm.to_string(),
        user: link.user.to_string(),
        device_type: kind_to_proto(link.kind) as i32,
        redirect_url: link.redirect_url,
        url: link.url.unwrap_or_default(),
        expire_time: timestamp(link.expire_time),
        state: state as i32,
        created_by: link.created_by,
        create_time: timestamp(link.create_time),
        device_id: link.device_id.unwrap_or_default(),
    }
}

pub async fn create_enrollment_link(
    devices: &Devices,
    request: Request<pb::CreateEnrollmentLinkRequest>,
) -> Result<Response<pb::EnrollmentLink>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let ttl = match request.ttl {
        None => None,
        Some(ttl) if ttl.seconds < 0 || ttl.nanos < 0 => {
            return Err(DeviceError::invalid("ttl", "must be positive").into());
        }
        Some(ttl) => Some(std::time::Duration::new(
            ttl.seconds as u64,
            ttl.nanos as u32,
        )),
    };
    let link = NewLink {
        realm: realm("realm", &request.realm)?,
        user: user("user", &request.user)?,
        kind: device_kind("device_type", request.device_type)?,
        redirect_url: Some(text("redirect_url", &request.redirect_url, 2048)?)
            .filter(|url| !url.is_empty()),
        ttl,
        created_by: required_text("created_by", &request.created_by, 128)?,
        request_id: request_id(&request.request_id)?,
    };
    Ok(Response::new(link_to_proto(
        devices.create_link(&actor, link).await?,
    )))
}

pub async fn list_enrollment_links(
    devices: &Devices,
    request: Request<pb::ListEnrollmentLinksRequest>,
) -> Result<Response<pb::ListEnrollmentLinksResponse>, Status> {
    let request = request.into_inner();
    let (state, expired) = match pb::LinkState::try_from(request.state) {
        Ok(pb::LinkState::Unspecified) => (None, None),
        Ok(pb::LinkState::Active) => (Some(LinkState::Active), Some(false)),
        Ok(pb::LinkState::Expired) => (Some(LinkState::Active), Some(true)),
        Ok(pb::LinkState::Used) => (Some(LinkState::Used), None),
        Ok(pb::LinkState::Revoked) => (Some(LinkState::Revoked), None),
        Err(_) => return Err(DeviceError::invalid("state", "unknown link state").into()),
    };
    let filter = LinkFilter {
        realm: optional_realm("realm", &request.realm)?,
        user: optional_user("user", &request.user)?,
        state,
        expired,
    };
    let page = devices
        .list_links(&filter, &page(request.page_size, &request.page_token)?)
        .await?;
    Ok(Response::new(pb::ListEnrollmentLinksResponse {
        links: page.items.into_iter().map(link_to_proto).collect(),
        next_page_token: page.next_page_token,
    }))
}

pub async fn revoke_enrollment_link(
    devices: &Devices,
    request: Request<pb::RevokeEnrollmentLinkRequest>,
) -> Result<Response<pb::EnrollmentLink>, Status> {
    let actor = actor(&request, "")?;
    let request = request.into_inner();
    let id = id("id", &request.id)?;
    let revoked_by = required_text("revoked_by", &request.revoked_by, 128)?;
    Ok(Response::new(link_to_proto(
        devices.revoke_link(&actor, &id, &revoked_by).await?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::devices::DeviceKind;
    use crate::domain::names::{Realm, UserName};
    use chrono::Utc;

    #[test]
    fn listed_links_carry_no_url_and_show_expiry() {
        let now = Utc::now();
        let link = Link {
            id: "l".into(),
            realm: Realm::parse("acme").unwrap(),
            user: UserName::parse("alice").unwrap(),
            kind: DeviceKind::Any,
            redirect_url: String::new(),
            url: None,
            expire_time: now,
            status: LinkStatus::of(LinkState::Active, now, now),
            created_by: "admin".into(),
            create_time: now,
            device_id: None,
        };
        let listed = link_to_proto(link);
        assert_eq!(listed.state, pb::LinkState::Expired as i32);
        assert!(listed.url.is_empty());
    }
}
