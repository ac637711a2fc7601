//! The CSV format of ImportTokens: one token per line,
//! `serial,seed,type,digits,period_or_counter`, where `seed` is hex or `base32:<BASE32>`,
//! `type` is `totp` or `hotp`, `digits` 6 or 8, and the last column is the TOTP period in
//! seconds (empty: 30) or the HOTP start counter (empty: 0). Blank lines and lines starting
//! with `#` are skipped. Algorithm: SHA1 (hardware tokens' default).
use std::collections::HashSet;

use super::names::Serial;
use super::tokens::{HashAlgorithm, OtpParameters, TokenKind};

/// A row that can be imported.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportRow {
    pub line: u32,
    pub serial: Serial,
    pub seed: Vec<u8>,
    pub parameters: OtpParameters,
    pub counter: u64,
}

impl std::fmt::Debug for ImportRow {
    // The seed stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportRow")
            .field("line", &self.line)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

/// A row that cannot be imported, with its line number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowError {
    pub line: u32,
    pub serial: String,
    /// gRPC code name: INVALID_ARGUMENT or ALREADY_EXISTS.
    pub code: String,
    pub reason: String,
}

/// The outcome of an import: how many rows were imported and why the others were not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportReport {
    pub imported: u32,
    pub errors: Vec<RowError>,
}

/// Parses the whole file; never fails as a whole.
pub fn parse_csv(csv: &str) -> (Vec<ImportRow>, Vec<RowError>) {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for (index, raw) in csv.lines().enumerate() {
        let line = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let columns: Vec<&str> = text.split(',').map(str::trim).collect();
        let serial_text = columns.first().copied().unwrap_or_default().to_owned();
        let invalid = |reason: String| RowError {
            line,
            serial: serial_text.clone(),
            code: "INVALID_ARGUMENT".to_owned(),
            reason,
        };
        match parse_row(line, &columns) {
            Ok(row) => {
                if seen.insert(row.serial.as_str().to_owned()) {
                    rows.push(row);
                } else {
                    errors.push(RowError {
                        line,
                        serial: serial_text.clone(),
                        code: "ALREADY_EXISTS".to_owned(),
                        reason: format!("serial `{serial_text}` appears earlier in the file"),
                    });
                }
            }
            Err(reason) => errors.push(invalid(reason)),
        }
    }
    (rows, errors)
}

fn parse_row(line: u32, columns: &[&str]) -> Result<ImportRow, String> {
    let [serial, seed, kind, digits, last] = columns else {
        return Err(format!(
            "expected 5 columns (serial,seed,type,digits,period_or_counter), found {}",
            columns.len()
        ));
    };
    let serial = Serial::parse(serial).map_err(|reason| format!("serial: {reason}"))?;
    let seed = parse_seed(seed)?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "totp" => TokenKind::Totp,
        "hotp" => TokenKind::Hotp,
        other => return Err(format!("type: `{other}` is not totp or hotp")),
    };
    let digits: u32 = digits
        .parse()
        .map_err(|_| format!("digits: `{digits}` is not a number"))?;
    let last: u64 = if last.is_empty() {
        0
    } else {
        last.parse()
            .map_err(|_| format!("period_or_counter: `{last}` is not a number"))?
    };
    let (period, counter) = match kind {
        TokenKind::Totp => (last, 0),
        _ => (0, last),
    };
    let parameters = OtpParameters::new(kind, digits, period, HashAlgorithm::Sha1)
        .map_err(|(field, reason)| format!("{field}: {reason}"))?;
    Ok(ImportRow {
        line,
        serial,
        seed,
        parameters,
        counter,
    })
}

fn parse_seed(raw: &str) -> Result<Vec<u8>, String> {
    let seed = match raw.strip_prefix("base32:") {
        Some(encoded) => totp_rs::Secret::try_from_base32(encoded.trim())
            .map(|secret| secret.as_ref().to_vec())
            .map_err(|_| "seed: not valid base32".to_owned())?,
        None => hex::decode(raw)
            .map_err(|_| "seed: not valid hex (prefix base32: for base32)".to_owned())?,
    };
    if seed.len() < 10 || seed.len() > 64 {
        return Err(format!(
            "seed: {} bytes; 10..=64 bytes are accepted",
            seed.len()
        ));
    }
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_rows_with_line_numbers() {
        let csv = "# serial,seed,type,digits,period_or_counter\n\
                   HW0001,3132333435363738393031323334353637383930,totp,6,30\n\
                   HW0002,base32:GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,hotp,8,5\n\
                   \n\
                   HW0003,zz,totp,6,30\n\
                   HW0004,3132333435363738393031323334353637383930,totp,7,30\n\
                   HW0001,3132333435363738393031323334353637383930,totp,6,30\n\
                   HW0005,3132333435363738393031323334353637383930\n\
                   HW0006,3132333435363738393031323334353637383930,sms,6,\n";
        let (rows, errors) = parse_csv(csv);
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(rows[1].counter, 5);
        assert_eq!(rows[1].parameters.digits, 8);
        assert_eq!(rows[1].seed, b"12345678901234567890");
        let summary: Vec<(u32, &str)> = errors.iter().map(|e| (e.line, e.code.as_str())).collect();
        assert_eq!(
            summary,
            [
                (5, "INVALID_ARGUMENT"),
                (6, "INVALID_ARGUMENT"),
                (7, "ALREADY_EXISTS"),
                (8, "INVALID_ARGUMENT"),
                (9, "INVALID_ARGUMENT")
            ]
        );
        assert!(errors[0].reason.starts_with("seed"));
        assert!(errors[1].reason.starts_with("digits"));
        assert!(
            errors.iter().all(|e| !e.reason.contains("3132")),
            "seeds never echoed"
        );
    }
}
