//! One module per command group.
pub mod apply;
pub mod audit;
pub mod device;
pub mod events;
pub mod health;
pub mod import;
pub mod link;
pub mod metadata;
pub mod otp_link;
pub mod policy;
pub mod stream;
pub mod token;
pub mod upgrade;

use std::path::Path;

use crate::Ctx;
use crate::error::CliError;

/// The most items a list request asks for.
const MAX_PAGE_SIZE: usize = 1000;

/// An optional flag as the proto's "empty = not given".
pub fn optional(value: Option<String>) -> String {
    value.unwrap_or_default()
}

/// The page size for the next request of a list capped at `limit` (0: no cap) that holds
/// `have` items so far.
pub fn page_size(limit: usize, have: usize) -> u32 {
    let wanted = if limit == 0 {
        MAX_PAGE_SIZE
    } else {
        limit.saturating_sub(have).clamp(1, MAX_PAGE_SIZE)
    };
    u32::try_from(wanted).unwrap_or(1000)
}

pub fn write_out(ctx: &mut Ctx<'_>, text: &str) -> Result<(), CliError> {
    ctx.out.write_all(text.as_bytes())?;
    Ok(())
}

pub fn write_json_out(ctx: &mut Ctx<'_>, value: &serde_json::Value) -> Result<(), CliError> {
    crate::output::write_json(ctx.out, value)
}

/// The text of `path`, or of standard input for `-`.
pub fn read_input(ctx: &mut Ctx<'_>, path: &Path) -> Result<String, CliError> {
    if path == Path::new("-") {
        let mut text = String::new();
        ctx.input
            .read_to_string(&mut text)
            .map_err(|error| CliError::usage(format!("standard input: {error}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .map_err(|error| CliError::usage(format!("{}: {error}", path.display())))
}

/// A note for the operator on stderr (progress, warnings), in table mode only: JSON
/// output keeps stderr for the error object.
pub fn note(ctx: &mut Ctx<'_>, text: &str) {
    if !ctx.json() {
        let _ = ctx.err.write_all(text.as_bytes());
        let _ = ctx.err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_respect_the_limit_and_the_service_maximum() {
        assert_eq!(page_size(0, 0), 1000);
        assert_eq!(page_size(50, 0), 50);
        assert_eq!(page_size(50, 45), 5);
        assert_eq!(page_size(5000, 0), 1000);
    }
}
