//! QR codes drawn in the terminal with Unicode half blocks: each character is two modules
//! stacked (upper half, lower half), so the code keeps its square shape.
use qrcodegen::{QrCode, QrCodeEcc};

/// Modules of light margin around the code; scanners need a quiet zone.
const QUIET_ZONE: i32 = 2;

/// `text` as a QR code. Drawn light on dark (for the usual dark terminal background)
/// unless `dark_on_light`.
pub fn render(text: &str, dark_on_light: bool) -> Result<String, String> {
    let code = QrCode::encode_text(text, QrCodeEcc::Medium)
        .map_err(|error| format!("QR code: {error:?}"))?;
    // `lit(x, y)`: whether the terminal draws a glyph (foreground colour) for the module.
    let lit = |x: i32, y: i32| {
        let dark = code.get_module(x, y);
        if dark_on_light { dark } else { !dark }
    };
    let size = code.size();
    let mut drawing = String::new();
    let mut y = -QUIET_ZONE;
    while y < size + QUIET_ZONE {
        for x in -QUIET_ZONE..size + QUIET_ZONE {
            drawing.push(match (lit(x, y), lit(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        drawing.push('\n');
        y += 2;
    }
    Ok(drawing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drawing_is_the_code_two_rows_per_line() {
        let uri = "otpauth://totp/enroll:alice?secret=JBSWY3DPEHPK3PXP&issuer=enroll";
        let code = QrCode::encode_text(uri, QrCodeEcc::Medium).unwrap();
        let drawing = render(uri, true).unwrap();
        let lines: Vec<&str> = drawing.lines().collect();
        let width = (code.size() + 2 * QUIET_ZONE) as usize;
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines.iter().all(|line| line.chars().count() == width));
        // Dark on light: the quiet zone is blank, the top-left finder's corner is drawn.
        assert!(lines[0].chars().all(|c| c == ' '));
        let first_code_row: Vec<char> = lines[1].chars().collect();
        assert_eq!(first_code_row[QUIET_ZONE as usize], '█');
        // Light on dark is the exact inverse.
        let inverse = render(uri, false).unwrap();
        assert!(inverse.lines().next().unwrap().chars().all(|c| c == '█'));
    }
}
