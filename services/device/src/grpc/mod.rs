//! The gRPC edge of the device service: one file per resource decodes requests into domain
//! values, calls one use case and encodes the answer; errors become statuses through
//! `From<DeviceError> for Status`. This file only delegates.
use enroll_shared::proto::device::v1 as pb;
use pb::device_service_server::DeviceService;
use tonic::{Request, Response, Status};

use crate::service::audit::AuditTrail;
use crate::service::devices::Devices;
use crate::service::events::EventFeed;
use crate::service::metadata_admin::MetadataAdmin;
use crate::service::streams::EventStreams;
use crate::service::tokens::Tokens;

pub mod access;
mod audit;
mod decode;
mod devices;
mod events;
pub mod ext_authz;
mod links;
mod metadata;
mod otp_links;
mod streams;
mod tokens;

pub use tokens::MAX_REQUEST_BYTES;

pub struct DeviceGrpc {
    tokens: Tokens,
    devices: Devices,
    audit: AuditTrail,
    metadata: MetadataAdmin,
    events: EventFeed,
    streams: EventStreams,
}

impl DeviceGrpc {
    pub fn new(
        tokens: Tokens,
        devices: Devices,
        audit: AuditTrail,
        metadata: MetadataAdmin,
        events: EventFeed,
        streams: EventStreams,
    ) -> Self {
        Self {
            tokens,
            devices,
            audit,
            metadata,
            events,
            streams,
        }
    }
}

#[tonic::async_trait]
impl DeviceService for DeviceGrpc {
    type WatchEnrollmentEventsStream = events::EventStream;

    async fn watch_enrollment_events(
        &self,
        request: Request<pb::WatchEnrollmentEventsRequest>,
    ) -> Result<Response<Self::WatchEnrollmentEventsStream>, Status> {
        events::watch_enrollment_events(&self.events, request).await
    }

    async fn create_event_stream(
        &self,
        request: Request<pb::CreateEventStreamRequest>,
    ) -> Result<Response<pb::CreateEventStreamResponse>, Status> {
        streams::create_event_stream(&self.streams, request).await
    }

    async fn list_event_streams(
        &self,
        request: Request<pb::ListEventStreamsRequest>,
    ) -> Result<Response<pb::ListEventStreamsResponse>, Status> {
        streams::list_event_streams(&self.streams, request).await
    }

    async fn update_event_stream(
        &self,
        request: Request<pb::UpdateEventStreamRequest>,
    ) -> Result<Response<pb::EventStream>, Status> {
        streams::update_event_stream(&self.streams, request).await
    }

    async fn delete_event_stream(
        &self,
        request: Request<pb::DeleteEventStreamRequest>,
    ) -> Result<Response<pb::DeleteEventStreamResponse>, Status> {
        streams::delete_event_stream(&self.streams, request).await
    }

    async fn rotate_event_stream_secret(
        &self,
        request: Request<pb::RotateEventStreamSecretRequest>,
    ) -> Result<Response<pb::RotateEventStreamSecretResponse>, Status> {
        streams::rotate_event_stream_secret(&self.streams, request).await
    }

    async fn rotate_event_signing_key(
        &self,
        request: Request<pb::RotateEventSigningKeyRequest>,
    ) -> Result<Response<pb::RotateEventSigningKeyResponse>, Status> {
        streams::rotate_event_signing_key(&self.streams, request).await
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        streams::list_dead_letters(&self.streams, request).await
    }

    async fn redeliver_events(
        &self,
        request: Request<pb::RedeliverEventsRequest>,
    ) -> Result<Response<pb::RedeliverEventsResponse>, Status> {
        streams::redeliver_events(&self.streams, request).await
    }

    async fn verify_event_stream(
        &self,
        request: Request<pb::VerifyEventStreamRequest>,
    ) -> Result<Response<pb::VerifyEventStreamResponse>, Status> {
        streams::verify_event_stream(&self.streams, request).await
    }
    async fn check_enrollment(
        &self,
        request: Request<pb::CheckEnrollmentRequest>,
    ) -> Result<Response<pb::CheckEnrollmentResponse>, Status> {
        devices::check_enrollment(&self.devices, request).await
    }

    async fn create_enrollment_link(
        &self,
        request: Request<pb::CreateEnrollmentLinkRequest>,
    ) -> Result<Response<pb::EnrollmentLink>, Status> {
        links::create_enrollment_link(&self.devices, request).await
    }

    async fn list_enrollment_links(
        &self,
        request: Request<pb::ListEnrollmentLinksRequest>,
    ) -> Result<Response<pb::ListEnrollmentLinksResponse>, Status> {
        links::list_enrollment_links(&self.devices, request).await
    }

    async fn revoke_enrollment_link(
        &self,
        request: Request<pb::RevokeEnrollmentLinkRequest>,
    ) -> Result<Response<pb::EnrollmentLink>, Status> {
        links::revoke_enrollment_link(&self.devices, request).await
    }

    async fn begin_device_registration(
        &self,
        request: Request<pb::BeginDeviceRegistrationRequest>,
    ) -> Result<Response<pb::BeginDeviceRegistrationResponse>, Status> {
        devices::begin_device_registration(&self.devices, request).await
    }

    async fn finish_device_registration(
        &self,
        request: Request<pb::FinishDeviceRegistrationRequest>,
    ) -> Result<Response<pb::FinishDeviceRegistrationResponse>, Status> {
        devices::finish_device_registration(&self.devices, request).await
    }

    async fn begin_device_authentication(
        &self,
        request: Request<pb::BeginDeviceAuthenticationRequest>,
    ) -> Result<Response<pb::BeginDeviceAuthenticationResponse>, Status> {
        devices::begin_device_authentication(&self.devices, request).await
    }

    async fn finish_device_authentication(
        &self,
        request: Request<pb::FinishDeviceAuthenticationRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        devices::finish_device_authentication(&self.devices, request).await
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        devices::list_devices(&self.devices, request).await
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        devices::get_device(&self.devices, request).await
    }

    async fn approve_device(
        &self,
        request: Request<pb::ApproveDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        devices::approve_device(&self.devices, request).await
    }

    async fn revoke_device(
        &self,
        request: Request<pb::RevokeDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        devices::revoke_device(&self.devices, request).await
    }

    async fn enroll_token(
        &self,
        request: Request<pb::EnrollTokenRequest>,
    ) -> Result<Response<pb::EnrollTokenResponse>, Status> {
        tokens::enroll_token(&self.tokens, request).await
    }

    async fn import_tokens(
        &self,
        request: Request<pb::ImportTokensRequest>,
    ) -> Result<Response<pb::ImportTokensResponse>, Status> {
        tokens::import_tokens(&self.tokens, request).await
    }

    async fn assign_token(
        &self,
        request: Request<pb::AssignTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        tokens::assign_token(&self.tokens, request).await
    }

    async fn unassign_token(
        &self,
        request: Request<pb::UnassignTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        tokens::unassign_token(&self.tokens, request).await
    }

    async fn set_pin(
        &self,
        request: Request<pb::SetPinRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        tokens::set_pin(&self.tokens, request).await
    }

    async fn enable_token(
        &self,
        request: Request<pb::EnableTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        tokens::enable_token(&self.tokens, request).await
    }

    async fn disable_token(
        &self,
        request: Request<pb::DisableTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        tokens::disable_token(&self.tokens, request).await
    }

    async fn delete_token(
        &self,
        request: Request<pb::DeleteTokenRequest>,
    ) -> Result<Response<pb::DeleteTokenResponse>, Status> {
        tokens::delete_token(&self.tokens, request).await
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        tokens::list_tokens(&self.tokens, request).await
    }

    async fn get_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        tokens::get_token(&self.tokens, request).await
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        tokens::verify_token(&self.tokens, request).await
    }

    async fn create_otp_enrollment_link(
        &self,
        request: Request<pb::CreateOtpEnrollmentLinkRequest>,
    ) -> Result<Response<pb::OtpEnrollmentLink>, Status> {
        otp_links::create_otp_enrollment_link(&self.tokens, request).await
    }

    async fn list_otp_enrollment_links(
        &self,
        request: Request<pb::ListOtpEnrollmentLinksRequest>,
    ) -> Result<Response<pb::ListOtpEnrollmentLinksResponse>, Status> {
        otp_links::list_otp_enrollment_links(&self.tokens, request).await
    }

    async fn revoke_otp_enrollment_link(
        &self,
        request: Request<pb::RevokeOtpEnrollmentLinkRequest>,
    ) -> Result<Response<pb::OtpEnrollmentLink>, Status> {
        otp_links::revoke_otp_enrollment_link(&self.tokens, request).await
    }

    async fn redeem_otp_enrollment_link(
        &self,
        request: Request<pb::RedeemOtpEnrollmentLinkRequest>,
    ) -> Result<Response<pb::OtpEnrollment>, Status> {
        otp_links::redeem_otp_enrollment_link(&self.tokens, request).await
    }

    async fn resume_otp_enrollment(
        &self,
        request: Request<pb::ResumeOtpEnrollmentRequest>,
    ) -> Result<Response<pb::OtpEnrollment>, Status> {
        otp_links::resume_otp_enrollment(&self.tokens, request).await
    }

    async fn finish_otp_enrollment(
        &self,
        request: Request<pb::FinishOtpEnrollmentRequest>,
    ) -> Result<Response<pb::FinishOtpEnrollmentResponse>, Status> {
        otp_links::finish_otp_enrollment(&self.tokens, request).await
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        tokens::validate(&self.tokens, request).await
    }

    async fn report_lost_token(
        &self,
        request: Request<pb::ReportLostTokenRequest>,
    ) -> Result<Response<pb::ReportLostTokenResponse>, Status> {
        tokens::report_lost_token(&self.tokens, request).await
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        audit::list_audit_events(&self.audit, request).await
    }

    async fn get_metadata_status(
        &self,
        request: Request<pb::GetMetadataStatusRequest>,
    ) -> Result<Response<pb::MetadataStatus>, Status> {
        metadata::get_metadata_status(&self.metadata, request).await
    }

    async fn accept_metadata_jump(
        &self,
        request: Request<pb::AcceptMetadataJumpRequest>,
    ) -> Result<Response<pb::MetadataStatus>, Status> {
        metadata::accept_metadata_jump(&self.metadata, request).await
    }
}
