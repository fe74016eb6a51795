//! The sparse-checkout patterns of a `sparse:oid=<blob-ish>` filter, matched as git's
//! upload-pack matches them: with gitignore rules whatever mode the client's sparse
//! checkout uses (a cone-mode file is a gitignore file too). The last pattern that
//! matches a path decides (a `!` pattern deselects), a trailing `/` matches
//! directories only, a pattern without a `/` matches the last path component, one with
//! a `/` the whole path from the root. A path that no pattern decides takes the
//! decision of its directory; the root's is "not selected".

use gix_glob::{Pattern, pattern::Mode, wildmatch};
use gix_object::bstr::ByteSlice;

/// Largest pattern blob read, as git reads an ignore file: more is refused.
pub const MAX_BYTES: usize = 1 << 20;

/// The patterns of one sparse-checkout file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    /// Parses a sparse-checkout file: one pattern a line; blank lines and lines starting
    /// with `#` are skipped, trailing spaces not escaped with `\` are dropped.
    pub fn parse(text: &[u8]) -> Self {
        let text = text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(text);
        let patterns = text
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.starts_with(b"#"))
            .filter_map(|line| Pattern::from_bytes(trim_trailing_spaces(line)))
            .collect();
        Patterns(patterns)
    }

    /// Whether `path` (relative to the root, `/`-separated, empty for the root tree) is
    /// selected, deselected, or left to its directory (`None`).
    pub fn decide(&self, path: &[u8], is_dir: bool) -> Option<bool> {
        let basename = match path.rfind_byte(b'/') {
            Some(slash) => &path[slash + 1..],
            None => path,
        };
        self.0.iter().rev().find_map(|pattern| {
            if pattern.mode.contains(Mode::MUST_BE_DIR) && !is_dir {
                return None;
            }
            let matched = if pattern.mode.contains(Mode::NO_SUB_DIR)
                && !pattern.mode.contains(Mode::ABSOLUTE)
            {
                pattern.matches(basename.as_bstr(), wildmatch::Mode::empty())
            } else {
                // A pattern of the whole path never matches the root itself.
                !path.is_empty()
                    && pattern.matches(path.as_bstr(), wildmatch::Mode::NO_MATCH_SLASH_LITERAL)
            };
            matched.then_some(!pattern.is_negative())
        })
    }
}

/// `line` without its trailing spaces, except one escaped by a backslash.
fn trim_trailing_spaces(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && line[end - 1] == b' ' {
        let escaped = end >= 2 && line[end - 2] == b'\\';
        if escaped {
            break;
        }
        end -= 1;
    }
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a file at `path` is selected, its directories decided from the root down.
    fn selects(patterns: &Patterns, path: &str) -> bool {
        let mut selected = false;
        let parts: Vec<&str> = path.split('/').collect();
        for i in 0..parts.len() {
            let prefix = parts[..=i].join("/");
            let is_dir = i + 1 < parts.len();
            if let Some(decided) = patterns.decide(prefix.as_bytes(), is_dir) {
                selected = decided;
            }
        }
        selected
    }

    #[test]
    fn non_cone_patterns_select_as_gitignore_matches() {
        let p = Patterns::parse(b"# docs only\n*.md\n!secret.md\n/src/\n\nlib/*.rs  \n");
        assert!(selects(&p, "README.md"));
        assert!(selects(&p, "deep/down/notes.md"));
        assert!(!selects(&p, "deep/secret.md"));
        assert!(selects(&p, "src/main.c"));
        assert!(selects(&p, "src/a/b.c"));
        assert!(
            !selects(&p, "other/src/x.c"),
            "/src/ is anchored at the root"
        );
        assert!(selects(&p, "lib/a.rs"), "trailing spaces are dropped");
        assert!(!selects(&p, "lib/a/b.rs"), "* does not match a slash");
        assert!(!selects(&p, "Makefile"));
    }

    #[test]
    fn cone_patterns_select_the_root_files_and_the_named_directories() {
        let p = Patterns::parse(b"/*\n!/*/\n/docs/\n/src/\n!/src/*/\n/src/core/\n");
        assert!(selects(&p, "Makefile"));
        assert!(selects(&p, "docs/a/b.md"));
        assert!(selects(&p, "src/lib.rs"));
        assert!(!selects(&p, "src/extra/x.rs"));
        assert!(selects(&p, "src/core/x.rs"));
        assert!(!selects(&p, "tests/t.rs"));
    }

    #[test]
    fn the_root_is_decided_only_by_name_patterns() {
        assert_eq!(Patterns::parse(b"/*\n").decide(b"", true), None);
        assert_eq!(Patterns::parse(b"*\n").decide(b"", true), Some(true));
        assert_eq!(Patterns::parse(b"\\#x\\  \r\n").0[0].text, "#x\\ ");
    }
}
