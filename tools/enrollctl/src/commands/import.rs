//! `enrollctl token import`: a CSV file sent in batches (progress between them), row
//! errors mapped back to the file's line numbers.
use enroll_shared::proto::device::v1 as pb;
use serde_json::json;

use super::{note, write_json_out, write_out};
use crate::Ctx;
use crate::cli::ImportArgs;
use crate::connect::Service;
use crate::error::{CliError, exit};
use crate::json::list_json;
use crate::output::Table;

/// The data rows of a CSV file with their line numbers (comments and blank lines left
/// out), cut into batches of `batch_size` rows (0: one batch).
fn batches(text: &str, batch_size: usize) -> Vec<Vec<(u32, &str)>> {
    let rows: Vec<(u32, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('#')
        })
        .map(|(index, line)| (u32::try_from(index + 1).unwrap_or(u32::MAX), line))
        .collect();
    if rows.is_empty() {
        return Vec::new();
    }
    let size = if batch_size == 0 {
        rows.len()
    } else {
        batch_size
    };
    rows.chunks(size).map(<[_]>::to_vec).collect()
}

pub async fn run(ctx: &mut Ctx<'_>, args: ImportArgs) -> Result<(), CliError> {
    let text = super::read_input(ctx, &args.file)?;
    let batches = batches(&text, args.batch_size);
    let total: usize = batches.iter().map(Vec::len).sum();
    if total == 0 {
        return Err(CliError::usage(format!(
            "{}: no token rows (serial,seed,type,digits,period_or_counter)",
            args.file.display()
        )));
    }
    let mut client = ctx.conn.device();
    let mut imported: u32 = 0;
    let mut errors: Vec<pb::ImportRowError> = Vec::new();
    let mut sent = 0;
    for (number, batch) in batches.iter().enumerate() {
        let csv: Vec<&str> = batch.iter().map(|(_, line)| *line).collect();
        let response = client
            .import_tokens(pb::ImportTokensRequest {
                realm: args.realm.clone(),
                csv: csv.join("\n"),
                request_id: String::new(),
            })
            .await;
        let response = match response {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let error = ctx.conn.error(Service::Device)(status);
                if number > 0 {
                    note(
                        ctx,
                        &format!(
                            "batch {} of {} failed; {imported} token(s) of the earlier batches \
                             stay imported (up to line {})\n",
                            number + 1,
                            batches.len(),
                            batches[number - 1]
                                .last()
                                .map(|(line, _)| *line)
                                .unwrap_or(0)
                        ),
                    );
                }
                return Err(error);
            }
        };
        imported += response.imported;
        for mut error in response.errors {
            // The service numbers the rows it was sent; the operator reads the file.
            let index = usize::try_from(error.line.saturating_sub(1)).unwrap_or(usize::MAX);
            if let Some((line, _)) = batch.get(index) {
                error.line = *line;
            }
            errors.push(error);
        }
        sent += batch.len();
        if batches.len() > 1 {
            note(
                ctx,
                &format!(
                    "import: {sent}/{total} rows sent ({}%), {imported} imported, {} rejected\n",
                    sent * 100 / total,
                    errors.len()
                ),
            );
        }
    }
    if ctx.json() {
        write_json_out(
            ctx,
            &json!({"imported": imported, "rows": total, "errors": list_json(&errors)?}),
        )?;
    } else {
        let mut text = format!(
            "imported {imported} of {total} row(s) into the pool of {}\n",
            args.realm
        );
        if !errors.is_empty() {
            let mut table = Table::new(&["LINE", "SERIAL", "CODE", "REASON"]);
            for error in &errors {
                table.row(vec![
                    error.line.to_string(),
                    error.serial.clone(),
                    error.code.clone(),
                    error.reason.clone(),
                ]);
            }
            text.push('\n');
            text.push_str(&table.render());
        }
        write_out(ctx, &text)?;
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Outcome {
            code: exit::PARTIAL,
            message: format!("{} row(s) were not imported", errors.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_skip_comments_and_keep_line_numbers() {
        let csv =
            "# serial,seed,type,digits,period\nA,00,totp,6,30\n\nB,00,totp,6,30\nC,00,hotp,6,0\n";
        let cut = batches(csv, 2);
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[0], [(2, "A,00,totp,6,30"), (4, "B,00,totp,6,30")]);
        assert_eq!(cut[1], [(5, "C,00,hotp,6,0")]);
        assert_eq!(batches(csv, 0).len(), 1);
        assert!(batches("# only a comment\n", 10).is_empty());
    }
}
