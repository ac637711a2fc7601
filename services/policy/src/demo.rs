//! The demo data `enroll-policy seed-demo` inserts: one realm's enrollment policy.
use std::collections::BTreeMap;
use std::sync::Arc;

use enroll_shared::time::{Clock, SystemClock};

use crate::app::migrate;
use crate::config::PolicyConfig;
use crate::domain::policy::PolicySpec;
use crate::store::{ChangeContext, DEMO_ACTOR, PolicyStore, SeaOrmPolicyStore, StoreError};

/// The demo realm.
pub const DEMO_REALM: &str = "demo";

/// The demo policy: realistic settings for the `demo` realm.
pub fn demo_policy() -> PolicySpec {
    let actions: BTreeMap<String, String> = [
        ("max_token_per_user", "3"),
        ("max_token_per_realm", "1000"),
        ("tokenlabel", "<u>@<r>"),
        ("tokenissuer", "Enroll demo"),
        ("autoassignment", "true"),
        ("otp_pin_minlength", "4"),
        ("otp_pin_contents", "n"),
        ("lostTokenPWLen", "12"),
        ("lostTokenValid", "3"),
        ("webauthn_device_type", "any"),
        ("require_device_approval", "true"),
        ("enrollment_link_ttl_hours", "48"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    PolicySpec {
        name: "demo-enrollment".into(),
        scope: "enrollment".into(),
        realms: vec![DEMO_REALM.into()],
        users: vec!["*".into()],
        clients: vec![],
        actions,
        priority: 10,
        active: true,
        description: "Demo: three tokens per user, labels user@realm, autoassignment on".into(),
    }
}

/// Migrates and inserts the demo policy unless it exists.
pub async fn seed(config: &PolicyConfig) -> Result<(), Box<dyn std::error::Error>> {
    migrate(config).await?;
    let db = enroll_shared::db::connect(&config.database).await?;
    let store = Arc::new(SeaOrmPolicyStore::new(db));
    let (spec, _) = demo_policy()
        .validate()
        .map_err(|invalid| invalid.message)?;
    let context = ChangeContext {
        actor: DEMO_ACTOR.into(),
        now: SystemClock.now(),
    };
    match store.create(spec, context).await {
        Ok(_) => println!("demo policy `demo-enrollment` created for realm `{DEMO_REALM}`"),
        Err(StoreError::AlreadyExists(_)) => println!("demo policy already present"),
        Err(error) => return Err(error.into()),
    }
    Ok(())
}
