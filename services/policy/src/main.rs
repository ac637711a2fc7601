//! `enroll-policy`: the enrollment policy service.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use enroll_policy::app::{Application, SERVICE_NAME, migrate};
use enroll_policy::config::PolicyConfig;
use enroll_policy::demo;

#[derive(Parser)]
#[command(
    version,
    about = "Enrollment policy service: stores enrollment policies and decides enrollment actions over gRPC"
)]
struct Cli {
    /// TOML configuration file; `ENROLL_*` environment variables override it
    /// (e.g. ENROLL_DATABASE__URL=postgres://...).
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
    /// Insert the demo policy (realm `demo`) when it is absent, then exit.
    SeedDemo,
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
    let config: PolicyConfig = match enroll_shared::config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("enroll-policy: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("enroll-policy: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let _telemetry = enroll_shared::telemetry::init(SERVICE_NAME, &config.telemetry);
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let app = Application::build(config).await?;
                tracing::info!(addr = %app.local_addr()?, "policy service listening");
                app.run_until(enroll_shared::server::shutdown_signal())
                    .await?;
                Ok(())
            }
            Command::Migrate => {
                migrate(&config).await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::SeedDemo => demo::seed(&config).await,
            Command::HashKey { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error: Box<dyn std::error::Error> = error;
            tracing::error!(%error, "enroll-policy failed");
            eprintln!("enroll-policy: {error}");
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
                eprintln!("enroll-policy: cannot read the key from stdin");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    println!("{}", enroll_shared::auth::hash_api_key(&key));
    ExitCode::SUCCESS
}
