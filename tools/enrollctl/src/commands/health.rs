//! `enrollctl health`: grpc.health.v1 of both services.
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{write_json_out, write_out};
use crate::Ctx;
use crate::connect::Service;
use crate::error::{CliError, code_name, exit};
use crate::output::Table;

/// The health service names the servers report.
const SERVICES: [(Service, &str); 2] = [
    (
        Service::Policy,
        enroll_shared::proto::policy::v1::policy_service_server::SERVICE_NAME,
    ),
    (
        Service::Device,
        enroll_shared::proto::device::v1::device_service_server::SERVICE_NAME,
    ),
];

pub async fn run(ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let mut rows = Vec::new();
    for (service, name) in SERVICES {
        let mut client = HealthClient::new(ctx.conn.channel(service));
        let status = match client
            .check(HealthCheckRequest {
                service: name.to_owned(),
            })
            .await
        {
            Ok(response) => ServingStatus::try_from(response.into_inner().status)
                .map(|status| status.as_str_name().to_owned())
                .unwrap_or_else(|_| "UNKNOWN".to_owned()),
            Err(status) => format!("{} ({})", code_name(status.code()), status.message()),
        };
        rows.push((service, name, ctx.conn.address(service).to_owned(), status));
    }
    let healthy = rows.iter().all(|(_, _, _, status)| status == "SERVING");
    if ctx.json() {
        let services: Vec<_> = rows
            .iter()
            .map(|(_, name, address, status)| {
                json!({"service": name, "address": address, "status": status})
            })
            .collect();
        write_json_out(ctx, &json!({ "healthy": healthy, "services": services }))?;
    } else {
        let mut table = Table::new(&["SERVICE", "ADDRESS", "STATUS"]);
        for (service, _, address, status) in &rows {
            table.row(vec![
                service.label().to_owned(),
                address.clone(),
                status.clone(),
            ]);
        }
        write_out(ctx, &table.render())?;
    }
    if healthy {
        Ok(())
    } else {
        Err(CliError::Outcome {
            code: exit::UNAVAILABLE,
            message: "a service is not SERVING".to_owned(),
        })
    }
}
