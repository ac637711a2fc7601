//! `docs/configuration.md` lists every key of both services' configuration, with its
//! environment variable and kind; this test holds it to the config structs in both
//! directions, naming each key that is missing, unknown or described wrongly.
use std::collections::BTreeMap;

use enroll_device::config::DeviceConfig;
use enroll_policy::config::PolicyConfig;

use crate::config_probe::keys_of;

const DOC: &str = "docs/configuration.md";
const SERVICES: [&str; 2] = ["policy", "device"];

/// One row of the document's key tables:
/// `| key | service | environment variable | type | default | meaning |`.
#[derive(Debug)]
struct Row {
    line: usize,
    key: String,
    services: Vec<&'static str>,
    env: String,
    kind: String,
}

fn code(cell: &str) -> Option<&str> {
    cell.strip_prefix('`')?.strip_suffix('`')
}

fn parse_rows(text: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(inner) = line.trim().strip_prefix("| `") else {
            continue;
        };
        let row = format!("`{inner}");
        let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
        if cells.len() < 6 {
            continue;
        }
        let line_number = index + 1;
        let services = match cells[1] {
            "both" => SERVICES.to_vec(),
            "policy" => vec!["policy"],
            "device" => vec!["device"],
            other => {
                return Err(format!(
                    "{DOC}:{line_number}: service `{other}` is not `both`, `policy` or `device`"
                ));
            }
        };
        let key = code(cells[0])
            .ok_or_else(|| format!("{DOC}:{line_number}: the key cell is not `code`"))?;
        rows.push(Row {
            line: line_number,
            key: key.to_owned(),
            services,
            env: cells[2].to_owned(),
            kind: cells[3].to_owned(),
        });
    }
    Ok(rows)
}

/// `server.tls.cert` -> `ENROLL_SERVER__TLS__CERT`.
fn env_var(key: &str) -> String {
    format!("ENROLL_{}", key.replace('.', "__").to_ascii_uppercase())
}

/// The row to add for a key the document lacks.
fn suggested_row(key: &str, services: &str, kind: &str) -> String {
    let env = match key.split_once("[]") {
        Some((array, _)) => format!("in `{}`", env_var(array)),
        None => format!("`{}`", env_var(key)),
    };
    format!("| `{key}` | {services} | {env} | {kind} | <default> | <what it does> |")
}

fn check(rows: &[Row], actual: &BTreeMap<&str, BTreeMap<String, &'static str>>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut documented: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for row in rows {
        for service in &row.services {
            if let Some(first) = documented.insert((*service, row.key.as_str()), row.line) {
                problems.push(format!(
                    "{DOC}:{}: `{}` ({service}) is documented twice (also line {first})",
                    row.line, row.key
                ));
            }
            match actual[service].get(&row.key) {
                None => problems.push(format!(
                    "{DOC}:{}: `{}` is documented for the {service} service, which has no such \
                     key: remove the row or fix its name or service",
                    row.line, row.key
                )),
                Some(kind) if !row.kind.starts_with(kind) => problems.push(format!(
                    "{DOC}:{}: `{}` ({service}) is a {kind}; its type cell says `{}`",
                    row.line, row.key, row.kind
                )),
                Some(_) => {}
            }
        }
        let expected_env = match row.key.split_once("[]") {
            Some((array, _)) => env_var(array),
            None => env_var(&row.key),
        };
        if !row.env.contains(&format!("`{expected_env}`")) {
            problems.push(format!(
                "{DOC}:{}: the environment variable of `{}` is `{expected_env}`; the row says `{}`",
                row.line, row.key, row.env
            ));
        }
    }
    let mut missing: BTreeMap<&str, (Vec<&str>, &str)> = BTreeMap::new();
    for (service, keys) in actual {
        for (key, kind) in keys {
            if !documented.contains_key(&(*service, key.as_str())) {
                let entry = missing.entry(key.as_str()).or_insert((Vec::new(), kind));
                entry.0.push(service);
            }
        }
    }
    for (key, (services, kind)) in missing {
        let services = if services.len() == SERVICES.len() {
            "both".to_owned()
        } else {
            services.join(", ")
        };
        problems.push(format!(
            "{DOC} does not document `{key}` ({services}): add this row to the table of its \
             section, with its default and meaning:\n    {}",
            suggested_row(key, &services, kind)
        ));
    }
    problems
}

#[test]
fn configuration_reference_lists_exactly_the_keys_of_both_services() {
    let text = std::fs::read_to_string(crate::repo_path(DOC)).unwrap();
    let rows = parse_rows(&text).unwrap_or_else(|problem| panic!("{problem}"));
    let actual = BTreeMap::from([
        ("policy", keys_of::<PolicyConfig>()),
        ("device", keys_of::<DeviceConfig>()),
    ]);
    assert!(
        actual
            .values()
            .all(|keys| keys.contains_key("server.listen")),
        "the probe sees the config structs: {actual:?}"
    );
    let problems = check(&rows, &actual);
    assert!(
        problems.is_empty(),
        "{DOC} and the config structs disagree:\n- {}",
        problems.join("\n- ")
    );
}

#[test]
fn the_check_names_missing_unknown_and_misdescribed_keys() {
    let doc = "\
| `server.listen` | both | `ENROLL_SERVER__LISTEN` | string | x | y |
| `cache.poll_interval_ms` | policy | `ENROLL_CACHE__POLL_MS` | integer | 500 | y |
| `cache.gone` | policy | `ENROLL_CACHE__GONE` | integer | 1 | y |
| `web.listen` | device | `ENROLL_WEB__LISTEN` | boolean | 1 | y |
";
    let rows = parse_rows(doc).unwrap();
    let keys = |pairs: &[(&str, &'static str)]| {
        pairs
            .iter()
            .map(|(key, kind)| (key.to_string(), *kind))
            .collect()
    };
    let actual = BTreeMap::from([
        (
            "policy",
            keys(&[
                ("server.listen", "string"),
                ("cache.poll_interval_ms", "integer"),
            ]),
        ),
        (
            "device",
            keys(&[
                ("server.listen", "string"),
                ("web.listen", "string"),
                ("metrics.listen_addr", "string"),
            ]),
        ),
    ]);
    let problems = check(&rows, &actual).join("\n");
    assert!(
        problems.contains("`ENROLL_CACHE__POLL_INTERVAL_MS`"),
        "{problems}"
    );
    assert!(
        problems
            .contains("`cache.gone` is documented for the policy service, which has no such key"),
        "{problems}"
    );
    assert!(
        problems.contains("`web.listen` (device) is a string"),
        "{problems}"
    );
    assert!(
        problems.contains(
            "| `metrics.listen_addr` | device | `ENROLL_METRICS__LISTEN_ADDR` | string |"
        ),
        "{problems}"
    );
    assert_eq!(
        problems.lines().filter(|line| line.contains(DOC)).count(),
        4,
        "{problems}"
    );
}
