//! `enrollctl token ...`
use enroll_shared::proto::device::v1 as pb;
use serde_json::json;

use super::{note, optional, write_json_out, write_out};
use crate::Ctx;
use crate::cli::{
    Algorithm, EnrollArgs, OtpType, TokenCommand, TokenListArgs, TokenStateFilter, TokenTypeFilter,
};
use crate::connect::Service;
use crate::error::{CliError, exit};
use crate::json::{list_json, to_json};
use crate::output::{Table, duration, enum_label, key_values, time, yes_no};

pub async fn run(ctx: &mut Ctx<'_>, command: TokenCommand) -> Result<(), CliError> {
    let mut client = ctx.conn.device();
    let token = match command {
        TokenCommand::Enroll(args) => return enroll(ctx, args).await,
        TokenCommand::Import(args) => return super::import::run(ctx, args).await,
        TokenCommand::List(args) => return list(ctx, args).await,
        TokenCommand::Lost { serial, client } => return lost(ctx, serial, client).await,
        TokenCommand::SetPin {
            serial,
            pin_stdin,
            client: client_ip,
        } => {
            let pin = read_pin(ctx, pin_stdin)?;
            client
                .set_pin(pb::SetPinRequest {
                    serial,
                    pin,
                    client_ip: optional(client_ip),
                    request_id: String::new(),
                })
                .await
        }
        TokenCommand::Get { serial } => client.get_token(pb::GetTokenRequest { serial }).await,
        TokenCommand::Assign {
            serial,
            realm,
            user,
            client: client_ip,
            request_id,
            code,
        } => {
            client
                .assign_token(pb::AssignTokenRequest {
                    serial,
                    realm,
                    user,
                    client_ip: optional(client_ip),
                    request_id: optional(request_id),
                    code: optional(code),
                })
                .await
        }
        TokenCommand::Verify {
            serial,
            code,
            realm,
            client: client_ip,
        } => {
            let realm = match realm {
                Some(realm) => realm,
                None => {
                    client
                        .get_token(pb::GetTokenRequest {
                            serial: serial.clone(),
                        })
                        .await
                        .map_err(ctx.conn.error(Service::Device))?
                        .into_inner()
                        .realm
                }
            };
            client
                .verify_token(pb::VerifyTokenRequest {
                    realm,
                    serial,
                    code,
                    client_ip: optional(client_ip),
                })
                .await
        }
        TokenCommand::Unassign { serial } => {
            client
                .unassign_token(pb::UnassignTokenRequest {
                    serial,
                    request_id: String::new(),
                })
                .await
        }
        TokenCommand::Enable { serial } => {
            client
                .enable_token(pb::EnableTokenRequest {
                    serial,
                    request_id: String::new(),
                })
                .await
        }
        TokenCommand::Disable { serial } => {
            client
                .disable_token(pb::DisableTokenRequest {
                    serial,
                    request_id: String::new(),
                })
                .await
        }
        TokenCommand::Delete { serial } => {
            client
                .delete_token(pb::DeleteTokenRequest {
                    serial: serial.clone(),
                    request_id: String::new(),
                })
                .await
                .map_err(ctx.conn.error(Service::Device))?;
            if ctx.json() {
                return write_json_out(ctx, &json!({ "deleted": serial }));
            }
            return write_out(ctx, &format!("deleted token {serial}\n"));
        }
    }
    .map_err(ctx.conn.error(Service::Device))?
    .into_inner();
    if ctx.json() {
        return write_json_out(ctx, &to_json(&token)?);
    }
    write_out(ctx, &token_text(&token))
}

pub fn token_type(raw: i32) -> String {
    let name = pb::TokenType::try_from(raw).ok().map(|t| t.as_str_name());
    enum_label(name, "TOKEN_TYPE_", raw)
}

fn token_state(raw: i32) -> String {
    let name = pb::TokenState::try_from(raw).ok().map(|s| s.as_str_name());
    enum_label(name, "TOKEN_STATE_", raw)
}

fn enrollment_state(raw: i32) -> String {
    let name = pb::EnrollmentState::try_from(raw)
        .ok()
        .map(|s| s.as_str_name());
    enum_label(name, "ENROLLMENT_STATE_", raw)
}

pub fn algorithm_name(raw: i32) -> String {
    let name = pb::HashAlgorithm::try_from(raw)
        .ok()
        .map(|a| a.as_str_name());
    enum_label(name, "HASH_ALGORITHM_", raw)
}

pub fn otp_type(arg: OtpType) -> pb::TokenType {
    match arg {
        OtpType::Totp => pb::TokenType::Totp,
        OtpType::Hotp => pb::TokenType::Hotp,
    }
}

pub fn algorithm(arg: Option<Algorithm>) -> pb::HashAlgorithm {
    match arg {
        None => pb::HashAlgorithm::Unspecified,
        Some(Algorithm::Sha1) => pb::HashAlgorithm::Sha1,
        Some(Algorithm::Sha256) => pb::HashAlgorithm::Sha256,
        Some(Algorithm::Sha512) => pb::HashAlgorithm::Sha512,
    }
}

pub fn token_text(token: &pb::Token) -> String {
    key_values(&[
        ("serial", token.serial.clone()),
        ("type", token_type(token.r#type)),
        ("realm", token.realm.clone()),
        ("user", token.user.clone()),
        ("state", token_state(token.state)),
        ("enrollment", enrollment_state(token.enrollment_state)),
        ("label", token.label.clone()),
        ("digits", token.digits.to_string()),
        ("period", duration(token.period.as_ref())),
        ("algorithm", algorithm_name(token.algorithm)),
        ("pin set", yes_no(token.has_pin)),
        ("failures", token.failure_count.to_string()),
        ("created", time(token.create_time.as_ref())),
        ("expires", time(token.expire_time.as_ref())),
        ("description", token.description.clone()),
    ])
}

async fn enroll(ctx: &mut Ctx<'_>, args: EnrollArgs) -> Result<(), CliError> {
    let enrolled = ctx
        .conn
        .device()
        .enroll_token(pb::EnrollTokenRequest {
            realm: args.realm,
            user: optional(args.user),
            r#type: otp_type(args.token_type) as i32,
            digits: args.digits.unwrap_or(0),
            period: args
                .period
                .map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            algorithm: algorithm(args.algorithm) as i32,
            description: optional(args.description),
            include_qr_png: false,
            client_ip: optional(args.client),
            request_id: optional(args.request_id),
            verify: args.verify,
        })
        .await
        .map_err(ctx.conn.error(Service::Device))?
        .into_inner();
    if ctx.json() {
        return write_json_out(ctx, &to_json(&enrolled)?);
    }
    let token = enrolled.token.clone().unwrap_or_default();
    let mut pairs = vec![
        ("serial", token.serial.clone()),
        ("realm", token.realm.clone()),
        ("user", token.user.clone()),
        ("label", token.label.clone()),
        ("otpauth URI", enrolled.otpauth_uri.clone()),
        ("secret (base32)", enrolled.secret_base32.clone()),
    ];
    if !enrolled.pin.is_empty() {
        pairs.push(("PIN", enrolled.pin.clone()));
    }
    let mut text = key_values(&pairs);
    if !args.no_qr {
        let drawing =
            crate::qr::render(&enrolled.otpauth_uri, args.qr_invert).map_err(CliError::local)?;
        text.push('\n');
        text.push_str(&drawing);
    }
    write_out(ctx, &text)?;
    note(
        ctx,
        "The seed and URI are shown this once: the service never returns them again.\n",
    );
    if args.verify {
        note(
            ctx,
            "The token is verify pending: it validates only after `enrollctl token verify <serial> <code>` within the policy's window.\n",
        );
    }
    Ok(())
}

async fn list(ctx: &mut Ctx<'_>, args: TokenListArgs) -> Result<(), CliError> {
    let mut client = ctx.conn.device();
    let limit = args.list.limit;
    let mut tokens = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tokens(pb::ListTokensRequest {
                realm: args.realm.clone().unwrap_or_default(),
                user: args.user.clone().unwrap_or_default(),
                r#type: match args.token_type {
                    None => pb::TokenType::Unspecified,
                    Some(TokenTypeFilter::Totp) => pb::TokenType::Totp,
                    Some(TokenTypeFilter::Hotp) => pb::TokenType::Hotp,
                    Some(TokenTypeFilter::Password) => pb::TokenType::Password,
                } as i32,
                assigned: if args.assigned {
                    Some(true)
                } else if args.pool {
                    Some(false)
                } else {
                    None
                },
                state: match args.state {
                    None => pb::TokenState::Unspecified,
                    Some(TokenStateFilter::Enabled) => pb::TokenState::Enabled,
                    Some(TokenStateFilter::Disabled) => pb::TokenState::Disabled,
                    Some(TokenStateFilter::Locked) => pb::TokenState::Locked,
                    Some(TokenStateFilter::Lost) => pb::TokenState::Lost,
                } as i32,
                page_size: super::page_size(limit, tokens.len()),
                page_token,
            })
            .await
            .map_err(ctx.conn.error(Service::Device))?
            .into_inner();
        tokens.extend(page.tokens);
        page_token = page.next_page_token;
        if page_token.is_empty() || (limit > 0 && tokens.len() >= limit) {
            break;
        }
    }
    if limit > 0 {
        tokens.truncate(limit);
    }
    if ctx.json() {
        return write_json_out(ctx, &json!({ "tokens": list_json(&tokens)? }));
    }
    let mut table = Table::new(&[
        "SERIAL", "TYPE", "REALM", "USER", "STATE", "PIN", "FAILURES", "LABEL", "CREATED",
    ]);
    for token in &tokens {
        table.row(vec![
            token.serial.clone(),
            token_type(token.r#type),
            token.realm.clone(),
            token.user.clone(),
            token_state(token.state),
            yes_no(token.has_pin),
            token.failure_count.to_string(),
            token.label.clone(),
            time(token.create_time.as_ref()),
        ]);
    }
    write_out(ctx, &table.render())
}

async fn lost(
    ctx: &mut Ctx<'_>,
    serial: String,
    client_ip: Option<String>,
) -> Result<(), CliError> {
    let replaced = ctx
        .conn
        .device()
        .report_lost_token(pb::ReportLostTokenRequest {
            serial: serial.clone(),
            client_ip: optional(client_ip),
            request_id: String::new(),
        })
        .await
        .map_err(ctx.conn.error(Service::Device))?
        .into_inner();
    if ctx.json() {
        return write_json_out(ctx, &to_json(&replaced)?);
    }
    let token = replaced.token.clone().unwrap_or_default();
    write_out(
        ctx,
        &key_values(&[
            ("lost token", serial),
            ("temporary token", token.serial),
            ("user", format!("{}@{}", token.user, token.realm)),
            ("password", replaced.password.clone()),
            ("valid until", time(replaced.expire_time.as_ref())),
        ]),
    )?;
    note(ctx, "The temporary password is shown this once.\n");
    Ok(())
}

/// The PIN: the first line of standard input with `--pin-stdin`, else typed at the
/// terminal without echo (twice, to catch a typo).
fn read_pin(ctx: &mut Ctx<'_>, from_stdin: bool) -> Result<String, CliError> {
    if from_stdin {
        let mut line = String::new();
        ctx.input
            .read_line(&mut line)
            .map_err(|error| CliError::usage(format!("reading the PIN: {error}")))?;
        let pin = line.trim_end_matches(['\r', '\n']).to_owned();
        if pin.is_empty() {
            return Err(CliError::usage("no PIN on standard input"));
        }
        return Ok(pin);
    }
    let no_terminal = |error: std::io::Error| {
        CliError::usage(format!(
            "reading the PIN from the terminal: {error} (scripts: --pin-stdin)"
        ))
    };
    let pin = rpassword::prompt_password("PIN: ").map_err(no_terminal)?;
    let again = rpassword::prompt_password("PIN again: ").map_err(no_terminal)?;
    if pin != again {
        return Err(CliError::Outcome {
            code: exit::USAGE,
            message: "the two PINs differ; nothing changed".to_owned(),
        });
    }
    Ok(pin)
}
