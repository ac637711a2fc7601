//! Lists every key a config struct accepts, with its kind, by driving its `Deserialize`
//! impl with a probing deserializer: serde hands `deserialize_struct` the struct's field
//! names, and the method a field's type calls (`deserialize_u64`, `deserialize_seq`, ...)
//! tells its kind. The structs need no `Serialize` and no list kept by hand.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// What the probe found at the end of its path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Leaf(&'static str),
    Table(Vec<&'static str>),
    ArrayOfTables(Vec<&'static str>),
}

/// The probe stops every deserialization with this once it has seen what it came for.
#[derive(Debug)]
struct Stop(String);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Stop {}
impl de::Error for Stop {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Stop(message.to_string())
    }
}

/// Follows `path` (field names; `[]` steps into an array's element) and records the shape
/// of what it reaches.
struct Probe<'a> {
    path: &'a [String],
    in_array: bool,
    found: &'a RefCell<Option<Shape>>,
}

impl<'a> Probe<'a> {
    fn record(&self, shape: Shape) -> Stop {
        *self.found.borrow_mut() = Some(shape);
        Stop("probe done".into())
    }

    fn leaf(self, kind: &'static str) -> Stop {
        if self.path.is_empty() {
            self.record(Shape::Leaf(kind))
        } else {
            Stop(format!("path continues past a {kind}"))
        }
    }

    fn deeper(&self, rest: &'a [String], in_array: bool) -> Probe<'a> {
        Probe {
            path: rest,
            in_array,
            found: self.found,
        }
    }
}

macro_rules! leaf_methods {
    ($($method:ident => $kind:expr),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
            Err(self.leaf($kind))
        })*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    leaf_methods! {
        deserialize_any => "value",
        deserialize_bool => "boolean",
        deserialize_i8 => "integer", deserialize_i16 => "integer", deserialize_i32 => "integer",
        deserialize_i64 => "integer", deserialize_u8 => "integer", deserialize_u16 => "integer",
        deserialize_u32 => "integer", deserialize_u64 => "integer",
        deserialize_f32 => "number", deserialize_f64 => "number",
        deserialize_char => "string", deserialize_str => "string",
        deserialize_string => "string", deserialize_bytes => "string",
        deserialize_byte_buf => "string", deserialize_unit => "value",
        deserialize_map => "table", deserialize_identifier => "string",
        deserialize_ignored_any => "value",
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        Err(self.leaf("value"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        Err(self.leaf("string"))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        Err(self.leaf("array"))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        Err(self.leaf("array"))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        match self.path.split_first() {
            None => {
                // The element decides: an array of tables, or of some leaf kind.
                let element = RefCell::new(None);
                let probe = Probe {
                    path: &[],
                    in_array: true,
                    found: &element,
                };
                let _ = visitor.visit_seq(OneElement(Some(probe)));
                let shape = match element.into_inner() {
                    Some(Shape::ArrayOfTables(fields)) => Shape::ArrayOfTables(fields),
                    Some(Shape::Leaf("string")) => Shape::Leaf("array of strings"),
                    _ => Shape::Leaf("array"),
                };
                Err(self.record(shape))
            }
            Some((step, rest)) if step == "[]" => {
                visitor.visit_seq(OneElement(Some(self.deeper(rest, false))))
            }
            Some((step, _)) => Err(Stop(format!("`{step}` is inside an array"))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.path.split_first() {
            None if self.in_array => Err(self.record(Shape::ArrayOfTables(fields.to_vec()))),
            None => Err(self.record(Shape::Table(fields.to_vec()))),
            Some((step, rest)) => visitor.visit_map(OneField {
                key: Some(step.clone()),
                value: Some(self.deeper(rest, false)),
            }),
        }
    }

    fn is_human_readable(&self) -> bool {
        // As TOML is: addresses and paths deserialize from strings.
        true
    }
}

/// A map with the one field the probe steps into.
struct OneField<'a> {
    key: Option<String>,
    value: Option<Probe<'a>>,
}

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        match self.key.take() {
            Some(key) => seed
                .deserialize(IntoDeserializer::<Stop>::into_deserializer(key))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Stop> {
        let probe = self.value.take().ok_or_else(|| Stop("no value".into()))?;
        seed.deserialize(probe)
    }
}

/// An array with the one element the probe steps into.
struct OneElement<'a>(Option<Probe<'a>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Stop> {
        match self.0.take() {
            Some(probe) => seed.deserialize(probe).map(Some),
            None => Ok(None),
        }
    }
}

fn shape_at<T: de::DeserializeOwned>(path: &[String]) -> Option<Shape> {
    let found = RefCell::new(None);
    let _ = T::deserialize(Probe {
        path,
        in_array: false,
        found: &found,
    });
    found.into_inner()
}

/// Every key `T` accepts, as a dotted path (`server.tls.cert`; array-of-table elements as
/// `auth.api_keys[].name`, the array itself as `auth.api_keys`), with its kind: `integer`,
/// `boolean`, `string`, `array of strings`, `array of tables`, `table`. Sections (tables of
/// settings) are not keys; their settings are.
pub fn keys_of<T: de::DeserializeOwned>() -> BTreeMap<String, &'static str> {
    let mut keys = BTreeMap::new();
    walk::<T>(&mut Vec::new(), &mut keys);
    keys
}

fn walk<T: de::DeserializeOwned>(
    path: &mut Vec<String>,
    keys: &mut BTreeMap<String, &'static str>,
) {
    let dotted = |path: &[String]| path.join(".").replace(".[]", "[]");
    match shape_at::<T>(path) {
        Some(Shape::Leaf(kind)) => {
            keys.insert(dotted(path), kind);
        }
        Some(Shape::Table(fields)) => {
            for field in fields {
                path.push(field.to_owned());
                walk::<T>(path, keys);
                path.pop();
            }
        }
        Some(Shape::ArrayOfTables(fields)) => {
            keys.insert(dotted(path), "array of tables");
            path.push("[]".to_owned());
            for field in fields {
                path.push(field.to_owned());
                walk::<T>(path, keys);
                path.pop();
            }
            path.pop();
        }
        None => panic!("the config probe found nothing at `{}`", dotted(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: String,
        weight: Option<u32>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        enabled: bool,
        paths: Vec<std::path::PathBuf>,
        address: std::net::SocketAddr,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        inner: Inner,
        optional_inner: Option<Inner>,
        items: Vec<Item>,
        table: BTreeMap<String, String>,
        count: u64,
    }

    #[test]
    fn the_probe_lists_every_key_with_its_kind() {
        let keys = keys_of::<Sample>();
        let expected: BTreeMap<String, &str> = [
            ("count", "integer"),
            ("inner.address", "string"),
            ("inner.enabled", "boolean"),
            ("inner.paths", "array of strings"),
            ("items", "array of tables"),
            ("items[].name", "string"),
            ("items[].weight", "integer"),
            ("optional_inner.address", "string"),
            ("optional_inner.enabled", "boolean"),
            ("optional_inner.paths", "array of strings"),
            ("table", "table"),
        ]
        .into_iter()
        .map(|(key, kind)| (key.to_owned(), kind))
        .collect();
        assert_eq!(keys, expected);
    }
}
