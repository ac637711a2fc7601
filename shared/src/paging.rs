//! Paging of the list RPCs, one definition for both services: page sizes (default and
//! largest) and opaque page tokens that name the last item of the previous page.

/// The page size used when a request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// The largest page a request may ask for.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// Why a page request was refused; `field` names the request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PageError {
    pub field: &'static str,
    pub message: String,
}

/// The longest ordering key a page token may carry (ids, serials and names are shorter).
pub const MAX_KEY_CHARS: usize = 512;

/// A position in a listing: the ordering key of the last item a page showed.
pub trait PageKey: Sized {
    fn encode(&self) -> String;
    fn decode(raw: &str) -> Option<Self>;
}

impl PageKey for String {
    fn encode(&self) -> String {
        hex::encode(self)
    }

    /// Refuses what no key of ours can be (so a forged token is INVALID_ARGUMENT, never a
    /// database error): a NUL, which PostgreSQL cannot compare, or a key over
    /// [`MAX_KEY_CHARS`] characters.
    fn decode(raw: &str) -> Option<Self> {
        if raw.len() > 2 * 4 * MAX_KEY_CHARS {
            return None;
        }
        let key = String::from_utf8(hex::decode(raw).ok()?).ok()?;
        crate::text::check_storable(&key, MAX_KEY_CHARS).ok()?;
        Some(key)
    }
}

impl PageKey for i64 {
    fn encode(&self) -> String {
        hex::encode(self.to_string())
    }

    fn decode(raw: &str) -> Option<Self> {
        String::decode(raw)?.parse().ok()
    }
}

/// A validated page request: at most `size` items after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<K> {
    pub size: u64,
    pub after: Option<K>,
}

impl<K: PageKey> PageRequest<K> {
    /// Parses the `page_size` and `page_token` fields of a list request.
    pub fn parse(page_size: u32, page_token: &str) -> Result<Self, PageError> {
        let size = match u64::from(page_size) {
            0 => DEFAULT_PAGE_SIZE,
            size if size <= MAX_PAGE_SIZE => size,
            _ => {
                return Err(PageError {
                    field: "page_size",
                    message: format!("must be at most {MAX_PAGE_SIZE}"),
                });
            }
        };
        let after = match page_token.trim() {
            "" => None,
            token => Some(K::decode(token).ok_or_else(|| PageError {
                field: "page_token",
                message: "not a token returned by this service".to_owned(),
            })?),
        };
        Ok(Self { size, after })
    }

    /// How many rows to read: one more than the page, which tells whether another follows.
    pub fn fetch(&self) -> u64 {
        self.size + 1
    }
}

impl<K> Default for PageRequest<K> {
    fn default() -> Self {
        Self {
            size: DEFAULT_PAGE_SIZE,
            after: None,
        }
    }
}

/// One page of a listing and the token of the next page ("" on the last page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

impl<T> Page<T> {
    /// Cuts rows read with [`PageRequest::fetch`] into a page.
    pub fn cut<K: PageKey>(mut rows: Vec<T>, size: u64, key: impl Fn(&T) -> K) -> Self {
        let next_page_token = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last().map(|row| key(row).encode()).unwrap_or_default()
        } else {
            String::new()
        };
        Self {
            items: rows,
            next_page_token,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_page_token: self.next_page_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_cap() {
        assert_eq!(
            PageRequest::<String>::parse(0, "").unwrap().size,
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(PageRequest::<String>::parse(7, "").unwrap().size, 7);
        let error = PageRequest::<String>::parse(1001, "").unwrap_err();
        assert_eq!(error.field, "page_size");
    }

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        let page = Page::cut(vec![1i64, 2, 3], 2, |id| *id);
        assert_eq!(page.items, vec![1, 2]);
        let next = PageRequest::<i64>::parse(2, &page.next_page_token).unwrap();
        assert_eq!(next.after, Some(2));
        let last = Page::cut(vec!["a".to_owned()], 2, Clone::clone);
        assert!(last.next_page_token.is_empty());
        // Hex of a NUL, and of a key longer than any: refused as well.
        let long = hex::encode("k".repeat(MAX_KEY_CHARS + 1));
        for bad in ["zz", "ffff", "%%%", "00", "6100", long.as_str()] {
            let error = PageRequest::<i64>::parse(0, bad).unwrap_err();
            assert_eq!(error.field, "page_token");
            let error = PageRequest::<String>::parse(0, bad).unwrap_err();
            assert_eq!(error.field, "page_token", "{bad}");
        }
    }
}

/// Property tests: arbitrary tokens and sizes never panic, tokens round-trip. The case count
/// is proptest's default (256), raised with `PROPTEST_CASES` for a longer run.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_requests_parse_or_name_their_field(size in any::<u32>(), token in any::<String>()) {
            for result in [
                PageRequest::<String>::parse(size, &token).map(|request| request.size),
                PageRequest::<i64>::parse(size, &token).map(|request| request.size),
            ] {
                match result {
                    Ok(size) => prop_assert!((1..=MAX_PAGE_SIZE).contains(&size)),
                    Err(error) => prop_assert!(["page_size", "page_token"].contains(&error.field)),
                }
            }
        }

        #[test]
        fn string_and_integer_keys_round_trip(
            text in any::<String>().prop_filter("a storable key", |text| !text.contains('\0')),
            number in any::<i64>(),
        ) {
            prop_assert_eq!(String::decode(&text.encode()), Some(text.clone()));
            prop_assert_eq!(i64::decode(&number.encode()), Some(number));
            // A token the service handed out is accepted back as the same position.
            let after = PageRequest::<String>::parse(1, &text.encode()).map(|request| request.after);
            prop_assert_eq!(after, Ok(Some(text.clone()).filter(|text| !text.is_empty())));
        }

        #[test]
        fn cut_pages_hand_out_the_last_key(mut rows in proptest::collection::vec(any::<i64>(), 0..40), size in 1u64..20) {
            rows.sort_unstable();
            let page = Page::cut(rows.clone(), size, |row| *row);
            prop_assert!(page.items.len() as u64 <= size);
            if rows.len() as u64 > size {
                let next = PageRequest::<i64>::parse(1, &page.next_page_token);
                prop_assert_eq!(next.map(|request| request.after), Ok(page.items.last().copied()));
            } else {
                prop_assert!(page.next_page_token.is_empty());
            }
        }
    }
}
