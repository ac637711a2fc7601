//! `lockout`: the Validate attacks of issue 18 against users who hold tokens. It imports
//! HOTP tokens (seeds derived from `--seed`, so it can play their owners), assigns one to
//! each victim, lets each victim pass once from its own address (a known client, with a
//! device token), then:
//! 1. outsiders vs. a known client: wrong passes for victim 0 from rotating addresses while
//!    victim 0's right codes from home and with its device token must pass;
//! 2. the realm budget: wrong passes across victims from rotating addresses, then every
//!    victim's right code from home (must pass) and from a fresh address (refused);
//! 3. guessing across users: random codes across victims from rotating addresses; the
//!    audit trail says how many were checked, and the formula turns that into takeovers a
//!    year.
//!
//! Run the stack with short windows (e.g. `ENROLL_VALIDATION__REALM_FAILURE_WINDOW_SECS=60`)
//! and pass the same values here, so the figures are for the configuration under test.
use std::collections::BTreeMap;
use std::time::Instant;

use enroll_device::domain::otp::code;
use enroll_device::domain::tokens::{HashAlgorithm, OtpParameters, TokenKind};
use enroll_shared::proto::device::v1 as device;
use rand::{Rng, RngCore, SeedableRng};

use crate::{DeviceClient, Error, Keys, with_key};

#[derive(clap::Args, Clone)]
pub struct Settings {
    /// The realm under attack.
    #[arg(long, default_value = "lockout")]
    realm: String,
    /// Victims (users holding one HOTP token each).
    #[arg(long, default_value_t = 20)]
    victims: u32,
    /// Derives the tokens' seeds.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    /// Outsider guesses against victim 0 in phase 1.
    #[arg(long, default_value_t = 200)]
    outsiders: u32,
    /// Guesses across victims in phase 3.
    #[arg(long, default_value_t = 1_000)]
    guesses: u32,
    /// `validation.realm_failures_per_window` of the stack.
    #[arg(long, default_value_t = 100)]
    realm_failures: u32,
    /// `validation.realm_failure_window_secs` of the stack.
    #[arg(long, default_value_t = 3_600)]
    realm_window_secs: u64,
    /// `validation.hotp_look_ahead` of the stack: codes accepted per guess are this + 1.
    #[arg(long, default_value_t = 10)]
    look_ahead: u64,
}

fn hotp() -> OtpParameters {
    OtpParameters {
        kind: TokenKind::Hotp,
        digits: 6,
        period: 0,
        algorithm: HashAlgorithm::Sha1,
    }
}

/// A victim: name, serial, seed, home address, next counter and device token.
struct Victim {
    name: String,
    serial: String,
    seed: [u8; 20],
    home: String,
    counter: u64,
    device_token: String,
}

fn random_address() -> String {
    let mut rng = rand::rng();
    format!(
        "10.{}.{}.{}",
        rng.random_range(0..=255u8),
        rng.random_range(0..=255u8),
        rng.random_range(1..=254u8)
    )
}

async fn validate(
    client: &mut DeviceClient,
    keys: &Keys,
    realm: &str,
    user: &str,
    pass: String,
    ip: &str,
    device_token: &str,
) -> Result<device::ValidateResponse, Error> {
    let request = device::ValidateRequest {
        realm: realm.to_owned(),
        user: user.to_owned(),
        pass,
        client_ip: ip.to_owned(),
        device_token: device_token.to_owned(),
        ..Default::default()
    };
    Ok(client
        .validate(with_key(request, &keys.proxy))
        .await?
        .into_inner())
}

/// The victim's next right code from `ip` (with its device token when `with_token`).
async fn own_code(
    client: &mut DeviceClient,
    keys: &Keys,
    realm: &str,
    victim: &mut Victim,
    ip: &str,
    with_token: bool,
) -> Result<bool, Error> {
    let pass = code(&hotp(), &victim.seed, victim.counter);
    let token = if with_token {
        victim.device_token.clone()
    } else {
        String::new()
    };
    let answer = validate(client, keys, realm, &victim.name, pass, ip, &token).await?;
    if answer.ok {
        victim.counter += 1;
        victim.device_token = answer.device_token;
    }
    Ok(answer.ok)
}

async fn setup(
    client: &mut DeviceClient,
    keys: &Keys,
    settings: &Settings,
    tag: u64,
) -> Result<Vec<Victim>, Error> {
    let mut victims = Vec::new();
    let mut csv = String::new();
    for i in 0..settings.victims {
        let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed ^ (tag << 20) ^ u64::from(i));
        let mut seed = [0u8; 20];
        rng.fill_bytes(&mut seed);
        let serial = format!("LO{tag:05}{i:05}");
        let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        csv.push_str(&format!("{serial},{hex},hotp,6,0\n"));
        victims.push(Victim {
            name: format!("victim-{tag}-{i}"),
            serial,
            seed,
            home: format!("192.0.2.{}", i % 250 + 1),
            counter: 0,
            device_token: String::new(),
        });
    }
    let request = device::ImportTokensRequest {
        realm: settings.realm.clone(),
        csv,
        request_id: String::new(),
    };
    client.import_tokens(with_key(request, &keys.admin)).await?;
    for victim in &mut victims {
        let request = device::AssignTokenRequest {
            serial: victim.serial.clone(),
            realm: settings.realm.clone(),
            user: victim.name.clone(),
            ..Default::default()
        };
        client.assign_token(with_key(request, &keys.admin)).await?;
        let home = victim.home.clone();
        if !own_code(client, keys, &settings.realm, victim, &home, false).await? {
            return Err(format!("{} could not pass from home", victim.name).into());
        }
    }
    Ok(victims)
}

/// Validate audit events of the realm since `after_id`, grouped by what met them.
async fn reasons(
    client: &mut DeviceClient,
    keys: &Keys,
    realm: &str,
    after_id: i64,
) -> Result<(BTreeMap<&'static str, u32>, i64), Error> {
    let mut kinds = BTreeMap::new();
    let mut last = after_id;
    let mut page_token = String::new();
    loop {
        let request = device::ListAuditEventsRequest {
            realm: realm.to_owned(),
            action: "validate".to_owned(),
            page_size: 1000,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = client
            .list_audit_events(with_key(request, &keys.admin))
            .await?
            .into_inner();
        for event in page.events.iter().filter(|event| event.id > after_id) {
            last = last.max(event.id);
            let reason = event.reason.as_str();
            let kind = if event.result == "ok" {
                "passed"
            } else if reason.starts_with("wrong pass (") {
                "checked: wrong pass"
            } else if reason.contains("realm's failure budget") {
                "refused unchecked: the realm's failure budget"
            } else if reason.contains("user's failure budget") {
                "refused unchecked: the user's failure budget"
            } else if reason.contains("backing off") {
                "refused unchecked: the pair backing off"
            } else if reason.contains("Validate budget") {
                "refused unchecked: the client's Validate budget"
            } else {
                "other"
            };
            *kinds.entry(kind).or_default() += 1;
        }
        if page.next_page_token.is_empty() {
            return Ok((kinds, last));
        }
        page_token = page.next_page_token;
    }
}

fn print_reasons(kinds: &BTreeMap<&'static str, u32>) {
    for (kind, count) in kinds {
        println!("    {kind}: {count}");
    }
}

pub async fn run(settings: &Settings, client: &DeviceClient, keys: &Keys) -> Result<(), Error> {
    let mut client = client.clone();
    let realm = settings.realm.clone();
    let tag = crate::unix_now() % 100_000;
    println!("== setup: {} victims pass once from home", settings.victims);
    let mut victims = setup(&mut client, keys, settings, tag).await?;
    let (_, mut seen) = reasons(&mut client, keys, &realm, 0).await?;

    println!("== 1. outsiders vs. a known client");
    let (mut own, mut own_ok) = (0, 0);
    let every = (settings.outsiders / 20).max(1);
    for i in 0..settings.outsiders {
        let name = victims[0].name.clone();
        validate(
            &mut client,
            keys,
            &realm,
            &name,
            "999999".into(),
            &random_address(),
            "",
        )
        .await?;
        if i % every == every - 1 {
            let (home, with_token) = if i % 2 == 0 {
                (victims[0].home.clone(), false)
            } else {
                (random_address(), true)
            };
            own += 1;
            own_ok += u32::from(
                own_code(
                    &mut client,
                    keys,
                    &realm,
                    &mut victims[0],
                    &home,
                    with_token,
                )
                .await?,
            );
        }
    }
    println!(
        "  victim 0's right codes (home address, or device token from anywhere): {own_ok} of {own} passed"
    );
    let (kinds, last) = reasons(&mut client, keys, &realm, seen).await?;
    print_reasons(&kinds);
    seen = last;

    println!("== 2. the realm budget");
    for i in 0..settings.realm_failures + 20 {
        let victim = &victims[i as usize % victims.len()];
        validate(
            &mut client,
            keys,
            &realm,
            &victim.name,
            "999999".into(),
            &random_address(),
            "",
        )
        .await?;
    }
    let (mut known_ok, mut unknown_ok) = (0, 0);
    for victim in &mut victims {
        let fresh = random_address();
        // A fresh address first: refused while the budget is spent (the code stays unused).
        unknown_ok += u32::from(own_code(&mut client, keys, &realm, victim, &fresh, false).await?);
        let home = victim.home.clone();
        known_ok += u32::from(own_code(&mut client, keys, &realm, victim, &home, false).await?);
    }
    println!(
        "  right codes: known clients {known_ok} of {n} passed, unknown clients {unknown_ok} of {n} passed",
        n = victims.len()
    );
    let (kinds, last) = reasons(&mut client, keys, &realm, seen).await?;
    print_reasons(&kinds);
    seen = last;

    println!("== 3. guessing across users ({} guesses)", settings.guesses);
    let started = Instant::now();
    let mut takeovers = 0;
    for g in 0..settings.guesses {
        let victim = &victims[g as usize % victims.len()];
        let guess = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
        let answer = validate(
            &mut client,
            keys,
            &realm,
            &victim.name,
            guess,
            &random_address(),
            "",
        )
        .await?;
        takeovers += u32::from(answer.ok);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (kinds, _) = reasons(&mut client, keys, &realm, seen).await?;
    print_reasons(&kinds);
    let checked = kinds.get("checked: wrong pass").copied().unwrap_or(0);
    let p = (settings.look_ahead + 1) as f64 / 1e6;
    let bound_per_hour =
        f64::from(settings.realm_failures) * 3_600.0 / settings.realm_window_secs.max(1) as f64;
    println!(
        "  {takeovers} takeovers; {checked} of {} guesses checked in {elapsed:.1} s",
        settings.guesses
    );
    println!(
        "  bound: {} failures per {} s = {bound_per_hour:.0} checked guesses an hour per realm; \
         x {p:.1e} per guess (HOTP, {} codes) x 8766 h = {:.2} expected takeovers a year \
         (PIN-less 6-digit TOTP, 3 codes: {:.2})",
        settings.realm_failures,
        settings.realm_window_secs,
        settings.look_ahead + 1,
        bound_per_hour * p * 8_766.0,
        bound_per_hour * 3e-6 * 8_766.0
    );
    Ok(())
}
