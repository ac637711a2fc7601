//! Human output (aligned tables, key/value blocks) and JSON output.
use std::io::Write;

use clap::ValueEnum;
use serde_json::Value;

use crate::error::CliError;

/// `--output`: human tables (the default) or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
}

/// Text from the services shown in a terminal: control characters (an escape sequence in a
/// stored user agent or reason) are escaped so they cannot rewrite the operator's screen,
/// and a cell stays on one line.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A table with a header row; columns are as wide as their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows
            .push(cells.iter().map(|cell| printable(cell)).collect());
    }

    /// The table as text, one line per row; the last column is not padded.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (index, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(index) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (index, cell) in cells.enumerate() {
                if index > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if index + 1 < widths.len() {
                    let pad = widths[index].saturating_sub(cell.chars().count());
                    text.push_str(&" ".repeat(pad));
                }
            }
            let mut text = text.trim_end().to_owned();
            text.push('\n');
            text
        };
        let mut text = line(&mut self.headers.iter().copied());
        for row in &self.rows {
            text.push_str(&line(&mut row.iter().map(String::as_str)));
        }
        text
    }
}

/// `key: value` lines with the values aligned.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(key, _)| key.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| {
            let pad = " ".repeat(width - key.chars().count());
            format!("{key}:{pad} {}\n", printable(value))
                .trim_end()
                .to_owned()
                + "\n"
        })
        .collect()
}

/// Writes `value` as pretty JSON and a newline.
pub fn write_json(out: &mut dyn Write, value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::local(format!("encoding JSON: {error}")))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Writes `value` as one JSON line (streams such as `audit tail`).
pub fn write_json_line(out: &mut dyn Write, value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|error| CliError::local(format!("encoding JSON: {error}")))?;
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// A timestamp for humans, UTC to the second; empty when unset.
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| {
            let nanos = u32::try_from(t.nanos).ok()?;
            chrono::DateTime::from_timestamp(t.seconds, nanos)
        })
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A duration for humans (`30s`); empty when unset.
pub fn duration(duration: Option<&prost_types::Duration>) -> String {
    duration
        .map(|d| format!("{}s", d.seconds))
        .unwrap_or_default()
}

/// `yes` / `no`.
pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_owned()
}

/// An enum value's proto name without its type prefix, lower case (`TOKEN_STATE_ENABLED`
/// -> `enabled`); the raw number when unknown.
pub fn enum_label(name: Option<&str>, prefix: &str, raw: i32) -> String {
    match name {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_escape_control_characters() {
        let mut table = Table::new(&["SERIAL", "STATE", "USER"]);
        table.row(vec!["TOTP1".into(), "enabled".into(), "alice".into()]);
        table.row(vec![
            "HOTP000000000002".into(),
            "lost".into(),
            "ev\u{1b}[2Jil".into(),
        ]);
        assert_eq!(
            table.render(),
            "SERIAL            STATE    USER\n\
             TOTP1             enabled  alice\n\
             HOTP000000000002  lost     ev\\u{1b}[2Jil\n"
        );
    }

    #[test]
    fn key_values_align_and_drop_trailing_spaces() {
        assert_eq!(
            key_values(&[("serial", "TOTP1".into()), ("user", String::new())]),
            "serial: TOTP1\nuser:\n"
        );
    }

    #[test]
    fn times_and_enums_read_well() {
        let t = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 5,
        };
        assert_eq!(time(Some(&t)), "2027-01-15 08:00:00Z");
        assert_eq!(time(None), "");
        assert_eq!(
            enum_label(Some("TOKEN_STATE_ENABLED"), "TOKEN_STATE_", 1),
            "enabled"
        );
        assert_eq!(enum_label(None, "TOKEN_STATE_", 9), "9");
    }
}
