//! The manifest: the one mutable object of a repository.
//!
//! It holds HEAD, every ref (with the peeled value of annotated tags, so that ref
//! advertisements need no object reads) and the list of live packs. Invariant: the
//! manifest is only ever written by compare-and-swap (`PutMode::Update` with the tag it
//! was read with) or created with `PutMode::Create`; never overwritten blindly. The
//! packs it lists are closed under reachability.

use std::collections::BTreeMap;

use gix_hash::ObjectId;
use serde::{Deserialize, Serialize};

/// The newest manifest format this server reads and writes. Format 2 adds
/// [`Manifest::unreachable_since`] and [`Manifest::prunes`], format 3
/// [`Manifest::lfs_locks`], format 4 [`Manifest::events`], format 5 sha256 objects
/// ([`Manifest::object_format`]) and [`PackEntry::bundle`]: a manifest is written in the
/// format its fields need, so that a server too old to keep them (or to read the
/// repository's objects) refuses the manifest instead of misreading it or writing it
/// back without them.
pub const FORMAT: u32 = 5;

/// The format of a manifest that needs nothing newer.
pub const BASE_FORMAT: u32 = 1;

/// How many transaction ids a manifest remembers.
pub const RECENT_TXNS: usize = 32;

/// A repository's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`BASE_FORMAT`], or [`FORMAT`] once a field of it is used; a reader refuses a
    /// manifest of a newer format than it knows.
    pub format: u32,
    /// The object format (`sha1` or `sha256`), fixed when the repository is created.
    pub object_format: String,
    /// The ref HEAD points to.
    pub head: String,
    /// Every ref, by full name.
    pub refs: BTreeMap<String, RefValue>,
    /// The live packs, oldest first.
    pub packs: Vec<PackEntry>,
    /// The transactions that wrote this manifest last.
    #[serde(default)]
    pub txns: RecentTxns,
    /// Packs that left `packs` (replaced by compaction) and when: garbage collection
    /// counts their grace period from then, not from when their files were written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
    /// Since when (seconds since the Unix epoch) the packs may hold objects no ref
    /// reaches (a ref deleted or rewound, a push that brought extra objects); `None`
    /// while every object of the packs is reachable. Clones stream stored packs only
    /// then; pruning clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<u64>,
    /// How many prunes have dropped objects from this repository: a push checked
    /// against packs before a prune checks again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prunes: u64,
    /// Whether Git LFS locks were ever taken in this repository: pushes then check that
    /// they change no file locked by someone else. Set before the first lock is
    /// written, never cleared.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lfs_locks: bool,
    /// Push events recorded with the pushes that wrote them, until the webhook
    /// deliverer has made their deliveries (see [`super::event`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<super::event::PendingEvent>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Ids of the last [`RECENT_TXNS`] transactions that wrote a document (a manifest, the
/// access state), newest last: a writer whose compare-and-swap answer was lost
/// recognises its own write even after others wrote on top of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecentTxns(Vec<String>);

impl RecentTxns {
    /// Records that transaction `txn` wrote the document.
    pub fn record(&mut self, txn: &str) {
        self.0.push(txn.to_owned());
        let excess = self.0.len().saturating_sub(RECENT_TXNS);
        self.0.drain(..excess);
    }

    /// Whether transaction `txn` is among the recent writers.
    pub fn has(&self, txn: &str) -> bool {
        self.0.iter().any(|t| t == txn)
    }
}

/// A pack that a compaction took out of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    #[serde(with = "hex_oid")]
    pub hash: ObjectId,
    /// When it left the manifest, in seconds since the Unix epoch.
    pub at: u64,
}

/// A ref's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefValue {
    #[serde(with = "hex_oid")]
    pub id: ObjectId,
    /// For an annotated tag: the object it finally points to.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_oid_opt")]
    pub peeled: Option<ObjectId>,
}

/// One live pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// The pack's checksum (its trailer), which names its files.
    #[serde(with = "hex_oid")]
    pub hash: ObjectId,
    /// Size of the `.pack` file in bytes.
    pub size: u64,
    /// Number of objects in it.
    pub objects: u32,
    /// Whether a git bundle of it is stored beside it (`pack-<hash>.bundle`), made by
    /// the compaction that wrote it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bundle: bool,
}

/// Why a stored manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("manifest format {0} is newer than this server understands")]
    Format(u32),
}

impl Manifest {
    /// The hash of the repository's object format ([`Manifest::object_format`]).
    pub fn object_hash(&self) -> gix_hash::Kind {
        self.object_format.parse().unwrap_or(gix_hash::Kind::Sha1)
    }

    /// The manifest of a new, empty repository of sha1 objects.
    pub fn empty(head: &str) -> Self {
        Manifest::new(head, gix_hash::Kind::Sha1)
    }

    /// The manifest of a new, empty repository of objects in `format`.
    pub fn new(head: &str, format: gix_hash::Kind) -> Self {
        Manifest {
            format: BASE_FORMAT,
            object_format: format.to_string(),
            head: head.into(),
            refs: BTreeMap::new(),
            packs: Vec::new(),
            txns: RecentTxns::default(),
            retired: Vec::new(),
            unreachable_since: None,
            prunes: 0,
            lfs_locks: false,
            events: Vec::new(),
        }
    }

    /// The oldest format that holds every field this manifest uses.
    fn needed_format(&self) -> u32 {
        if self.object_format != "sha1" || self.packs.iter().any(|p| p.bundle) {
            5
        } else if !self.events.is_empty() {
            4
        } else if self.lfs_locks {
            3
        } else if self.unreachable_since.is_some() || self.prunes > 0 {
            2
        } else {
            BASE_FORMAT
        }
    }

    /// Reads a stored manifest. One that uses fields newer than the format it names
    /// (written by hand, or by a server that did not yet bump the format) reads as the
    /// format its fields need, so that writing it back changes nothing.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let mut manifest: Manifest = serde_json::from_slice(bytes)?;
        if manifest.format > FORMAT {
            return Err(ManifestError::Format(manifest.format));
        }
        manifest.format = manifest.format.max(manifest.needed_format());
        Ok(manifest)
    }

    /// The manifest as stored, in the format its fields need.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut stored = self.clone();
        stored.format = self.format.max(self.needed_format());
        serde_json::to_vec_pretty(&stored).expect("a manifest always serializes")
    }

    /// Lists `pack` (once), taking it off the retired list if it was there: the same
    /// pack pushed again after a compaction replaced it. Returns whether it was
    /// retired: then garbage collection may have deleted its files just before, and the
    /// writer checks they are there once the pack is listed.
    pub fn add_pack(&mut self, pack: PackEntry, at: usize) -> bool {
        let before = self.retired.len();
        self.retired.retain(|r| r.hash != pack.hash);
        if !self.packs.iter().any(|p| p.hash == pack.hash) {
            self.packs.insert(at.min(self.packs.len()), pack);
        }
        self.retired.len() != before
    }

    /// The commit HEAD resolves to, if its branch exists.
    pub fn head_id(&self) -> Option<ObjectId> {
        self.refs.get(&self.head).map(|r| r.id)
    }
}

mod hex_oid {
    use gix_hash::ObjectId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_hex().to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
        let hex = String::deserialize(d)?;
        ObjectId::from_hex(hex.as_bytes()).map_err(serde::de::Error::custom)
    }
}

mod hex_oid_opt {
    use gix_hash::ObjectId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<ObjectId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => super::hex_oid::serialize(id, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ObjectId>, D::Error> {
        let hex: Option<String> = Option::deserialize(d)?;
        hex.map(|h| ObjectId::from_hex(h.as_bytes()).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let mut m = Manifest::empty("refs/heads/main");
        let id = ObjectId::from_hex(b"67463eab6b939e3de1ed116192ded6d6788017e3").expect("hex");
        m.refs
            .insert("refs/heads/main".into(), RefValue { id, peeled: None });
        m.refs.insert(
            "refs/tags/v1".into(),
            RefValue {
                id,
                peeled: Some(id),
            },
        );
        m.packs.push(PackEntry {
            hash: id,
            size: 10,
            objects: 3,
            bundle: false,
        });
        m.retired.push(Retired { hash: id, at: 5 });
        let parsed = Manifest::parse(&m.to_bytes()).expect("parses");
        assert_eq!(parsed, m);
        assert_eq!(parsed.head_id(), Some(id));
    }

    #[test]
    fn is_written_in_the_format_its_fields_need() {
        let mut m = Manifest::empty("refs/heads/main");
        let format = |m: &Manifest| Manifest::parse(&m.to_bytes()).expect("parses").format;
        assert_eq!(format(&m), BASE_FORMAT);
        m.prunes = 1;
        assert_eq!(format(&m), 2);
        m.lfs_locks = true;
        assert_eq!(format(&m), 3);
        m.events.push(crate::repo::event::PendingEvent {
            id: "e".into(),
            refs: vec!["refs/heads/main".into()],
        });
        assert_eq!(format(&m), 4);
        let mut wide = Manifest::new("refs/heads/main", gix_hash::Kind::Sha256);
        assert_eq!(format(&wide), 5);
        assert_eq!(wide.object_hash(), gix_hash::Kind::Sha256);
        wide.object_format = "sha1".into();
        assert_eq!(format(&wide), BASE_FORMAT);
        m.packs.push(PackEntry {
            hash: gix_hash::Kind::Sha1.null(),
            size: 1,
            objects: 1,
            bundle: true,
        });
        assert_eq!(format(&m), 5);
    }

    #[test]
    fn reads_as_the_format_its_fields_need() {
        let mut m = Manifest::empty("refs/heads/main");
        m.prunes = 2;
        let mut doc: serde_json::Value = serde_json::from_slice(&m.to_bytes()).expect("json");
        doc["format"] = 1.into();
        let parsed = Manifest::parse(&serde_json::to_vec(&doc).expect("json")).expect("parses");
        assert_eq!(parsed.format, 2);
        assert_eq!(Manifest::parse(&parsed.to_bytes()).expect("parses"), parsed);
    }

    #[test]
    fn refuses_newer_formats_and_garbage() {
        let mut m = Manifest::empty("refs/heads/main");
        m.format = FORMAT + 1;
        assert!(matches!(
            Manifest::parse(&m.to_bytes()),
            Err(ManifestError::Format(_))
        ));
        assert!(Manifest::parse(b"{not json").is_err());
    }
}
