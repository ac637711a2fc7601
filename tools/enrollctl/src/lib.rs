//! `enrollctl`, the operators' CLI of the enrollment services.
//!
//! [`run`] is the whole program, writing to the given streams and returning the exit code,
//! so tests drive it in-process against running services.
use std::ffi::OsString;
use std::io::{BufRead, Write};

use clap::Parser;
use clap::error::ErrorKind;

pub mod cli;
mod commands;
mod config;
mod connect;
pub mod error;
mod json;
mod output;
mod policy_file;
mod qr;

use cli::{Cli, Command};
use config::Settings;
use connect::Connection;
use error::{CliError, exit};
use output::OutputFormat;

/// What a command has to work with.
pub(crate) struct Ctx<'a> {
    pub conn: Connection,
    pub output: OutputFormat,
    /// Who acts (audit trail, policy history).
    pub actor: String,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub input: &'a mut dyn BufRead,
}

impl Ctx<'_> {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

/// Runs `enrollctl` with `args` (the program name first) and returns its exit code;
/// standard input is the process's (PINs with `--pin-stdin`, `-` files).
pub async fn run(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    run_with_input(args, &mut input, out, err).await
}

/// [`run`] reading standard input from `input`.
pub async fn run_with_input(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let text = error.render().to_string();
            return match error.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = write!(out, "{text}");
                    if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        exit::USAGE
                    } else {
                        exit::OK
                    }
                }
                _ => {
                    let _ = write!(err, "{text}");
                    exit::USAGE
                }
            };
        }
    };
    // JSON errors when JSON output was asked for, even if the settings fail to resolve.
    let mut output = cli.global.output.unwrap_or(OutputFormat::Table);
    let result = match Settings::resolve(&cli.global) {
        Ok(settings) => {
            output = settings.output;
            match Connection::new(&settings) {
                Ok(conn) => {
                    let warnings = conn.warnings.clone();
                    let mut ctx = Ctx {
                        conn,
                        output,
                        actor: settings.actor.clone(),
                        out,
                        err,
                        input,
                    };
                    for warning in &warnings {
                        commands::note(&mut ctx, warning);
                    }
                    let result = dispatch(&mut ctx, cli.command).await;
                    let _ = ctx.out.flush();
                    return report(result, output, ctx.err);
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    };
    report(result, output, err)
}

fn report(result: Result<(), CliError>, output: OutputFormat, err: &mut dyn Write) -> i32 {
    match result {
        Ok(()) => exit::OK,
        Err(error) => {
            let _ = match output {
                OutputFormat::Table => write!(err, "{}", error.render_text()),
                OutputFormat::Json => writeln!(err, "{}", error.render_json()),
            };
            error.exit_code()
        }
    }
}

async fn dispatch(ctx: &mut Ctx<'_>, command: Command) -> Result<(), CliError> {
    match command {
        Command::Policy(command) => commands::policy::run(ctx, command).await,
        Command::Token(command) => commands::token::run(ctx, command).await,
        Command::Link(command) => commands::link::run(ctx, command).await,
        Command::OtpLink(command) => commands::otp_link::run(ctx, command).await,
        Command::Device(command) => commands::device::run(ctx, command).await,
        Command::Audit(command) => commands::audit::run(ctx, command).await,
        Command::Metadata(command) => commands::metadata::run(ctx, command).await,
        Command::Events(command) => commands::events::run(ctx, command).await,
        Command::Stream(command) => commands::stream::run(ctx, command).await,
        Command::SigningKey(command) => commands::stream::signing_key(ctx, command).await,
        Command::Health => commands::health::run(ctx).await,
        Command::UpgradeReport => commands::upgrade::run(ctx).await,
    }
}
