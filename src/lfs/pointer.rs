//! Git LFS pointer files: what git stores in place of a tracked file.
//!
//! ```text
//! version https://git-lfs.github.com/spec/v1
//! oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393
//! size 12345
//! ```

use super::Oid;

/// A pointer is small: git-lfs never reads more than this.
const MAX_POINTER: usize = 1024;

/// The object and size `content` points to, if it is an LFS pointer.
pub fn parse(content: &[u8]) -> Option<(Oid, u64)> {
    if content.len() > MAX_POINTER {
        return None;
    }
    let text = std::str::from_utf8(content).ok()?;
    let mut lines = text.lines();
    let version = lines.next()?;
    if version != "version https://git-lfs.github.com/spec/v1"
        && version != "version https://hawser.github.com/spec/v1"
    {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    for line in lines {
        match line.split_once(' ') {
            Some(("oid", value)) => oid = Oid::parse(value.strip_prefix("sha256:")?),
            Some(("size", value)) => size = value.parse().ok(),
            _ => {}
        }
    }
    Some((oid?, size?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pointers_and_nothing_else() {
        let oid = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";
        let pointer =
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12345\n");
        let (found, size) = parse(pointer.as_bytes()).expect("a pointer");
        assert_eq!((found.to_string().as_str(), size), (oid, 12345));
        assert!(parse(b"just a file\n").is_none());
        assert!(parse(pointer.replace("sha256:", "sha1:").as_bytes()).is_none());
        assert!(parse(pointer.replace("12345", "-1").as_bytes()).is_none());
        let mut long = pointer.into_bytes();
        long.extend(std::iter::repeat_n(b'x', 2000));
        assert!(parse(&long).is_none());
    }
}
