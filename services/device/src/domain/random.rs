//! Random strings from character classes (generated PINs, temporary passwords).
use rand::Rng;
use rand::seq::IndexedRandom;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
const SPECIALS: &[u8] = b"!#$%&()*+,-./:;<=>?@[]^_";

/// `length` characters drawn from the classes in `classes` (`c`, `C`, `n`, `s`), with at
/// least one of each class when the length allows. Unknown class letters are ignored; no
/// class at all means `cCn`.
pub fn random_string(rng: &mut impl Rng, length: usize, classes: &str) -> String {
    let mut sets: Vec<&[u8]> = Vec::new();
    for (class, set) in [('c', LOWER), ('C', UPPER), ('n', DIGITS), ('s', SPECIALS)] {
        if classes.contains(class) {
            sets.push(set);
        }
    }
    if sets.is_empty() {
        sets = vec![LOWER, UPPER, DIGITS];
    }
    let all: Vec<u8> = sets.iter().flat_map(|set| set.iter().copied()).collect();
    let mut chars: Vec<u8> = sets
        .iter()
        .take(length)
        .filter_map(|set| set.choose(rng).copied())
        .collect();
    while chars.len() < length {
        if let Some(ch) = all.choose(rng) {
            chars.push(*ch);
        }
    }
    // Shuffle so the guaranteed characters are not always first.
    for i in (1..chars.len()).rev() {
        let j = rng.random_range(0..=i);
        chars.swap(i, j);
    }
    String::from_utf8(chars).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn length_and_classes_are_honoured() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let value = random_string(&mut rng, 12, "cns");
            assert_eq!(value.len(), 12);
            assert!(value.chars().any(|c| c.is_ascii_lowercase()));
            assert!(value.chars().any(|c| c.is_ascii_digit()));
            assert!(value.chars().any(|c| SPECIALS.contains(&(c as u8))));
            assert!(!value.chars().any(|c| c.is_ascii_uppercase()));
        }
        assert_eq!(
            random_string(&mut rng, 4, "n")
                .chars()
                .filter(char::is_ascii_digit)
                .count(),
            4
        );
    }
}
