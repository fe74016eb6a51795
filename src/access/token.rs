//! Personal access tokens.
//!
//! A token is `stw_`, then 32 random characters of `[0-9A-Za-z]` (about 190 bits), then
//! a 6-character checksum (CRC-32 of everything before it, in the same alphabet): the
//! fixed prefix lets secret scanners find leaked tokens, and the checksum lets them (and
//! the server) tell a token from random text without asking anyone.
//!
//! Invariant: a token is shown once, when it is made; the store keeps only its SHA-256.
//! Its id is the first 12 hex digits of that hash, so whoever holds a leaked token can
//! name it (`printf %s TOKEN | sha256sum | cut -c1-12`) without the server ever storing
//! anything that leads back to it. Hashes are compared in constant time.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every token starts with.
pub const PREFIX: &str = "stw_";
const RANDOM_LEN: usize = 32;
const CHECK_LEN: usize = 6;
/// Length of a whole token.
pub const LEN: usize = PREFIX.len() + RANDOM_LEN + CHECK_LEN;
/// Length of a token id (hex digits of its hash).
pub const ID_LEN: usize = 12;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A credential as a client presented it: never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret itself, for the one place that shows a new token to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The SHA-256 of a token, as stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &Secret) -> Self {
        TokenHash(Sha256::digest(token.0.as_bytes()).into())
    }

    /// The token's id: the first [`ID_LEN`] hex digits of its hash.
    pub fn id(&self) -> String {
        let mut id = hex::encode(&self.0[..ID_LEN / 2]);
        id.truncate(ID_LEN);
        id
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex, &mut out).ok()?;
        Some(TokenHash(out))
    }

    /// Equality that takes the same time whatever the bytes.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}..)", self.id())
    }
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed: {0}")]
pub struct RandomError(String);

/// A new random token.
pub fn generate() -> Result<Secret, RandomError> {
    let mut token = String::with_capacity(LEN);
    token.push_str(PREFIX);
    // Rejection sampling keeps every character equally likely: 248 = 4 * 62.
    let mut pool = [0u8; 64];
    while token.len() < PREFIX.len() + RANDOM_LEN {
        getrandom::fill(&mut pool).map_err(|e| RandomError(e.to_string()))?;
        for b in pool {
            if b < 248 && token.len() < PREFIX.len() + RANDOM_LEN {
                token.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    token.push_str(&checksum(&token));
    Ok(Secret(token))
}

/// Whether `text` has a token's shape: prefix, length, alphabet and checksum. Anything
/// else cannot be a token and is refused without a lookup.
pub fn well_formed(text: &Secret) -> bool {
    let t = text.0.as_str();
    if t.len() != LEN || !t.starts_with(PREFIX) {
        return false;
    }
    let body = &t[PREFIX.len()..];
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (head, check) = t.split_at(LEN - CHECK_LEN);
    checksum(head).as_bytes().ct_eq(check.as_bytes()).into()
}

fn checksum(text: &str) -> String {
    let mut n = u64::from(crc32fast::hash(text.as_bytes()));
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("the alphabet is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_checked() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), LEN);
        assert!(a.expose().starts_with("stw_"));
        assert!(well_formed(&a) && well_formed(&b));
        // One character changed breaks the checksum.
        let mut bad = a.expose().to_owned().into_bytes();
        bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(&Secret::new(
            String::from_utf8(bad).expect("ascii")
        )));
        for junk in ["", "stw_", "password", &a.expose()[..LEN - 1]] {
            assert!(!well_formed(&Secret::new(junk)), "{junk}");
        }
        assert!(!format!("{a:?}").contains(&a.expose()[4..]));
    }

    #[test]
    fn ids_come_from_hashes() {
        let t = generate().expect("random");
        let h = TokenHash::of(&t);
        assert_eq!(h.id().len(), ID_LEN);
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert!(h.matches(&TokenHash::of(&t)));
        assert!(!h.matches(&TokenHash::of(&generate().expect("random"))));
    }
}
