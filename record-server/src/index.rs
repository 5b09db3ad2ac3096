//! The record file (`records.json`): each id with the timestamp of its record, in the order the
//! ids were first written, as the seed's server kept it (a Python dict dumped with `indent=4`).
//! The updater works from it so that it never has to open every record to find the stale ones.

use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

use crate::record_id::RecordId;
use crate::timestamp::Timestamp;

/// Id to timestamp, in insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordIndex {
    order: Vec<RecordId>,
    stamps: HashMap<RecordId, Timestamp>,
}

/// A record file read back: the entries that make sense, and those that do not (an id that is
/// not a valid id, a value that is not a timestamp), as found.
#[derive(Debug, Default)]
pub struct ParsedIndex {
    /// The usable entries.
    pub index: RecordIndex,
    /// Each unusable entry's key and value, as text.
    pub rejected: Vec<(String, String)>,
}

impl RecordIndex {
    /// The timestamp recorded for `id`.
    pub fn get(&self, id: &RecordId) -> Option<Timestamp> {
        self.stamps.get(id).copied()
    }

    /// Records `id` at `at`; a new id goes last.
    pub fn set(&mut self, id: &RecordId, at: Timestamp) {
        if self.stamps.insert(id.clone(), at).is_none() {
            self.order.push(id.clone());
        }
    }

    /// Forgets `id`; whether it was there.
    pub fn remove(&mut self, id: &RecordId) -> bool {
        if self.stamps.remove(id).is_none() {
            return false;
        }
        self.order.retain(|known| known != id);
        true
    }

    /// How many ids there are.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&RecordId, Timestamp)> {
        self.order.iter().map(|id| (id, self.stamps[id]))
    }

    /// The file's bytes, exactly as Python's `json.dump(records, f, indent=4)` writes them.
    pub fn to_json(&self) -> Vec<u8> {
        if self.is_empty() {
            return b"{}".to_vec();
        }
        // Ids are [A-Za-z0-9_-] and timestamps digits, '-', ':' and ' ': nothing needs escaping.
        let entries: Vec<String> = self
            .iter()
            .map(|(id, at)| format!("    \"{id}\": \"{at}\""))
            .collect();
        format!("{{\n{}\n}}", entries.join(",\n")).into_bytes()
    }

    /// Reads a record file. `Err` when it is not a JSON object at all (empty, truncated,
    /// garbage): the caller rebuilds it from the records.
    pub fn parse(bytes: &[u8]) -> Result<ParsedIndex, String> {
        let entries: Entries = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
        let mut parsed = ParsedIndex::default();
        for (key, value) in entries.0 {
            let stamp = value.as_str().and_then(Timestamp::parse);
            match (RecordId::parse(&key), stamp) {
                (Ok(id), Some(at)) if parsed.index.get(&id).is_none() => parsed.index.set(&id, at),
                _ => parsed.rejected.push((key, value.to_string())),
            }
        }
        Ok(parsed)
    }
}

/// A JSON object's entries in file order (serde_json's own map would sort them).
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of ids and timestamps")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../shared/fixtures/record-v1/records.json");

    #[test]
    fn the_seed_servers_file_reads_in_order_and_writes_back_byte_for_byte() {
        let parsed = RecordIndex::parse(FIXTURE.as_bytes()).unwrap();
        assert!(parsed.rejected.is_empty());
        assert_eq!(parsed.index.len(), 10);
        let ids: Vec<&str> = parsed.index.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(&ids[6..8], ["150999908", "150999907"], "file order kept");
        assert_eq!(String::from_utf8(parsed.index.to_json()).unwrap(), FIXTURE);
    }

    #[test]
    fn nonsense_entries_are_set_aside_and_nonsense_files_refused() {
        let parsed = RecordIndex::parse(
            br#"{"../x": "2024-03-16 04:11:01", "1": 5, "2": "yesterday", "3": "2024-03-16 04:11:01"}"#,
        )
        .unwrap();
        assert_eq!(parsed.index.len(), 1);
        assert_eq!(parsed.rejected.len(), 3);
        for garbage in [&b""[..], b"{\"1\": \"2024", b"[]", b"null", b"\x00\xff"] {
            assert!(RecordIndex::parse(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn an_empty_index_is_an_empty_object() {
        assert_eq!(RecordIndex::default().to_json(), b"{}");
        assert!(RecordIndex::parse(b"{}").unwrap().index.is_empty());
    }

    #[test]
    fn set_and_remove_keep_first_write_order() {
        let mut index = RecordIndex::default();
        let (a, b) = (RecordId::parse("a").unwrap(), RecordId::parse("b").unwrap());
        let t = Timestamp::parse("2024-03-16 04:11:01").unwrap();
        let later = Timestamp::parse("2024-03-17 04:11:01").unwrap();
        index.set(&a, t);
        index.set(&b, t);
        index.set(&a, later);
        let order: Vec<_> = index.iter().map(|(id, at)| (id.as_str(), at)).collect();
        assert_eq!(order, [("a", later), ("b", t)]);
        assert!(index.remove(&a));
        assert!(!index.remove(&a));
        assert_eq!(index.len(), 1);
    }
}
