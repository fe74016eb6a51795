//! Object and pack hashing in a repository's object format: SHA-1 or SHA-256.

use gix_hash::{Kind, ObjectId};
use gix_object::Kind as ObjectKind;

/// A running hash in one object format.
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Hasher::Sha1(_) => "Hasher(sha1)",
            Hasher::Sha256(_) => "Hasher(sha256)",
        })
    }
}

impl Hasher {
    pub fn new(kind: Kind) -> Self {
        use sha1::Digest as _;
        match kind {
            Kind::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            _ => Hasher::Sha1(sha1::Sha1::new()),
        }
    }

    /// A hasher fed with an object's header (`<kind> <size>\0`), ready for its content.
    pub fn object(format: Kind, kind: ObjectKind, size: u64) -> Self {
        let mut hasher = Hasher::new(format);
        hasher.update(kind.as_bytes());
        hasher.update(format!(" {size}\0").as_bytes());
        hasher
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => sha1::Digest::update(h, bytes),
            Hasher::Sha256(h) => sha2::Digest::update(h, bytes),
        }
    }

    pub fn finalize(self) -> ObjectId {
        match self {
            Hasher::Sha1(h) => ObjectId::from_bytes_or_panic(&sha1::Digest::finalize(h)),
            Hasher::Sha256(h) => ObjectId::from_bytes_or_panic(&sha2::Digest::finalize(h)),
        }
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The id of an object of `kind` with content `data`.
pub fn object_id(format: Kind, kind: ObjectKind, data: &[u8]) -> ObjectId {
    let mut hasher = Hasher::object(format, kind, data.len() as u64);
    hasher.update(data);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_git_ids_in_both_formats() {
        // `git hash-object` of an empty blob, in each format.
        assert_eq!(
            object_id(Kind::Sha1, ObjectKind::Blob, b"").to_string(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        assert_eq!(
            object_id(Kind::Sha256, ObjectKind::Blob, b"").to_string(),
            "473a0f4c3be8a93681a267e3b1e9a7dcda1185436fe141f7749120a303721813"
        );
    }
}
