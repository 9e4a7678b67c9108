//! [`Fields`]: an ordered list of (name, value) pairs that is a JSON object on the wire.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// An ordered list of (name, value) pairs that serializes as a JSON object in order
/// (and reads back in the order of the JSON text).
#[derive(Debug, Clone, PartialEq)]
pub struct Fields<V>(pub Vec<(String, V)>);

// Not derived: a derive would ask for `V: Default`, which an empty list does not need.
impl<V> Default for Fields<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> Fields<V> {
    /// Appends `name` = `v` (after every earlier field).
    pub fn push(&mut self, name: impl Into<String>, v: V) {
        self.0.push((name.into(), v));
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// True if there is no field.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a, V> FromIterator<(&'a str, V)> for Fields<V> {
    fn from_iter<T: IntoIterator<Item = (&'a str, V)>>(iter: T) -> Self {
        Fields(iter.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

impl<V: Serialize> Serialize for Fields<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Fields<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads a JSON object entry by entry, keeping the text's order.
        struct InOrder<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for InOrder<V> {
            type Value = Fields<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of named values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Fields(out))
            }
        }

        d.deserialize_map(InOrder(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_both_ways() {
        let f: Fields<u64> = [("zeta", 1), ("alpha", 2)].into_iter().collect();
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, r#"{"zeta":1,"alpha":2}"#);
        assert_eq!(f.get("alpha"), Some(&2));
        let back: Fields<u64> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.iter().next(), Some(("zeta", &1)));
    }
}
