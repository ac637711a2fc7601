//! Property tests of the device service's parsers and generators: the CSV import never
//! panics and accounts for every line, generated PINs and passwords keep their length and
//! classes. Case count: proptest's default (256), raised with `PROPTEST_CASES`.
use proptest::prelude::*;
use rand::SeedableRng;

use super::import::parse_csv;
use super::random::random_string;

/// A CSV line: sometimes arbitrary, often close to a valid row.
fn csv_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{0,12},([0-9a-f]{0,140}|base32:[A-Z2-7=]{0,40}),(totp|hotp|TOTP|x),(6|8|7|),[0-9]{0,21}",
        "[#, a-z0-9]{0,20}",
    ]
}

/// Whether a character belongs to one class of `random_string`.
type CharTest = fn(char) -> bool;

fn lines_of(csv: &str) -> Vec<(u32, &str)> {
    csv.lines()
        .enumerate()
        .map(|(index, line)| (u32::try_from(index + 1).unwrap_or(u32::MAX), line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

proptest! {
    #[test]
    fn every_csv_line_is_a_row_or_an_error(
        lines in proptest::collection::vec(csv_line(), 0..12),
        separator in prop_oneof![Just("\n"), Just("\r\n")],
        raw in any::<String>(),
    ) {
        for csv in [lines.join(separator), raw] {
            let (rows, errors) = parse_csv(&csv);
            let expected: Vec<u32> = lines_of(&csv).into_iter().map(|(line, _)| line).collect();
            let mut seen: Vec<u32> = rows.iter().map(|row| row.line).chain(errors.iter().map(|error| error.line)).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, expected);
            for error in &errors {
                prop_assert!(["INVALID_ARGUMENT", "ALREADY_EXISTS"].contains(&error.code.as_str()));
            }
            for row in &rows {
                prop_assert!((10..=64).contains(&row.seed.len()));
            }
        }
    }

    #[test]
    fn valid_rows_import(
        serial in "[A-Z][A-Z0-9]{0,15}",
        seed in proptest::collection::vec(any::<u8>(), 10..=64),
        totp in any::<bool>(),
        eight in any::<bool>(),
    ) {
        let kind = if totp { "totp" } else { "hotp" };
        let digits = if eight { 8 } else { 6 };
        let csv = format!("# header\n{serial},{},{kind},{digits},\n", hex::encode(&seed));
        let (rows, errors) = parse_csv(&csv);
        prop_assert!(errors.is_empty(), "{errors:?}");
        prop_assert_eq!(rows.len(), 1);
        prop_assert_eq!(rows[0].line, 2);
        prop_assert_eq!(&rows[0].seed, &seed);
    }

    #[test]
    fn random_strings_keep_length_and_classes(
        length in 0usize..80,
        classes in "[cCnsx ]{0,6}",
        seed in any::<u64>(),
    ) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let value = random_string(&mut rng, length, &classes);
        prop_assert_eq!(value.chars().count(), length);
        prop_assert_eq!(value.len(), length);
        let all: [(char, CharTest); 4] = [
            ('c', |ch| ch.is_ascii_lowercase()),
            ('C', |ch| ch.is_ascii_uppercase()),
            ('n', |ch| ch.is_ascii_digit()),
            ('s', |ch| "!#$%&()*+,-./:;<=>?@[]^_".contains(ch)),
        ];
        let mut wanted: Vec<CharTest> = all
            .iter()
            .filter(|(class, _)| classes.contains(*class))
            .map(|(_, test)| *test)
            .collect();
        // No known class at all means `cCn`.
        if wanted.is_empty() {
            wanted = all[..3].iter().map(|(_, test)| *test).collect();
        }
        // Every character is from a requested class, and each class shows up once the
        // length leaves room for all of them.
        prop_assert!(value.chars().all(|ch| wanted.iter().any(|class| class(ch))), "{value:?}");
        if length >= wanted.len() {
            prop_assert!(wanted.iter().all(|class| value.chars().any(class)), "{value:?}");
        }
    }
}
