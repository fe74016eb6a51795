//! Checks of received objects, as git's `transfer.fsckObjects` (`receive.fsckObjects`)
//! makes `index-pack --strict` do them: malformed commits, trees and tags, tree entries
//! that would write into `.git` (in any case, and in the names NTFS and HFS+ take for
//! it) or leave the work tree, and `.gitmodules` whose URLs, paths or update commands
//! could run something on a clone (the CVE-2018-11235 class).
//!
//! Findings carry git's message ids and texts (`zeroPaddedFilemode: contains
//! zero-padded file modes`), and those git treats as errors or, in strict mode, as
//! warnings refuse the push; git's informational ones (`badFilemode`, `badTagName`,
//! `missingTaggerEntry`, `gitmodulesParse`) do not.
//!
//! See git's `fsck.c` and `fsck.h` for the rules followed here.

use std::collections::HashSet;

use gix_hash::ObjectId;
use gix_object::Kind;
use gix_object::bstr::{BStr, ByteSlice};

/// One finding: the object, git's message id, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub id: ObjectId,
    pub msg_id: &'static str,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "object {}: {}: {}", self.id, self.msg_id, self.message)
    }
}

/// Checks objects one by one, remembering the `.gitmodules` blobs that trees name so
/// that they are checked too once every object has been seen.
#[derive(Debug, Default)]
pub struct ObjectChecker {
    gitmodules: HashSet<ObjectId>,
    /// Message ids not to report, lower-cased (git's `receive.fsck.<msg-id>=ignore`).
    ignored: HashSet<String>,
}

impl ObjectChecker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A checker that does not report the findings of these message ids (any case), as
    /// `git config receive.fsck.<msg-id> ignore` does: for histories that hold objects
    /// old git wrote (such as zero-padded modes) and must be pushed as they are.
    pub fn ignoring<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        ObjectChecker {
            gitmodules: HashSet::new(),
            ignored: ids.into_iter().map(str::to_ascii_lowercase).collect(),
        }
    }

    fn keep(&self, result: Result<(), Vec<Finding>>) -> Result<(), Vec<Finding>> {
        match result {
            Err(found) if !self.ignored.is_empty() => {
                let left: Vec<Finding> = found
                    .into_iter()
                    .filter(|f| !self.ignored.contains(&f.msg_id.to_ascii_lowercase()))
                    .collect();
                if left.is_empty() { Ok(()) } else { Err(left) }
            }
            other => other,
        }
    }

    /// Checks object `id` of `kind` with content `data`; blobs are only checked later,
    /// when a tree names them `.gitmodules` ([`ObjectChecker::gitmodules`]).
    pub fn check(&mut self, id: ObjectId, kind: Kind, data: &[u8]) -> Result<(), Vec<Finding>> {
        let mut findings = Findings {
            id,
            found: Vec::new(),
        };
        match kind {
            Kind::Commit => check_commit(data, id.kind(), &mut findings),
            Kind::Tree => check_tree(data, id.kind(), &mut findings, &mut self.gitmodules),
            Kind::Tag => check_tag(data, id.kind(), &mut findings),
            Kind::Blob => {}
        }
        self.keep(findings.result())
    }

    /// Checks a `.gitmodules` blob (or what a tree names so: `kind` is what it is).
    pub fn check_gitmodules(
        &self,
        id: ObjectId,
        kind: Kind,
        data: &[u8],
    ) -> Result<(), Vec<Finding>> {
        self.keep(check_gitmodules(id, kind, data))
    }

    /// The blobs trees named `.gitmodules`, to be read and passed to
    /// [`check_gitmodules`].
    pub fn gitmodules(&self) -> impl Iterator<Item = &ObjectId> {
        self.gitmodules.iter()
    }
}

/// Checks a `.gitmodules` blob (or what a tree names so: `kind` is what it is).
fn check_gitmodules(id: ObjectId, kind: Kind, data: &[u8]) -> Result<(), Vec<Finding>> {
    let mut findings = Findings {
        id,
        found: Vec::new(),
    };
    if kind != Kind::Blob {
        findings.add("gitmodulesBlob", "non-blob found at .gitmodules");
        return findings.result();
    }
    // What git cannot parse it ignores (gitmodulesParse is informational).
    let Ok(config) = gix_config::File::from_bytes_no_includes(
        data,
        gix_config::file::Metadata::api(),
        Default::default(),
    ) else {
        return Ok(());
    };
    if let Some(sections) = config.sections_by_name("submodule") {
        for section in sections {
            let Some(name) = section.header().subsection_name() else {
                continue;
            };
            if gix_validate::submodule::name(name).is_err() {
                findings.add(
                    "gitmodulesName",
                    format!("disallowed submodule name: {name}"),
                );
            }
            for url in section.values("url") {
                if !submodule_url_ok(&url) {
                    findings.add("gitmodulesUrl", format!("disallowed submodule url: {url}"));
                }
            }
            for path in section.values("path") {
                if path.starts_with(b"-") {
                    findings.add(
                        "gitmodulesPath",
                        format!("disallowed submodule path: {path}"),
                    );
                }
            }
            for update in section.values("update") {
                if update.starts_with(b"!") {
                    findings.add(
                        "gitmodulesUpdate",
                        format!("disallowed submodule update setting: {update}"),
                    );
                }
            }
        }
    }
    findings.result()
}

/// git's `check_submodule_url`: no option-like URL; a relative or `git://` one that
/// decodes to a newline, or climbs out of its root into a host (`../:x`, `..//x`,
/// CVE-2020-11008); any other that decodes to a newline.
fn submodule_url_ok(url: &[u8]) -> bool {
    if url.starts_with(b"-") {
        return false;
    }
    let decoded = percent_decoded(url);
    if decoded.contains(&b'\n') {
        return false;
    }
    let relative = url.starts_with(b"./") || url.starts_with(b"../");
    if relative || url.starts_with(b"git://") {
        let mut rest = url;
        let mut climbs = 0;
        loop {
            if let Some(after) = rest.strip_prefix(b"../") {
                climbs += 1;
                rest = after;
            } else if let Some(after) = rest.strip_prefix(b"./") {
                rest = after;
            } else {
                break;
            }
        }
        if climbs > 0 && matches!(rest.first(), Some(b':') | Some(b'/')) {
            return false;
        }
    }
    true
}

/// `%XX` escapes decoded (a `%` not followed by two hex digits is kept as it is).
fn percent_decoded(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(s) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(s, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

struct Findings {
    id: ObjectId,
    found: Vec<Finding>,
}

impl Findings {
    fn add(&mut self, msg_id: &'static str, message: impl Into<String>) {
        self.found.push(Finding {
            id: self.id,
            msg_id,
            message: message.into(),
        });
    }

    fn result(self) -> Result<(), Vec<Finding>> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(self.found)
        }
    }
}

/// The header must end in a blank line (or the object after its last header line),
/// with no NUL in it.
fn headers_ok(data: &[u8], findings: &mut Findings) -> bool {
    for (i, b) in data.iter().enumerate() {
        match b {
            0 => {
                findings.add(
                    "nulInHeader",
                    format!("unterminated header: NUL at offset {i}"),
                );
                return false;
            }
            b'\n' if data.get(i + 1) == Some(&b'\n') => return true,
            _ => {}
        }
    }
    if data.last() == Some(&b'\n') {
        return true;
    }
    findings.add("unterminatedHeader", "unterminated header");
    false
}

/// A hex id of `format` followed by a newline at the start of `data`; the rest after it.
fn hex_line(data: &[u8], format: gix_hash::Kind) -> Option<&[u8]> {
    let len = format.len_in_hex();
    let (hex, rest) = (data.get(..len)?, data.get(len..)?);
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    rest.strip_prefix(b"\n")
}

/// Checks an author, committer or tagger line (after its keyword), as git's
/// `fsck_ident`; returns the rest after the line.
fn ident<'a>(data: &'a [u8], findings: &mut Findings) -> Result<&'a [u8], ()> {
    let line_end = data.iter().position(|b| *b == b'\n');
    let rest = match line_end {
        Some(i) => &data[i + 1..],
        None => &data[data.len()..],
    };
    let mut fail = |msg_id, text: &str| {
        findings.add(msg_id, format!("invalid author/committer line - {text}"));
        Err(())
    };
    let at = |i: usize| data.get(i).copied().unwrap_or(0);
    if at(0) == b'<' {
        return fail("missingNameBeforeEmail", "missing space before email");
    }
    let mut p = data
        .iter()
        .position(|b| matches!(b, b'<' | b'>' | b'\n'))
        .unwrap_or(data.len());
    if at(p) == b'>' {
        return fail("badName", "bad name");
    }
    if at(p) != b'<' {
        return fail("missingEmail", "missing email");
    }
    if p == 0 || at(p - 1) != b' ' {
        return fail("missingSpaceBeforeEmail", "missing space before email");
    }
    p += 1;
    p += data[p..]
        .iter()
        .position(|b| matches!(b, b'<' | b'>' | b'\n'))
        .unwrap_or(data.len() - p);
    if at(p) != b'>' {
        return fail("badEmail", "bad email");
    }
    p += 1;
    if at(p) != b' ' {
        return fail("missingSpaceBeforeDate", "missing space before date");
    }
    p += 1;
    if at(p) == b'0' && at(p + 1) != b' ' {
        return fail("zeroPaddedDate", "zero-padded date");
    }
    // git reads the date with strtoumax: blanks and a `+` may come first; a `-`
    // wraps around to a date that overflows.
    while matches!(at(p), b' ' | b'\t') {
        p += 1;
    }
    match at(p) {
        b'+' => p += 1,
        b'-' if at(p + 1).is_ascii_digit() => {
            return fail("badDateOverflow", "date causes integer overflow");
        }
        _ => {}
    }
    let digits = data[p..].iter().take_while(|b| b.is_ascii_digit()).count();
    let overflows = digits > 0
        && std::str::from_utf8(&data[p..p + digits])
            .ok()
            .and_then(|d| d.parse::<i64>().ok())
            .is_none();
    if overflows {
        return fail("badDateOverflow", "date causes integer overflow");
    }
    if digits == 0 || at(p + digits) != b' ' {
        return fail("badDate", "bad date");
    }
    p += digits + 1;
    let zone_ok = matches!(at(p), b'+' | b'-')
        && (1..=4).all(|i| at(p + i).is_ascii_digit())
        && at(p + 5) == b'\n';
    if !zone_ok {
        return fail("badTimezone", "bad time zone");
    }
    Ok(rest)
}

fn check_commit(data: &[u8], format: gix_hash::Kind, findings: &mut Findings) {
    if !headers_ok(data, findings) {
        return;
    }
    let Some(mut rest) = data.strip_prefix(b"tree ") else {
        findings.add("missingTree", "invalid format - expected 'tree' line");
        return;
    };
    match hex_line(rest, format) {
        Some(after) => rest = after,
        None => {
            findings.add("badTreeSha1", "invalid 'tree' line format - bad sha1");
            return;
        }
    }
    while let Some(after) = rest.strip_prefix(b"parent ") {
        match hex_line(after, format) {
            Some(after) => rest = after,
            None => {
                findings.add("badParentSha1", "invalid 'parent' line format - bad sha1");
                return;
            }
        }
    }
    let mut authors = 0;
    while let Some(after) = rest.strip_prefix(b"author ") {
        authors += 1;
        match ident(after, findings) {
            Ok(after) => rest = after,
            Err(()) => return,
        }
    }
    if authors == 0 {
        findings.add("missingAuthor", "invalid format - expected 'author' line");
        return;
    }
    if authors > 1 {
        findings.add(
            "multipleAuthors",
            "invalid format - multiple 'author' lines",
        );
        return;
    }
    let Some(after) = rest.strip_prefix(b"committer ") else {
        findings.add(
            "missingCommitter",
            "invalid format - expected 'committer' line",
        );
        return;
    };
    if ident(after, findings).is_err() {
        return;
    }
    if data.contains(&0) {
        findings.add("nulInCommit", "NUL byte in the commit object body");
    }
}

fn check_tag(data: &[u8], format: gix_hash::Kind, findings: &mut Findings) {
    if !headers_ok(data, findings) {
        return;
    }
    let Some(rest) = data.strip_prefix(b"object ") else {
        findings.add("missingObject", "invalid format - expected 'object' line");
        return;
    };
    let Some(rest) = hex_line(rest, format) else {
        findings.add("badObjectSha1", "invalid 'object' line format - bad sha1");
        return;
    };
    let Some(rest) = rest.strip_prefix(b"type ") else {
        findings.add("missingTypeEntry", "invalid format - expected 'type' line");
        return;
    };
    let Some(eol) = rest.iter().position(|b| *b == b'\n') else {
        findings.add(
            "missingType",
            "invalid format - unexpected end after 'type' line",
        );
        return;
    };
    if Kind::from_bytes(&rest[..eol]).is_err() {
        findings.add("badType", "invalid 'type' value");
        return;
    }
    let rest = &rest[eol + 1..];
    let Some(rest) = rest.strip_prefix(b"tag ") else {
        findings.add("missingTagEntry", "invalid format - expected 'tag' line");
        return;
    };
    let Some(eol) = rest.iter().position(|b| *b == b'\n') else {
        findings.add(
            "missingTag",
            "invalid format - unexpected end after 'type' line",
        );
        return;
    };
    // A tag name that is not a valid ref name is informational in git (badTagName).
    let rest = &rest[eol + 1..];
    if let Some(after) = rest.strip_prefix(b"tagger ") {
        let _ = ident(after, findings);
    }
    // No tagger line is informational (missingTaggerEntry), as early tags had none.
}

fn check_tree(
    data: &[u8],
    format: gix_hash::Kind,
    findings: &mut Findings,
    gitmodules: &mut HashSet<ObjectId>,
) {
    let id_len = format.len_in_bytes();
    let (mut null_sha1, mut full_path, mut empty_name, mut dot, mut dotdot) =
        (false, false, false, false, false);
    let (mut dotgit, mut zero_pad, mut duplicates, mut unsorted) = (false, false, false, false);
    let mut names: HashSet<&[u8]> = HashSet::new();
    let mut previous: Option<(&[u8], bool)> = None;
    let mut rest = data;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            findings.add("badTree", "cannot be parsed as a tree");
            return;
        };
        let mode = &rest[..space];
        let after = &rest[space + 1..];
        let Some(nul) = after.iter().position(|b| *b == 0) else {
            findings.add("badTree", "cannot be parsed as a tree");
            return;
        };
        let name = &after[..nul];
        let Some(id) = after.get(nul + 1..nul + 1 + id_len) else {
            findings.add("badTree", "cannot be parsed as a tree");
            return;
        };
        rest = &after[nul + 1 + id_len..];
        if mode.is_empty() || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
            findings.add("badTree", "cannot be parsed as a tree");
            return;
        }
        if mode[0] == b'0' {
            zero_pad = true;
        }
        let normal = mode.trim_start_with(|c| c == '0');
        let is_dir = normal == b"40000";
        let is_link = normal == b"120000";
        // Modes other than git's own (badFilemode) are informational: not checked.
        if id.iter().all(|b| *b == 0) {
            null_sha1 = true;
        }
        if name.contains(&b'/') {
            full_path = true;
        }
        match name {
            b"" => empty_name = true,
            b"." => dot = true,
            b".." => dotdot = true,
            _ => {}
        }
        let options = gix_validate::path::component::Options {
            protect_windows: false,
            protect_hfs: true,
            protect_ntfs: true,
        };
        let as_link = Some(gix_validate::path::component::Mode::Symlink);
        if !name.is_empty() && !name.contains(&b'/') {
            use gix_validate::path::component::Error as Bad;
            if let Err(Bad::DotGitDir) =
                gix_validate::path::component(BStr::new(name), None, options)
            {
                dotgit = true;
            }
            // A name that would be `.gitmodules` is one whatever its mode: a link is
            // refused, anything else is checked once every object is in.
            if let Err(Bad::SymlinkedGitModules) =
                gix_validate::path::component(BStr::new(name), as_link, options)
            {
                if is_link {
                    findings.add("gitmodulesSymlink", ".gitmodules is a symbolic link");
                } else {
                    gitmodules.insert(ObjectId::from_bytes_or_panic(id));
                }
            }
        }
        if !names.insert(name) {
            duplicates = true;
        }
        if let Some((before, before_dir)) = previous {
            match order(before, before_dir, name, is_dir) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => duplicates = true,
                std::cmp::Ordering::Greater => unsorted = true,
            }
        }
        previous = Some((name, is_dir));
    }
    for (flag, msg_id, text) in [
        (
            null_sha1,
            "nullSha1",
            "contains entries pointing to null sha1",
        ),
        (full_path, "fullPathname", "contains full pathnames"),
        (empty_name, "emptyName", "contains empty pathname"),
        (dot, "hasDot", "contains '.'"),
        (dotdot, "hasDotdot", "contains '..'"),
        (dotgit, "hasDotgit", "contains '.git'"),
        (
            zero_pad,
            "zeroPaddedFilemode",
            "contains zero-padded file modes",
        ),
        (
            duplicates,
            "duplicateEntries",
            "contains duplicate file entries",
        ),
        (unsorted, "treeNotSorted", "not properly sorted"),
    ] {
        if flag {
            findings.add(msg_id, text);
        }
    }
}

/// Tree order: names compared as bytes, a directory's as if it ended in `/`; equal
/// names (a file and a directory of one name included) are duplicates.
fn order(a: &[u8], a_dir: bool, b: &[u8], b_dir: bool) -> std::cmp::Ordering {
    let len = a.len().min(b.len());
    match a[..len].cmp(&b[..len]) {
        std::cmp::Ordering::Equal => {}
        other => return other,
    }
    let next = |name: &[u8], dir: bool| match name.get(len) {
        Some(c) => *c,
        None if dir => b'/',
        None => 0,
    };
    if a.len() == b.len() {
        return std::cmp::Ordering::Equal;
    }
    next(a, a_dir).cmp(&next(b, b_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "67463eab6b939e3de1ed116192ded6d6788017e3";

    fn oid() -> ObjectId {
        ObjectId::from_hex(ID.as_bytes()).expect("hex")
    }

    fn tree(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (mode, name) in entries {
            out.extend_from_slice(mode.as_bytes());
            out.push(b' ');
            out.extend_from_slice(name);
            out.push(0);
            out.extend_from_slice(oid().as_bytes());
        }
        out
    }

    fn ids(result: Result<(), Vec<Finding>>) -> Vec<&'static str> {
        result
            .err()
            .unwrap_or_default()
            .iter()
            .map(|f| f.msg_id)
            .collect()
    }

    fn tree_ids(data: &[u8]) -> Vec<&'static str> {
        ids(ObjectChecker::new().check(oid(), Kind::Tree, data))
    }

    #[test]
    fn trees_as_git_checks_them() {
        assert!(tree_ids(&tree(&[("100644", b"a"), ("40000", b"b")])).is_empty());
        assert_eq!(
            tree_ids(&tree(&[("0100644", b"a")])),
            ["zeroPaddedFilemode"]
        );
        assert_eq!(tree_ids(&tree(&[("100644", b".git")])), ["hasDotgit"]);
        for sneaky in [&b".GIT"[..], b"git~1", b".git.", b".g\xe2\x80\x8cit"] {
            assert_eq!(
                tree_ids(&tree(&[("40000", sneaky)])),
                ["hasDotgit"],
                "{}",
                String::from_utf8_lossy(sneaky)
            );
        }
        assert_eq!(tree_ids(&tree(&[("40000", b"..")])), ["hasDotdot"]);
        assert_eq!(tree_ids(&tree(&[("40000", b".")])), ["hasDot"]);
        assert_eq!(tree_ids(&tree(&[("100644", b"a/b")])), ["fullPathname"]);
        assert_eq!(tree_ids(&tree(&[("100644", b"")])), ["emptyName"]);
        assert_eq!(
            tree_ids(&tree(&[("100644", b"b"), ("100644", b"a")])),
            ["treeNotSorted"]
        );
        assert_eq!(
            tree_ids(&tree(&[("100644", b"a"), ("100644", b"a")])),
            ["duplicateEntries"]
        );
        // A file and a directory of one name, apart: still duplicates.
        assert_eq!(
            tree_ids(&tree(&[
                ("100644", b"foo"),
                ("100644", b"foo.bar"),
                ("40000", b"foo")
            ])),
            ["duplicateEntries"]
        );
        // A directory sorts as if its name ended in '/'.
        assert!(tree_ids(&tree(&[("100644", b"foo.c"), ("40000", b"foo")])).is_empty());
        assert_eq!(tree_ids(b"100644 a"), ["badTree"]);
        assert_eq!(tree_ids(b"1x0644 a\0aaaaaaaaaaaaaaaaaaaa"), ["badTree"]);
        let mut null = b"100644 a\0".to_vec();
        null.extend_from_slice(&[0u8; 20]);
        assert_eq!(tree_ids(&null), ["nullSha1"]);
        // 100664 is informational only.
        assert!(tree_ids(&tree(&[("100664", b"a")])).is_empty());
    }

    #[test]
    fn gitmodules_are_found_and_checked() {
        let mut checker = ObjectChecker::new();
        assert!(
            checker
                .check(oid(), Kind::Tree, &tree(&[("100644", b".GITMODULES")]))
                .is_ok()
        );
        assert_eq!(checker.gitmodules().count(), 1);
        assert_eq!(
            tree_ids(&tree(&[("120000", b".gitmodules")])),
            ["gitmodulesSymlink"]
        );
        let check = |text: &str| ids(check_gitmodules(oid(), Kind::Blob, text.as_bytes()));
        assert_eq!(
            check("[submodule \"a\"]\n\turl = ../../:evil.example.com/x\n"),
            ["gitmodulesUrl"]
        );
        assert_eq!(
            check("[submodule \"a\"]\n\turl = https://example.com/%0a/x\n"),
            ["gitmodulesUrl"]
        );
        assert!(check("[submodule \"a\"]\n\turl = ../sibling.git\n").is_empty());
        assert!(check("[submodule \"a\"]\n\tpath = a\n\turl = https://example.com/a\n").is_empty());
        assert_eq!(
            check("[submodule \"a\"]\n\turl = --upload-pack=touch /tmp/x\n"),
            ["gitmodulesUrl"]
        );
        assert_eq!(
            check("[submodule \"a\"]\n\tpath = -evil\n"),
            ["gitmodulesPath"]
        );
        assert_eq!(
            check("[submodule \"../../x\"]\n\tpath = a\n"),
            ["gitmodulesName"]
        );
        assert_eq!(
            check("[submodule \"a\"]\n\tupdate = !rm -rf /\n"),
            ["gitmodulesUpdate"]
        );
        assert!(
            check("[[[ not a config").is_empty(),
            "unparseable is informational"
        );
        assert_eq!(
            ids(check_gitmodules(oid(), Kind::Tree, b"")),
            ["gitmodulesBlob"]
        );
    }

    fn commit_ids(text: &str) -> Vec<&'static str> {
        ids(ObjectChecker::new().check(oid(), Kind::Commit, text.as_bytes()))
    }

    #[test]
    fn commits_as_git_checks_them() {
        let good = format!(
            "tree {ID}\nparent {ID}\nauthor A U Thor <a@example.com> 1700000000 +0100\n\
             committer C <c@example.com> 0 -0000\n\nmessage\n"
        );
        assert!(commit_ids(&good).is_empty(), "{:?}", commit_ids(&good));
        let ident = |line: &str| {
            commit_ids(&format!(
                "tree {ID}\nauthor {line}\ncommitter C <c> 1 +0000\n\nm\n"
            ))
        };
        assert_eq!(ident("A <a> 1 +00x0"), ["badTimezone"]);
        assert!(
            ident("A <a>  1 +0000").is_empty(),
            "git reads past a second blank"
        );
        assert!(ident("A <a> +1 +0000").is_empty(), "and a plus sign");
        assert_eq!(ident("A <a> -1 +0000"), ["badDateOverflow"]);
        assert_eq!(ident("A <a> 1 +0000x"), ["badTimezone"]);
        assert_eq!(ident("A <a> 01 +0000"), ["zeroPaddedDate"]);
        assert_eq!(ident("A <a> x +0000"), ["badDate"]);
        assert_eq!(
            ident("A <a> 99999999999999999999 +0000"),
            ["badDateOverflow"]
        );
        assert_eq!(ident("<a> 1 +0000"), ["missingNameBeforeEmail"]);
        assert_eq!(ident("A a> 1 +0000"), ["badName"]);
        assert_eq!(ident("A 1 +0000"), ["missingEmail"]);
        assert_eq!(ident("A<a> 1 +0000"), ["missingSpaceBeforeEmail"]);
        assert_eq!(ident("A <a 1 +0000"), ["badEmail"]);
        assert_eq!(ident("A <a>1 +0000"), ["missingSpaceBeforeDate"]);
        assert_eq!(commit_ids("parent x\n\n"), ["missingTree"]);
        assert_eq!(
            commit_ids(&format!("tree {}\n\n", &ID[..39])),
            ["badTreeSha1"]
        );
        assert_eq!(
            commit_ids(&format!("tree {ID}\nparent zz\n\n")),
            ["badParentSha1"]
        );
        assert_eq!(
            commit_ids(&format!("tree {ID}\ncommitter C <c> 1 +0000\n\n")),
            ["missingAuthor"]
        );
        assert_eq!(
            commit_ids(&format!(
                "tree {ID}\nauthor A <a> 1 +0000\nauthor A <a> 1 +0000\ncommitter C <c> 1 +0000\n\n"
            )),
            ["multipleAuthors"]
        );
        assert_eq!(
            commit_ids(&format!("tree {ID}\nauthor A <a> 1 +0000\n\n")),
            ["missingCommitter"]
        );
        assert_eq!(commit_ids("tree x"), ["unterminatedHeader"]);
        assert_eq!(commit_ids("tree \0x\n\n"), ["nulInHeader"]);
        assert_eq!(
            commit_ids(&format!(
                "tree {ID}\nauthor A <a> 1 +0000\ncommitter C <c> 1 +0000\n\nbody\0nul\n"
            )),
            ["nulInCommit"]
        );
    }

    #[test]
    fn ignored_message_ids_are_not_reported() {
        let zero = tree(&[("0100644", b"a")]);
        let mut checker = ObjectChecker::ignoring(["zeroPaddedFileMode"]);
        assert!(checker.check(oid(), Kind::Tree, &zero).is_ok());
        let both = tree(&[("0100644", b"a"), ("0100644", b"a")]);
        assert_eq!(
            ids(checker.check(oid(), Kind::Tree, &both)),
            ["duplicateEntries"]
        );
    }

    #[test]
    fn tags_as_git_checks_them() {
        let tag = |text: &str| ids(ObjectChecker::new().check(oid(), Kind::Tag, text.as_bytes()));
        let good = format!("object {ID}\ntype commit\ntag v1\ntagger T <t> 1 +0000\n\nm\n");
        assert!(tag(&good).is_empty());
        assert!(tag(&format!("object {ID}\ntype commit\ntag v1\n\nold tag\n")).is_empty());
        assert_eq!(tag("type commit\n\n"), ["missingObject"]);
        assert_eq!(tag("object x\n\n"), ["badObjectSha1"]);
        assert_eq!(tag(&format!("object {ID}\n\n")), ["missingTypeEntry"]);
        assert_eq!(tag(&format!("object {ID}\ntype bogus\n\n")), ["badType"]);
        assert_eq!(
            tag(&format!("object {ID}\ntype blob\n\n")),
            ["missingTagEntry"]
        );
        assert_eq!(
            tag(&format!(
                "object {ID}\ntype blob\ntag v\ntagger T <t> 1 +00\n\n"
            )),
            ["badTimezone"]
        );
    }
}
