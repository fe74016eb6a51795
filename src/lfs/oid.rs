//! LFS object ids: the SHA-256 of an object's bytes, as exactly 64 lowercase hex
//! digits. Anything else (uppercase, `../`, short, long) is refused before a store key
//! is built from it.

use std::fmt;

/// A valid LFS object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid([u8; 32]);

impl Oid {
    /// Parses exactly 64 lowercase hex digits.
    pub fn parse(text: &str) -> Option<Oid> {
        if text.len() != 64
            || !text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Oid(bytes))
    }

    pub fn from_digest(digest: [u8; 32]) -> Oid {
        Oid(digest)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_of_the_right_length() {
        let good = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";
        assert_eq!(Oid::parse(good).expect("valid").to_string(), good);
        for bad in [
            "",
            &good[1..],
            &format!("{good}0"),
            &good.to_uppercase(),
            "../../../../../../../../../../../../../../../../../../etc/passwd",
            &format!("{}g", &good[..63]),
            &format!("{}/", &good[..63]),
            &format!("{}\u{e9}", &good[..62]),
        ] {
            assert!(Oid::parse(bad).is_none(), "{bad:?}");
        }
    }
}
