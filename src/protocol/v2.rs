//! Protocol v2 over HTTP ([gitprotocol-v2]): one command per `POST git-upload-pack`.
//!
//! - `ls-refs` (`symrefs`, `peel`, `ref-prefix`, `unborn`);
//! - `fetch`: without `done`, an `acknowledgments` section (`ACK` per common have or
//!   `NAK`, then `ready` once a common commit is known, followed by the pack);
//!   with `done`, the `packfile` section directly.
//!
//! [gitprotocol-v2]: https://git-scm.com/docs/gitprotocol-v2

use bytes::Bytes;
use gix_hash::ObjectId;

use super::pktline::{PktLine, PktReader, PktWriter};
use super::{BadRequest, RequestLimits, parse_oid};
use crate::repo::Manifest;

/// One v2 command request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    pub command: String,
    /// Capability lines (`agent=...`, `object-format=...`, `server-option=...`).
    pub caps: Vec<String>,
    /// Argument lines after the delimiter.
    pub args: Vec<String>,
}

impl CommandRequest {
    /// Parses a request within the default limits.
    pub fn parse(body: &[u8]) -> Result<Self, BadRequest> {
        Self::parse_within(body, &RequestLimits::default())
    }

    /// Parses a request, refusing one of more lines than `limits` allow.
    pub fn parse_within(body: &[u8], limits: &RequestLimits) -> Result<Self, BadRequest> {
        let mut reader = PktReader::new(body);
        let mut command = None;
        let mut caps = Vec::new();
        let mut args = Vec::new();
        let mut in_args = false;
        let mut lines = 0;
        loop {
            limits.line(&mut lines)?;
            match reader.next_line()? {
                None => return Err(BadRequest::new("v2 request ended without a flush")),
                Some(PktLine::Flush) => break,
                Some(PktLine::Delim) if !in_args => in_args = true,
                Some(PktLine::Delim | PktLine::ResponseEnd) => {
                    return Err(BadRequest::new("unexpected delimiter in a v2 request"));
                }
                Some(PktLine::Data(data)) => {
                    let line = std::str::from_utf8(data)
                        .map_err(|_| BadRequest::new("v2 request line is not UTF-8"))?
                        .to_owned();
                    if in_args {
                        args.push(line);
                    } else if let Some(name) = line.strip_prefix("command=") {
                        if command.is_some() {
                            return Err(BadRequest::new("two commands in one request"));
                        }
                        command = Some(name.to_owned());
                    } else {
                        caps.push(line);
                    }
                }
            }
        }
        let command = command.ok_or_else(|| BadRequest::new("v2 request names no command"))?;
        if let Some(format) = caps.iter().find_map(|c| c.strip_prefix("object-format="))
            && format.parse::<gix_hash::Kind>().is_err()
        {
            return Err(BadRequest::new(format!(
                "object format {format} is not supported by this server (sha1 and sha256 are)"
            )));
        }
        Ok(CommandRequest {
            command,
            caps,
            args,
        })
    }
}

/// The `ls-refs` answer for a repository.
pub fn ls_refs(manifest: &Manifest, args: &[String]) -> Result<Bytes, BadRequest> {
    let mut symrefs = false;
    let mut peel = false;
    let mut unborn = false;
    let mut prefixes: Vec<&str> = Vec::new();
    for arg in args {
        match arg.as_str() {
            "symrefs" => symrefs = true,
            "peel" => peel = true,
            "unborn" => unborn = true,
            other => match other.strip_prefix("ref-prefix ") {
                Some(prefix) => prefixes.push(prefix),
                None => {
                    return Err(BadRequest::new(format!(
                        "unknown ls-refs argument {other:?}"
                    )));
                }
            },
        }
    }
    let wanted = |name: &str| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p));
    let mut w = PktWriter::new();
    if wanted("HEAD") {
        match manifest.head_id() {
            Some(id) => {
                let mut line = format!("{id} HEAD");
                if symrefs {
                    line.push_str(&format!(" symref-target:{}", manifest.head));
                }
                w.line(line);
            }
            None if unborn && symrefs => {
                w.line(format!("unborn HEAD symref-target:{}", manifest.head));
            }
            None => {}
        }
    }
    for (name, value) in &manifest.refs {
        if !wanted(name) {
            continue;
        }
        let mut line = format!("{} {name}", value.id);
        if peel && let Some(peeled) = value.peeled {
            line.push_str(&format!(" peeled:{peeled}"));
        }
        w.line(line);
    }
    w.flush();
    Ok(w.finish())
}

/// The object ids of an `object-info` request, which must ask for `size`.
pub fn object_info_request(args: &[String]) -> Result<Vec<ObjectId>, BadRequest> {
    let mut size = false;
    let mut ids = Vec::new();
    for arg in args {
        if arg == "size" {
            size = true;
        } else if let Some(id) = arg.strip_prefix("oid ") {
            ids.push(parse_oid(id.as_bytes())?);
        } else {
            return Err(BadRequest::new(format!(
                "unknown object-info argument {arg:?}"
            )));
        }
    }
    if !size {
        return Err(BadRequest::new(
            "object-info: only the size attribute is supported",
        ));
    }
    Ok(ids)
}

/// Resolves `want-ref` names against the repository's refs (and `HEAD`), as git's
/// upload-pack does: an unknown name refuses the whole request; a name asked twice is
/// answered once.
pub fn resolve_want_refs(
    manifest: &Manifest,
    names: &[String],
) -> Result<Vec<(ObjectId, String)>, BadRequest> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .filter(|name| seen.insert(name.as_str()))
        .map(|name| {
            let id = if name == "HEAD" {
                manifest.head_id()
            } else {
                manifest.refs.get(name).map(|r| r.id)
            };
            id.map(|id| (id, name.clone()))
                .ok_or_else(|| BadRequest::new(format!("unknown ref {name}")))
        })
        .collect()
}

/// The `object-info` answer: sizes by id; an object the repository does not have gets
/// its id and a space, as git answers.
pub fn object_info(sizes: &[(ObjectId, Option<u64>)]) -> Bytes {
    let mut w = PktWriter::new();
    w.line("size");
    for (id, size) in sizes {
        match size {
            Some(size) => w.line(format!("{id} {size}")),
            None => w.line(format!("{id} ")),
        };
    }
    w.flush();
    w.finish()
}

/// A parsed v2 `fetch`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetch {
    pub wants: Vec<ObjectId>,
    /// `want-ref <name>`: refs wanted by name, resolved by the server
    /// (`ref-in-want`).
    pub want_refs: Vec<String>,
    pub haves: Vec<ObjectId>,
    pub done: bool,
    pub thin_pack: bool,
    pub no_progress: bool,
    pub include_tag: bool,
    pub wait_for_done: bool,
    pub shallows: Vec<ObjectId>,
    pub deepen: super::upload_pack::Deepen,
    pub filter: Option<String>,
    /// `packfile-uris <protocols>`: the URL schemes the client downloads packs by.
    pub packfile_uris: Vec<String>,
}

impl Fetch {
    /// Parses the arguments of a `fetch` within the default limits.
    pub fn parse(args: &[String]) -> Result<Self, BadRequest> {
        Self::parse_within(args, &RequestLimits::default())
    }

    /// Parses the arguments of a `fetch`, refusing what is past `limits`.
    pub fn parse_within(args: &[String], limits: &RequestLimits) -> Result<Self, BadRequest> {
        let mut fetch = Fetch::default();
        for arg in args {
            let arg = arg.as_str();
            if let Some(id) = arg.strip_prefix("want ") {
                fetch.wants.push(parse_oid(id.as_bytes())?);
            } else if let Some(id) = arg.strip_prefix("have ") {
                fetch.haves.push(parse_oid(id.as_bytes())?);
            } else if let Some(name) = arg.strip_prefix("want-ref ") {
                fetch.want_refs.push(name.to_owned());
            } else if let Some(schemes) = arg.strip_prefix("packfile-uris ") {
                fetch.packfile_uris = schemes.split(',').take(16).map(str::to_owned).collect();
            } else {
                match arg {
                    "done" => fetch.done = true,
                    "thin-pack" => fetch.thin_pack = true,
                    "no-progress" => fetch.no_progress = true,
                    "include-tag" => fetch.include_tag = true,
                    "ofs-delta" => {}
                    "wait-for-done" => fetch.wait_for_done = true,
                    _ if arg.starts_with("shallow ") => {
                        fetch
                            .shallows
                            .push(parse_oid(&arg.as_bytes()["shallow ".len()..])?);
                    }
                    _ if arg.starts_with("deepen") || arg.starts_with("filter ") => {
                        super::upload_pack::parse_shallow_or_filter(
                            arg,
                            &mut fetch.deepen,
                            &mut fetch.filter,
                        )?;
                    }
                    _ => {
                        return Err(BadRequest::new(format!("unknown fetch argument {arg:?}")));
                    }
                }
            }
        }
        if fetch.wants.is_empty() && fetch.want_refs.is_empty() {
            return Err(BadRequest::new("fetch without any want"));
        }
        limits.check_fetch(
            fetch.wants.len() + fetch.want_refs.len(),
            fetch.haves.len(),
            &fetch.deepen,
            fetch.filter.as_deref(),
        )?;
        Ok(fetch)
    }
}

/// The `acknowledgments` section of a fetch answer (none when the client sent `done`);
/// `(lines, true)` when the pack follows, the section then ending with `ready` and a
/// delimiter. `can_give_up` says whether every want reaches a common commit.
pub fn acknowledgments(fetch: &Fetch, common: &[ObjectId], can_give_up: bool) -> (Bytes, bool) {
    let mut w = PktWriter::new();
    // With `done`, or with nothing to negotiate, the pack follows at once.
    if fetch.done || fetch.haves.is_empty() {
        return (w.finish(), true);
    }
    w.line("acknowledgments");
    if common.is_empty() {
        w.line("NAK");
    }
    for id in common {
        w.line(format!("ACK {id}"));
    }
    let ready = !common.is_empty() && can_give_up && !fetch.wait_for_done;
    if ready {
        w.line("ready").delim();
    } else {
        w.flush();
    }
    (w.finish(), ready)
}

/// The sections between the acknowledgments and the pack data: `shallow-info` when the
/// client is or becomes shallow, `wanted-refs` when it named refs (`want-ref`), then
/// the `packfile` header.
pub fn before_pack(
    fetch: &Fetch,
    shallow: &[ObjectId],
    unshallow: &[ObjectId],
    wanted_refs: &[(ObjectId, String)],
    pack_uris: &[(ObjectId, String)],
) -> Bytes {
    let mut w = PktWriter::new();
    if fetch.deepen.requested() || !fetch.shallows.is_empty() {
        w.line("shallow-info");
        super::upload_pack::shallow_lines(&mut w, shallow, unshallow);
        w.delim();
    }
    if !wanted_refs.is_empty() {
        w.line("wanted-refs");
        for (id, name) in wanted_refs {
            w.line(format!("{id} {name}"));
        }
        w.delim();
    }
    if !pack_uris.is_empty() {
        w.line("packfile-uris");
        for (hash, uri) in pack_uris {
            w.line(format!("{hash} {uri}"));
        }
        w.delim();
    }
    w.line("packfile");
    w.finish()
}

/// The answer to `bundle-uri`: a bundle list (git's `bundle.*` keys) in which the
/// client takes every bundle, each named by its pack.
pub fn bundle_list(bundles: &[(ObjectId, String)]) -> Bytes {
    let mut w = PktWriter::new();
    if !bundles.is_empty() {
        w.line("bundle.version=1").line("bundle.mode=all");
        for (hash, uri) in bundles {
            w.line(format!("bundle.pack-{hash}.uri={uri}"));
        }
    }
    w.flush();
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::RefValue;

    const A: &str = "67463eab6b939e3de1ed116192ded6d6788017e3";
    const T: &str = "c2be8f33c8b6942409d3162ec847efb217dc0fdb";

    fn oid(hex: &str) -> ObjectId {
        ObjectId::from_hex(hex.as_bytes()).expect("hex")
    }

    fn manifest() -> Manifest {
        let mut m = Manifest::empty("refs/heads/main");
        m.refs.insert(
            "refs/heads/main".into(),
            RefValue {
                id: oid(A),
                peeled: None,
            },
        );
        m.refs.insert(
            "refs/tags/v1".into(),
            RefValue {
                id: oid(T),
                peeled: Some(oid(A)),
            },
        );
        m
    }

    #[test]
    fn parses_commands() {
        let mut w = PktWriter::new();
        w.line("command=ls-refs")
            .line("agent=git/2.47")
            .line("object-format=sha1")
            .delim();
        w.line("peel")
            .line("symrefs")
            .line("ref-prefix refs/heads/")
            .flush();
        let r = CommandRequest::parse(&w.finish()).expect("valid");
        assert_eq!(r.command, "ls-refs");
        assert_eq!(r.args, ["peel", "symrefs", "ref-prefix refs/heads/"]);
        for (format, known) in [("sha256", true), ("md5", false)] {
            let mut w = PktWriter::new();
            w.line("command=fetch")
                .line(format!("object-format={format}"))
                .delim()
                .flush();
            assert_eq!(
                CommandRequest::parse(&w.finish()).is_ok(),
                known,
                "{format}"
            );
        }
    }

    #[test]
    fn ls_refs_with_symrefs_peel_and_prefixes() {
        let all = ls_refs(&manifest(), &["symrefs".into(), "peel".into()]).expect("ok");
        let text = String::from_utf8_lossy(&all);
        assert!(text.contains(&format!("{A} HEAD symref-target:refs/heads/main\n")));
        assert!(text.contains(&format!("{T} refs/tags/v1 peeled:{A}\n")));
        let tags = ls_refs(&manifest(), &["ref-prefix refs/tags/".into()]).expect("ok");
        let text = String::from_utf8_lossy(&tags);
        assert!(
            !text.contains("HEAD")
                && !text.contains("refs/heads/main")
                && text.contains("refs/tags/v1")
        );
        let empty = Manifest::empty("refs/heads/main");
        let unborn = ls_refs(&empty, &["unborn".into(), "symrefs".into()]).expect("ok");
        assert_eq!(
            &unborn[..],
            b"002eunborn HEAD symref-target:refs/heads/main\n0000"
        );
    }

    #[test]
    fn fetch_acknowledgments() {
        let fetch = Fetch::parse(&[format!("want {A}"), format!("have {T}")]).expect("valid");
        let (lines, ready) = acknowledgments(&fetch, &[], false);
        assert!(!ready);
        assert_eq!(&lines[..], b"0014acknowledgments\n0008NAK\n0000");
        let (lines, ready) = acknowledgments(&fetch, &[oid(T)], true);
        assert!(ready);
        assert!(String::from_utf8_lossy(&lines).ends_with("000aready\n0001"));
        let done = Fetch {
            done: true,
            ..fetch
        };
        assert_eq!(
            acknowledgments(&done, &[oid(T)], true),
            (Bytes::new(), true)
        );
        assert_eq!(
            &before_pack(&done, &[], &[], &[], &[])[..],
            b"000dpackfile\n"
        );
        let deep = Fetch {
            deepen: super::super::upload_pack::Deepen {
                depth: Some(1),
                ..Default::default()
            },
            ..done
        };
        assert_eq!(
            &before_pack(&deep, &[oid(A)], &[], &[], &[])[..],
            format!("0011shallow-info\n0034shallow {A}0001000dpackfile\n").as_bytes()
        );
        let named = before_pack(
            &deep,
            &[oid(A)],
            &[],
            &[(oid(A), "refs/heads/main".into())],
            &[],
        );
        assert_eq!(
            &named[..],
            format!(
                "0011shallow-info\n0034shallow {A}0001\
                 0010wanted-refs\n003d{A} refs/heads/main\n0001000dpackfile\n"
            )
            .as_bytes()
        );
    }

    #[test]
    fn want_refs_resolve_by_full_name() {
        let fetch = Fetch::parse(&["want-ref refs/heads/main".into(), "done".into()]).expect("ok");
        assert!(fetch.wants.is_empty());
        let m = manifest();
        assert_eq!(
            resolve_want_refs(&m, &fetch.want_refs).expect("known"),
            [(oid(A), "refs/heads/main".to_owned())]
        );
        assert_eq!(
            resolve_want_refs(&m, &["HEAD".into()]).expect("HEAD"),
            [(oid(A), "HEAD".to_owned())]
        );
        let err = resolve_want_refs(&m, &["main".into()]).expect_err("short names are not refs");
        assert_eq!(err.0, "unknown ref main");
    }
}
