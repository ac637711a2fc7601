//! Free text both backends can store: PostgreSQL `text` cannot hold a NUL character (SQLite
//! can), so a NUL is refused at the edge, naming the field, before it can reach either
//! database and come back as a database error.

/// Checks a free-text value: no NUL character and at most `max_chars` characters. The
/// message says what is wrong (never the value: it may be a secret such as a PIN).
pub fn check_storable(value: &str, max_chars: usize) -> Result<(), String> {
    if value.contains('\0') {
        return Err("contains a NUL character (\\0), which cannot be stored".to_owned());
    }
    // Counting stops one past the limit, so a huge value costs no more than a short one.
    if value.chars().nth(max_chars).is_some() {
        return Err(format!("longer than {max_chars} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_and_overlong_values_are_refused() {
        assert!(check_storable("", 4).is_ok());
        assert!(check_storable("abcd", 4).is_ok());
        assert!(check_storable("äöüß", 4).is_ok());
        assert_eq!(
            check_storable("abcde", 4).unwrap_err(),
            "longer than 4 characters"
        );
        assert!(check_storable("a\0b", 4).unwrap_err().contains("NUL"));
        assert!(check_storable("\0", 4).is_err());
    }
}
