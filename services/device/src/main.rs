//! `enroll-device`: the enrollment device service.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use enroll_device::app::{Application, migrate};
use enroll_device::config::DeviceConfig;

#[derive(Parser)]
#[command(
    version,
    about = "Enrollment device service: enrollment links, WebAuthn devices and OTP tokens over gRPC"
)]
struct Cli {
    /// TOML configuration file; `ENROLL_<SECTION>__<KEY>` environment variables override it
    /// (e.g. ENROLL_POLICY_SERVICE__URL=http://host:50051).
    #[arg(long, short, env = "ENROLL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC server (the default). Migrations run at start-up.
    Serve,
    /// Apply the database migrations and exit (waits for the database like `serve`).
    Migrate,
    /// Ask this config's server for its gRPC health: exit 0 when SERVING, 1 otherwise, one
    /// line saying why (for container health checks and probes).
    Healthcheck(enroll_shared::healthcheck::HealthcheckArgs),
    /// Print the SHA-256 digest of an API key, as `auth.api_keys[].sha256` wants it.
    HashKey {
        /// The key; read from stdin when omitted, so it stays out of shell history.
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::HashKey { key } = command {
        return enroll_shared::cli::hash_key("enroll-device", key);
    }
    if let Command::Healthcheck(args) = &command {
        return enroll_shared::cli::healthcheck(
            "enroll-device",
            cli.config.as_deref(),
            |config: &DeviceConfig| &config.server,
            args,
        );
    }
    enroll_shared::cli::run(
        "enroll-device",
        cli.config.as_deref(),
        |config: DeviceConfig| async move {
            match command {
                Command::Serve => {
                    let app = Application::build(config).await?;
                    tracing::info!(addr = %app.local_addr()?, "device service listening");
                    app.run_until(enroll_shared::server::shutdown_signal())
                        .await?;
                }
                Command::Migrate => {
                    migrate(&config).await?;
                    tracing::info!("migrations applied");
                }
                Command::HashKey { .. } | Command::Healthcheck(_) => {}
            }
            Ok(())
        },
    )
}
