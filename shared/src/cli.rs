//! What both binaries do around their commands: load the config, start the runtime and
//! telemetry, report errors, and the `hash-key` and `healthcheck` helpers.
use std::error::Error;
use std::path::Path;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use crate::config::{ServerConfig, TelemetryConfig};
use crate::healthcheck::HealthcheckArgs;

/// A service configuration that carries telemetry settings.
pub trait HasTelemetry {
    fn telemetry(&self) -> &TelemetryConfig;
}

/// Loads the config, installs telemetry as `binary` (the OpenTelemetry `service.name`),
/// and runs `command` to the end.
pub fn run<C, F, Fut>(binary: &'static str, config_path: Option<&Path>, command: F) -> ExitCode
where
    C: DeserializeOwned + HasTelemetry,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn Error>>>,
{
    let config: C = match crate::config::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{binary}: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let _telemetry = crate::telemetry::init(binary, config.telemetry());
        let result = command(config).await;
        if let Err(error) = &result {
            tracing::error!(%error, "{binary} failed");
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{binary}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the digest of an API key (read from stdin when not given, so it stays out of
/// shell history), as `auth.api_keys[].sha256` wants it.
pub fn hash_key(binary: &str, key: Option<String>) -> ExitCode {
    let key = match key {
        Some(key) => key,
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("{binary}: cannot read the key from stdin");
                return ExitCode::FAILURE;
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    println!("{}", crate::auth::hash_api_key(&key));
    ExitCode::SUCCESS
}

/// The `healthcheck` subcommand: loads the config like `serve`, asks the server's gRPC
/// health service, prints one line, exits 0 when SERVING and 1 otherwise (a config that
/// does not load is 1 too: container health checks reserve other codes). No telemetry is
/// installed: a probe every few seconds must not export spans.
pub fn healthcheck<C: DeserializeOwned>(
    binary: &str,
    config_path: Option<&Path>,
    server_of: fn(&C) -> &ServerConfig,
    args: &HealthcheckArgs,
) -> ExitCode {
    let config: C = match crate::config::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            println!("ERROR: {binary}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("ERROR: {binary}: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let verdict = runtime.block_on(crate::healthcheck::check(server_of(&config), args));
    println!("{}", verdict.line);
    if verdict.serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
