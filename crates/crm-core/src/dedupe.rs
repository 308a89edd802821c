//! Dedupe: records sharing a key become one, by a [`MergePolicy`].
//!
//! ```
//! use crm_core::dedupe::{Deduper, MergePolicy};
//! use crm_core::Record;
//!
//! let deduper = Deduper::new(["email"]).case_insensitive().policy(MergePolicy::FieldwiseNonNull);
//! let out = deduper.dedupe(vec![
//!     Record::new().with("email", "Ada@Example.com").with("phone", "+441234"),
//!     Record::new().with("email", "ada@example.com").with("company", "Engines Ltd"),
//! ]);
//! assert_eq!(out.records.len(), 1);
//! assert_eq!(out.records[0].text("phone"), Some("+441234"));
//! assert_eq!(out.records[0].text("company"), Some("Engines Ltd"));
//! assert_eq!(out.merged[0].count, 2);
//! ```

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// How records sharing a key are merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergePolicy {
    /// Keep the first record seen.
    First,
    /// Keep the last record seen.
    #[default]
    Last,
    /// Keep the record with the latest `updated_at` (a record without one is
    /// the oldest; on a tie the later one in input order wins).
    Newest,
    /// Build one record field by field: each field takes its value from the
    /// newest record (as for `Newest`) that has it not blank.
    FieldwiseNonNull,
}

/// One key that had more than one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedGroup {
    /// The (normalised) key.
    pub key: String,
    /// How many records shared it.
    pub count: usize,
}

/// The result of [`Deduper::dedupe`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DedupeOutcome {
    /// One record per key (plus every keyless record), in order of first appearance.
    pub records: Vec<Record>,
    /// The keys that had duplicates.
    pub merged: Vec<MergedGroup>,
    /// Records whose key was blank: kept as they are, never merged.
    pub keyless: usize,
}

impl DedupeOutcome {
    /// How many input records were folded into others.
    pub fn removed(&self) -> usize {
        self.merged.iter().map(|g| g.count - 1).sum()
    }
}

/// Dedupes records by a key of one or more fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deduper {
    key: Vec<String>,
    #[serde(default)]
    policy: MergePolicy,
    #[serde(default)]
    case_insensitive: bool,
}

impl Deduper {
    /// A deduper keyed by `fields` (all must be non-blank for a record to have a key),
    /// with the [`MergePolicy::Last`] policy and exact key comparison.
    pub fn new<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Deduper {
            key: fields.into_iter().map(Into::into).collect(),
            policy: MergePolicy::default(),
            case_insensitive: false,
        }
    }

    /// Sets the merge policy.
    #[must_use]
    pub fn policy(mut self, policy: MergePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Compares keys trimmed and case-insensitively (right for emails).
    #[must_use]
    pub fn case_insensitive(mut self) -> Self {
        self.case_insensitive = true;
        self
    }

    /// The normalised key of a record, or `None` if a key field is blank.
    pub fn key_of(&self, record: &Record) -> Option<String> {
        let mut parts = Vec::with_capacity(self.key.len());
        for field in &self.key {
            let v = record.get(field).filter(|v| !v.is_blank())?;
            let text = v.to_string();
            let text = text.trim();
            parts.push(if self.case_insensitive {
                text.to_lowercase()
            } else {
                text.to_owned()
            });
        }
        Some(parts.join("\u{1f}"))
    }

    /// Dedupes `records`. Idempotent: deduping the output again changes nothing.
    pub fn dedupe(&self, records: Vec<Record>) -> DedupeOutcome {
        enum Slot {
            Keyless(Record),
            Group(String),
        }
        let mut order = Vec::new();
        let mut groups: IndexMap<String, Vec<Record>> = IndexMap::new();
        let mut keyless = 0;
        for record in records {
            match self.key_of(&record) {
                None => {
                    keyless += 1;
                    order.push(Slot::Keyless(record));
                }
                Some(key) => {
                    let group = groups.entry(key.clone()).or_default();
                    if group.is_empty() {
                        order.push(Slot::Group(key));
                    }
                    group.push(record);
                }
            }
        }
        let mut out = DedupeOutcome {
            keyless,
            ..DedupeOutcome::default()
        };
        for slot in order {
            match slot {
                Slot::Keyless(r) => out.records.push(r),
                Slot::Group(key) => {
                    let Some(group) = groups.swap_remove(&key) else {
                        continue;
                    };
                    if group.len() > 1 {
                        out.merged.push(MergedGroup {
                            key: key.clone(),
                            count: group.len(),
                        });
                    }
                    if let Some(merged) = self.merge(group) {
                        out.records.push(merged);
                    }
                }
            }
        }
        out
    }

    fn merge(&self, mut group: Vec<Record>) -> Option<Record> {
        match self.policy {
            MergePolicy::First => group.into_iter().next(),
            MergePolicy::Last => group.pop(),
            MergePolicy::Newest => newest_first(group).into_iter().next(),
            MergePolicy::FieldwiseNonNull => {
                let ordered = newest_first(group);
                let mut merged = ordered.first()?.clone();
                merged.id = ordered.iter().find_map(|r| r.id.clone());
                merged.updated_at = ordered.iter().filter_map(|r| r.updated_at).max();
                for record in &ordered[1..] {
                    for (name, value) in &record.fields {
                        // Take the value where the merged record has none, or
                        // has a blank one and this record does not.
                        let take = match merged.get(name) {
                            None => true,
                            Some(v) => v.is_blank() && !value.is_blank(),
                        };
                        if take {
                            merged.set(name.clone(), value.clone());
                        }
                    }
                }
                Some(merged)
            }
        }
    }
}

/// Orders a group newest first; later input wins ties.
fn newest_first(group: Vec<Record>) -> Vec<Record> {
    let mut indexed: Vec<(usize, Record)> = group.into_iter().enumerate().collect();
    indexed.sort_by(|(ia, a), (ib, b)| b.updated_at.cmp(&a.updated_at).then(ib.cmp(ia)));
    indexed.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;
    use chrono::DateTime;
    use proptest::prelude::*;

    fn rec(key: &str, n: i64, at: Option<i64>) -> Record {
        let mut r = Record::new().with("booking_id", key).with("n", n);
        r.updated_at = at.and_then(|s| DateTime::from_timestamp(s, 0));
        r
    }

    #[test]
    fn policies() {
        let input = vec![
            rec("a", 1, Some(30)),
            rec("b", 2, None),
            rec("a", 3, Some(10)),
            rec("a", 4, Some(20)),
        ];
        let n = |p: MergePolicy| {
            let out = Deduper::new(["booking_id"]).policy(p).dedupe(input.clone());
            out.records
                .iter()
                .map(|r| r.get("n").cloned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            n(MergePolicy::First),
            [Some(Value::Int(1)), Some(Value::Int(2))]
        );
        assert_eq!(
            n(MergePolicy::Last),
            [Some(Value::Int(4)), Some(Value::Int(2))]
        );
        assert_eq!(
            n(MergePolicy::Newest),
            [Some(Value::Int(1)), Some(Value::Int(2))]
        );
    }

    #[test]
    fn fieldwise_fills_blanks_from_older_records() {
        let newer = rec("a", 1, Some(20))
            .with("email", "")
            .with("phone", Value::Null);
        let older = rec("a", 2, Some(10))
            .with("email", "x@y.com")
            .with("phone", "+1")
            .with("extra", "e");
        let out = Deduper::new(["booking_id"])
            .policy(MergePolicy::FieldwiseNonNull)
            .dedupe(vec![older, newer]);
        let r = &out.records[0];
        assert_eq!(r.get("n"), Some(&Value::Int(1)), "newest non-blank wins");
        assert_eq!(r.text("email"), Some("x@y.com"));
        assert_eq!(r.text("phone"), Some("+1"));
        assert_eq!(r.text("extra"), Some("e"));
        assert_eq!(r.updated_at, DateTime::from_timestamp(20, 0));
        assert_eq!(out.removed(), 1);
    }

    #[test]
    fn keyless_records_are_kept() {
        let out = Deduper::new(["email"]).dedupe(vec![
            Record::new().with("email", ""),
            Record::new(),
            Record::new().with("email", "a@b.co"),
        ]);
        assert_eq!(out.records.len(), 3);
        assert_eq!(out.keyless, 2);
    }

    #[test]
    fn composite_keys_and_case() {
        let d = Deduper::new(["first", "last"]).case_insensitive();
        let out = d.dedupe(vec![
            Record::new().with("first", "Ada").with("last", "Lovelace"),
            Record::new()
                .with("first", " ada ")
                .with("last", "LOVELACE"),
            Record::new().with("first", "Ada").with("last", "Byron"),
        ]);
        assert_eq!(out.records.len(), 2);
    }

    fn arb_records() -> impl Strategy<Value = Vec<Record>> {
        proptest::collection::vec(
            (
                "[abc]{0,1}",
                any::<i64>(),
                proptest::option::of(0i64..5),
                proptest::option::of("[xy]{0,1}"),
            ),
            0..30,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .map(|(k, n, at, extra)| {
                    let mut r = rec(&k, n, at);
                    if let Some(e) = extra {
                        r.set("extra", e);
                    }
                    r
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn dedupe_is_idempotent(records in arb_records(), p in 0usize..4) {
            let policy = [MergePolicy::First, MergePolicy::Last, MergePolicy::Newest, MergePolicy::FieldwiseNonNull][p];
            let d = Deduper::new(["booking_id"]).policy(policy);
            let once = d.dedupe(records.clone());
            let twice = d.dedupe(once.records.clone());
            prop_assert_eq!(&twice.records, &once.records);
            prop_assert!(twice.merged.is_empty());
            // Nothing is lost: every input key is still there.
            let keys_in: std::collections::BTreeSet<_> = records.iter().filter_map(|r| d.key_of(r)).collect();
            let keys_out: std::collections::BTreeSet<_> = once.records.iter().filter_map(|r| d.key_of(r)).collect();
            prop_assert_eq!(keys_in, keys_out);
            prop_assert_eq!(once.records.len() + once.removed(), records.len());
        }
    }
}
