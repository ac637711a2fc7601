//! The gRPC edge of the device service.
//!
//! The RPCs are declared in full in `proto/enroll/device/v1/device.proto`; they are built in
//! the issues that follow the foundation (OTP tokens: issue 3; WebAuthn devices, links and
//! CheckEnrollment: issue 4). Until then each answers UNIMPLEMENTED naming its issue, after
//! the caller's key and role were checked like every other call.
use enroll_shared::proto::device::v1 as pb;
use pb::device_service_server::DeviceService;
use tonic::{Request, Response, Status};

use crate::policy_client::PolicyClient;

pub struct DeviceGrpc {
    /// Consulted before every mutation once mutations exist.
    #[allow(dead_code)]
    policy: PolicyClient,
}

impl DeviceGrpc {
    pub fn new(policy: PolicyClient) -> Self {
        Self { policy }
    }
}

macro_rules! planned_rpcs {
    ($($method:ident($request:ident) -> $response:ident: $issue:literal;)*) => {
        #[tonic::async_trait]
        impl DeviceService for DeviceGrpc {
            $(
                async fn $method(&self, _request: Request<pb::$request>) -> Result<Response<pb::$response>, Status> {
                    Err(Status::unimplemented(concat!(
                        stringify!($method), " is not available yet: it is built in ", $issue
                    )))
                }
            )*
        }
    };
}

planned_rpcs! {
    check_enrollment(CheckEnrollmentRequest) -> CheckEnrollmentResponse: "issue 4";
    create_enrollment_link(CreateEnrollmentLinkRequest) -> EnrollmentLink: "issue 4";
    list_enrollment_links(ListEnrollmentLinksRequest) -> ListEnrollmentLinksResponse: "issue 4";
    revoke_enrollment_link(RevokeEnrollmentLinkRequest) -> EnrollmentLink: "issue 4";
    begin_device_registration(BeginDeviceRegistrationRequest) -> BeginDeviceRegistrationResponse: "issue 4";
    finish_device_registration(FinishDeviceRegistrationRequest) -> FinishDeviceRegistrationResponse: "issue 4";
    begin_device_authentication(BeginDeviceAuthenticationRequest) -> BeginDeviceAuthenticationResponse: "issue 4";
    finish_device_authentication(FinishDeviceAuthenticationRequest) -> Device: "issue 4";
    list_devices(ListDevicesRequest) -> ListDevicesResponse: "issue 4";
    get_device(GetDeviceRequest) -> Device: "issue 4";
    approve_device(ApproveDeviceRequest) -> Device: "issue 4";
    revoke_device(RevokeDeviceRequest) -> Device: "issue 4";
    enroll_token(EnrollTokenRequest) -> EnrollTokenResponse: "issue 3";
    import_tokens(ImportTokensRequest) -> ImportTokensResponse: "issue 3";
    assign_token(AssignTokenRequest) -> Token: "issue 3";
    unassign_token(UnassignTokenRequest) -> Token: "issue 3";
    set_pin(SetPinRequest) -> Token: "issue 3";
    enable_token(EnableTokenRequest) -> Token: "issue 3";
    disable_token(DisableTokenRequest) -> Token: "issue 3";
    delete_token(DeleteTokenRequest) -> DeleteTokenResponse: "issue 3";
    list_tokens(ListTokensRequest) -> ListTokensResponse: "issue 3";
    get_token(GetTokenRequest) -> Token: "issue 3";
    validate(ValidateRequest) -> ValidateResponse: "issue 3";
    report_lost_token(ReportLostTokenRequest) -> ReportLostTokenResponse: "issue 3";
    list_audit_events(ListAuditEventsRequest) -> ListAuditEventsResponse: "issue 3";
}
