//! `enroll-device`: the enrollment device service.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use enroll_device::app::{Application, SERVICE_NAME, migrate};
use enroll_device::config::DeviceConfig;

#[derive(Parser)]
#[command(
    version,
    about = "Enrollment device service: enrollment links, WebAuthn devices and OTP tokens over gRPC"
)]
struct Cli {
    /// TOML configuration file; `ENROLL_*` environment variables override it
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
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the SHA-256 digest of an API key, as `auth.api_keys[].sha256` wants it.
    HashKey {
        /// The key; read from stdin when omitted, so it stays out of shell history.
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashKey { key }) = &cli.command {
        return hash_key(key.clone());
    }
    let config: DeviceConfig = match enroll_shared::config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("enroll-device: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("enroll-device: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let _telemetry = enroll_shared::telemetry::init(SERVICE_NAME, &config.telemetry);
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let app = Application::build(config).await?;
                tracing::info!(addr = %app.local_addr()?, "device service listening");
                app.run_until(enroll_shared::server::shutdown_signal())
                    .await?;
                Ok(())
            }
            Command::Migrate => {
                migrate(&config).await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::HashKey { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error: Box<dyn std::error::Error> = error;
            tracing::error!(%error, "enroll-device failed");
            eprintln!("enroll-device: {error}");
            ExitCode::FAILURE
        }
    }
}

fn hash_key(key: Option<String>) -> ExitCode {
    let key = match key {
        Some(key) => key,
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("enroll-device: cannot read the key from stdin");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    println!("{}", enroll_shared::auth::hash_api_key(&key));
    ExitCode::SUCCESS
}
