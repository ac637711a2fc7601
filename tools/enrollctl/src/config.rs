//! Connection settings: flags and ENROLLCTL_* (clap), then the config file's profile, then
//! its top-level keys, then the defaults.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::GlobalArgs;
use crate::error::CliError;
use crate::output::OutputFormat;

pub const DEFAULT_POLICY_ADDR: &str = "http://127.0.0.1:50051";
pub const DEFAULT_DEVICE_ADDR: &str = "http://127.0.0.1:50052";
const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// Keys of the config file, at the top level and in each `[profiles.NAME]`. No `Debug`:
/// it may hold the API key.
#[derive(Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    policy_addr: Option<String>,
    device_addr: Option<String>,
    api_key: Option<String>,
    api_key_file: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
    timeout_secs: Option<u64>,
    actor: Option<String>,
    output: Option<OutputFormat>,
}

impl FileSettings {
    /// `self` where set, else `fallback`.
    fn or(self, fallback: FileSettings) -> FileSettings {
        FileSettings {
            policy_addr: self.policy_addr.or(fallback.policy_addr),
            device_addr: self.device_addr.or(fallback.device_addr),
            api_key: self.api_key.or(fallback.api_key),
            api_key_file: self.api_key_file.or(fallback.api_key_file),
            ca: self.ca.or(fallback.ca),
            cert: self.cert.or(fallback.cert),
            key: self.key.or(fallback.key),
            server_name: self.server_name.or(fallback.server_name),
            timeout_secs: self.timeout_secs.or(fallback.timeout_secs),
            actor: self.actor.or(fallback.actor),
            output: self.output.or(fallback.output),
        }
    }

    /// Paths relative to the config file's folder.
    fn anchored_at(mut self, folder: &Path) -> FileSettings {
        for path in [
            &mut self.api_key_file,
            &mut self.ca,
            &mut self.cert,
            &mut self.key,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        }
        self
    }
}

/// Everything a command needs to reach the services. No `Debug`: it holds the API key.
#[derive(Clone)]
pub struct Settings {
    pub policy_addr: String,
    pub device_addr: String,
    /// The API key; never printed.
    pub api_key: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub timeout: Duration,
    pub actor: String,
    pub output: OutputFormat,
}

impl Settings {
    pub fn resolve(args: &GlobalArgs) -> Result<Settings, CliError> {
        let file = load_file(args)?;
        let flags = FileSettings {
            policy_addr: args.policy_addr.clone(),
            device_addr: args.device_addr.clone(),
            api_key: args.api_key.clone(),
            api_key_file: args.api_key_file.clone(),
            ca: args.ca.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
            server_name: args.server_name.clone(),
            timeout_secs: args.timeout,
            actor: args.actor.clone(),
            output: args.output,
        };
        // The first of: the key from a flag or the environment, the key file from a flag or
        // the environment, the config file's key file, the config file's key.
        let api_key = match (&args.api_key, &args.api_key_file) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(path)) => Some(read_key_file(path)?),
            (None, None) => match &file.api_key_file {
                Some(path) => Some(read_key_file(path)?),
                None => file.api_key.clone(),
            },
        }
        .map(|key| key.trim().to_owned());
        let merged = flags.or(file);
        if merged.cert.is_some() != merged.key.is_some() {
            return Err(CliError::usage(
                "mutual TLS needs both a client certificate (--cert) and its key (--key)",
            ));
        }
        let actor = merged
            .actor
            .or_else(|| std::env::var("USER").ok())
            .filter(|actor| !actor.trim().is_empty())
            .unwrap_or_else(|| "enrollctl".to_owned());
        Ok(Settings {
            policy_addr: merged
                .policy_addr
                .unwrap_or_else(|| DEFAULT_POLICY_ADDR.to_owned()),
            device_addr: merged
                .device_addr
                .unwrap_or_else(|| DEFAULT_DEVICE_ADDR.to_owned()),
            api_key: api_key.filter(|key| !key.is_empty()),
            ca: merged.ca,
            cert: merged.cert,
            key: merged.key,
            server_name: merged.server_name,
            timeout: Duration::from_secs(merged.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS)),
            actor,
            output: merged.output.unwrap_or(OutputFormat::Table),
        })
    }
}

fn read_key_file(path: &Path) -> Result<String, CliError> {
    let key = std::fs::read_to_string(path)
        .map_err(|error| CliError::usage(format!("API key file {}: {error}", path.display())))?;
    check_key_file_mode(path)?;
    Ok(key)
}

/// Refuses a key file that other local users can read: whoever reads it holds the key, like
/// ssh refuses a private key with such a mode. The key itself stays out of the message.
#[cfg(unix)]
fn check_key_file_mode(path: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|error| CliError::usage(format!("API key file {}: {error}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CliError::usage(format!(
            "API key file {} is readable or writable by group or others (mode {:04o}); \
             restrict it: chmod 600 {}",
            path.display(),
            mode & 0o7777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_key_file_mode(_path: &Path) -> Result<(), CliError> {
    Ok(())
}

/// The default config file: $XDG_CONFIG_HOME/enrollctl/config.toml, else
/// ~/.config/enrollctl/config.toml.
fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("enrollctl").join("config.toml"))
}

/// The settings of the config file for the selected profile (empty when there is no file
/// and none was named).
fn load_file(args: &GlobalArgs) -> Result<FileSettings, CliError> {
    let (path, named) = match &args.config {
        Some(path) => (path.clone(), true),
        None => match default_config_path() {
            Some(path) if path.exists() => (path, false),
            _ => {
                return match &args.profile {
                    Some(profile) => Err(CliError::usage(format!(
                        "profile `{profile}` given but there is no config file"
                    ))),
                    None => Ok(FileSettings::default()),
                };
            }
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|error| {
        CliError::usage(format!(
            "config file {}: {error}{}",
            path.display(),
            if named { "" } else { " (the default)" }
        ))
    })?;
    let folder = path.parent().unwrap_or(Path::new("."));
    parse_file(&text, args.profile.as_deref())
        .map(|settings| settings.anchored_at(folder))
        .map_err(|message| CliError::usage(format!("config file {}: {message}", path.display())))
}

fn parse_file(text: &str, profile: Option<&str>) -> Result<FileSettings, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|error| error.to_string())?;
    let default_profile = match table.remove("default_profile") {
        Some(toml::Value::String(name)) => Some(name),
        Some(_) => return Err("default_profile must be a string".to_owned()),
        None => None,
    };
    let profiles: BTreeMap<String, FileSettings> = match table.remove("profiles") {
        Some(value) => value
            .try_into()
            .map_err(|error: toml::de::Error| format!("profiles: {error}"))?,
        None => BTreeMap::new(),
    };
    let top: FileSettings = toml::Value::Table(table)
        .try_into()
        .map_err(|error: toml::de::Error| error.to_string())?;
    let selected = profile.map(str::to_owned).or(default_profile);
    let Some(name) = selected else {
        return Ok(top);
    };
    let chosen = profiles.get(&name).cloned().ok_or_else(|| {
        let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
        format!("no profile `{name}` (profiles: {})", known.join(", "))
    })?;
    Ok(chosen.or(top))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        timeout_secs = 5
        ca = "ca.pem"
        default_profile = "staging"

        [profiles.staging]
        policy_addr = "https://policy.staging:50051"

        [profiles.prod]
        policy_addr = "https://policy.prod:50051"
        device_addr = "https://device.prod:50052"
        ca = "/etc/enroll/prod-ca.pem"
    "#;

    #[test]
    fn a_profile_overrides_the_top_level_keys() {
        let prod = parse_file(FILE, Some("prod")).unwrap();
        assert_eq!(
            prod.policy_addr.as_deref(),
            Some("https://policy.prod:50051")
        );
        assert_eq!(prod.ca, Some(PathBuf::from("/etc/enroll/prod-ca.pem")));
        assert_eq!(prod.timeout_secs, Some(5));
        let staging = parse_file(FILE, None).unwrap();
        assert_eq!(
            staging.policy_addr.as_deref(),
            Some("https://policy.staging:50051")
        );
        assert_eq!(staging.device_addr, None);
        let anchored = staging.anchored_at(Path::new("/home/ops/.config/enrollctl"));
        assert_eq!(
            anchored.ca,
            Some(PathBuf::from("/home/ops/.config/enrollctl/ca.pem"))
        );
    }

    #[test]
    fn unknown_keys_and_profiles_are_refused() {
        let refusal = |text: &str, profile: Option<&str>| match parse_file(text, profile) {
            Ok(_) => panic!("accepted"),
            Err(message) => message,
        };
        assert!(refusal("polcy_addr = \"x\"", None).contains("polcy_addr"));
        assert!(refusal(FILE, Some("dev")).contains("no profile `dev` (profiles: prod, staging)"));
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("enrollctl-key-{}", std::process::id()));
        std::fs::write(&path, "the-key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = read_key_file(&path).expect_err("mode 0644 is refused");
        let message = refused.render_text();
        assert!(
            message.contains("mode 0644") && message.contains("chmod 600"),
            "{message}"
        );
        assert!(!message.contains("the-key"), "{message}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).ok().as_deref(), Some("the-key\n"));
        std::fs::remove_file(&path).unwrap();
    }
}
