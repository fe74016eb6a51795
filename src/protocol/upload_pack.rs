//! `POST git-upload-pack` in protocol v0/v1: stateless negotiation ([gitprotocol-pack],
//! "Packfile Negotiation"; [gitprotocol-http], "Smart Service git-upload-pack").
//!
//! Each request carries the wants (capabilities on the first), a flush, the haves of
//! this round and either a flush (more rounds follow) or `done`. With
//! `multi_ack_detailed` the answer to a round is `ACK <id> common` per known have, then
//! `ACK <id> ready` once a common commit is found, then `NAK`; with `no-done` a ready
//! round goes straight on to the pack. The final answer is `ACK <last common>` (or
//! `NAK`) and the pack.
//!
//! [gitprotocol-pack]: https://git-scm.com/docs/gitprotocol-pack
//! [gitprotocol-http]: https://git-scm.com/docs/gitprotocol-http

use std::collections::HashSet;

use bytes::Bytes;
use gix_hash::ObjectId;

use super::pktline::{PktLine, PktReader, PktWriter};
use super::{BadRequest, Framing, RequestLimits, parse_oid};

/// A parsed v0/v1 upload-pack request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub wants: Vec<ObjectId>,
    pub haves: Vec<ObjectId>,
    pub done: bool,
    pub caps: HashSet<String>,
    /// The client's shallow commits.
    pub shallows: Vec<ObjectId>,
    /// `deepen`, `deepen-since`, `deepen-not`, `deepen-relative`.
    pub deepen: Deepen,
    /// `filter <spec>`, unparsed.
    pub filter: Option<String>,
}

impl Request {
    pub fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    pub fn framing(&self) -> Framing {
        Framing::from_caps(self.has("side-band-64k"), self.has("side-band"))
    }

    /// Parses a request body within the default limits.
    pub fn parse(body: &[u8]) -> Result<Self, BadRequest> {
        Self::parse_within(body, &RequestLimits::default())
    }

    /// Parses a request body, refusing what this server does not support, or what is
    /// past `limits`, with a message for the user.
    pub fn parse_within(body: &[u8], limits: &RequestLimits) -> Result<Self, BadRequest> {
        let mut request = Request::default();
        let mut reader = PktReader::new(body);
        let mut first = true;
        let mut lines = 0;
        while let Some(line) = reader.next_line()? {
            limits.line(&mut lines)?;
            let data = match line {
                PktLine::Data(data) => data,
                PktLine::Flush => continue,
                PktLine::Delim | PktLine::ResponseEnd => {
                    return Err(BadRequest::new("unexpected delimiter in a v0 request"));
                }
            };
            if let Some(rest) = data.strip_prefix(b"want ") {
                let (id, caps) = match rest.iter().position(|b| *b == b' ') {
                    Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                    None => (rest, None),
                };
                request.wants.push(parse_oid(id)?);
                if first && let Some(caps) = caps {
                    request.caps = String::from_utf8_lossy(caps)
                        .split(' ')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                first = false;
            } else if let Some(id) = data.strip_prefix(b"have ") {
                request.haves.push(parse_oid(id)?);
            } else if data == b"done" {
                request.done = true;
                break;
            } else if let Some(id) = data.strip_prefix(b"shallow ") {
                request.shallows.push(parse_oid(id)?);
            } else if data.starts_with(b"deepen") || data.starts_with(b"filter ") {
                let arg = std::str::from_utf8(data)
                    .map_err(|_| BadRequest::new("request line is not UTF-8"))?;
                parse_shallow_or_filter(arg, &mut request.deepen, &mut request.filter)?;
            } else {
                return Err(BadRequest::new(format!(
                    "unexpected line in upload-pack request: {:?}",
                    String::from_utf8_lossy(data)
                )));
            }
        }
        if request.wants.is_empty() {
            return Err(BadRequest::new("no want lines in the request"));
        }
        limits.check_fetch(
            request.wants.len(),
            request.haves.len(),
            &request.deepen,
            request.filter.as_deref(),
        )?;
        // In v0/v1, `deepen-relative` is a capability of the first want line.
        request.deepen.relative |= request.has("deepen-relative");
        Ok(request)
    }
}

/// How a client asks to change its shallow boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deepen {
    /// `deepen <depth>`: this many commits from each want (or, with `relative`, from
    /// the client's current shallow commits).
    pub depth: Option<u32>,
    /// `deepen-relative`.
    pub relative: bool,
    /// `deepen-since <time>`: commits from this time on.
    pub since: Option<i64>,
    /// `deepen-not <ref>`: commits not reachable from these refs.
    pub not: Vec<String>,
}

impl Deepen {
    /// Whether the request asks for a new shallow boundary at all.
    pub fn requested(&self) -> bool {
        self.depth.is_some() || self.since.is_some() || !self.not.is_empty()
    }
}

/// Parses a `deepen...` or `filter ...` argument (the same in v0 and v2).
pub fn parse_shallow_or_filter(
    arg: &str,
    deepen: &mut Deepen,
    filter: &mut Option<String>,
) -> Result<(), BadRequest> {
    if let Some(n) = arg.strip_prefix("deepen ") {
        let n: u32 = n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| BadRequest::new(format!("invalid depth {n:?}")))?;
        deepen.depth = Some(n);
    } else if let Some(time) = arg.strip_prefix("deepen-since ") {
        let time: i64 = time
            .parse()
            .map_err(|_| BadRequest::new(format!("invalid deepen-since {time:?}")))?;
        deepen.since = Some(time);
    } else if let Some(name) = arg.strip_prefix("deepen-not ") {
        deepen.not.push(name.to_owned());
    } else if arg == "deepen-relative" {
        deepen.relative = true;
    } else if let Some(spec) = arg.strip_prefix("filter ") {
        *filter = Some(spec.to_owned());
    } else {
        return Err(BadRequest::new(format!("unexpected argument {arg:?}")));
    }
    if deepen.depth.is_some() && (deepen.since.is_some() || !deepen.not.is_empty()) {
        return Err(BadRequest::new(
            "deepen and deepen-since (or deepen-not) cannot be used together",
        ));
    }
    Ok(())
}

/// The shallow section of an answer (`shallow`/`unshallow` lines, git writes them
/// without a newline).
pub fn shallow_lines(w: &mut PktWriter, shallow: &[ObjectId], unshallow: &[ObjectId]) {
    for id in shallow {
        w.data(format!("shallow {id}").as_bytes());
    }
    for id in unshallow {
        w.data(format!("unshallow {id}").as_bytes());
    }
}

/// What to answer to one request, given the haves the repository has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The negotiation lines, already framed.
    pub lines: Bytes,
    /// Whether a pack follows them.
    pub send_pack: bool,
}

/// The negotiation part of the answer. `common` are the request's haves that the
/// repository has, in request order; `can_give_up` says whether every want reaches one
/// of them (git's `ok_to_give_up`), which is when the server may say `ready`.
pub fn negotiate(request: &Request, common: &[ObjectId], can_give_up: bool) -> Answer {
    let mut w = PktWriter::new();
    let detailed = request.has("multi_ack_detailed");
    let multi = detailed || request.has("multi_ack");
    if multi {
        for id in common {
            w.line(format!(
                "ACK {id} {}",
                if detailed { "common" } else { "continue" }
            ));
        }
    }
    let last = common.last();
    if !request.done && request.haves.is_empty() {
        // A round with nothing to negotiate (the first request of a shallow clone,
        // which only asks for the shallow list): git answers it with no lines.
        return Answer {
            lines: w.finish(),
            send_pack: false,
        };
    }
    if request.done {
        match last {
            Some(id) => w.line(format!("ACK {id}")),
            None => w.line("NAK"),
        };
        return Answer {
            lines: w.finish(),
            send_pack: true,
        };
    }
    // End of a round: ready once every want reaches a common commit.
    let ready = detailed && last.is_some() && can_give_up;
    if let (true, Some(id)) = (ready, last) {
        w.line(format!("ACK {id} ready"));
    }
    w.line("NAK");
    if ready && request.has("no-done") {
        let id = last.expect("ready implies a common commit");
        w.line(format!("ACK {id}"));
        return Answer {
            lines: w.finish(),
            send_pack: true,
        };
    }
    Answer {
        lines: w.finish(),
        send_pack: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "67463eab6b939e3de1ed116192ded6d6788017e3";
    const B: &str = "ccb5ad2c09738b0ed5077f2027334fb27a44705e";

    fn body(lines: &[&str]) -> Vec<u8> {
        let mut w = PktWriter::new();
        for l in lines {
            if *l == "0000" {
                w.flush();
            } else {
                w.line(l);
            }
        }
        w.finish().to_vec()
    }

    fn oid(hex: &str) -> ObjectId {
        ObjectId::from_hex(hex.as_bytes()).expect("hex")
    }

    #[test]
    fn parses_a_clone_request() {
        let r = Request::parse(&body(&[
            &format!(
                "want {A} multi_ack_detailed side-band-64k thin-pack ofs-delta agent=git/2.47"
            ),
            &format!("want {B}"),
            "0000",
            "done",
        ]))
        .expect("valid");
        assert_eq!(r.wants, [oid(A), oid(B)]);
        assert!(r.done && r.has("side-band-64k") && r.has("agent=git/2.47"));
        let answer = negotiate(&r, &[], false);
        assert_eq!(&answer.lines[..], b"0008NAK\n");
        assert!(answer.send_pack);
    }

    #[test]
    fn a_round_with_a_common_have_is_ready() {
        let r = Request::parse(&body(&[
            &format!("want {A} multi_ack_detailed no-done side-band-64k"),
            "0000",
            &format!("have {B}"),
            "0000",
        ]))
        .expect("valid");
        let answer = negotiate(&r, &[oid(B)], true);
        let text = String::from_utf8_lossy(&answer.lines).into_owned();
        assert!(text.contains(&format!("ACK {B} common\n")));
        assert!(text.contains(&format!("ACK {B} ready\n")));
        assert!(text.contains("NAK\n"));
        assert!(
            text.ends_with(&format!("ACK {B}\n")),
            "no-done goes on to the pack"
        );
        assert!(answer.send_pack);
        let without_no_done = Request {
            caps: ["multi_ack_detailed".to_owned()].into(),
            ..r
        };
        assert!(!negotiate(&without_no_done, &[oid(B)], true).send_pack);
    }

    #[test]
    fn refuses_malformed_requests() {
        assert!(Request::parse(b"0010want nothing").is_err());
        assert!(Request::parse(&body(&["want 1234"])).is_err());
        assert!(
            Request::parse(&body(&["0000", "done"])).is_err(),
            "no wants"
        );
        assert!(Request::parse(&body(&[&format!("want {A}"), "deepen 0"])).is_err());
        assert!(
            Request::parse(&body(&[&format!("want {A}"), "deepen 2", "deepen-since 1"])).is_err()
        );
        let r = Request::parse(&body(&[
            &format!("want {A}"),
            &format!("shallow {B}"),
            "deepen 3",
            "filter blob:none",
        ]))
        .expect("valid");
        assert_eq!(
            (r.deepen.depth, r.filter.as_deref(), r.shallows.len()),
            (Some(3), Some("blob:none"), 1)
        );
        assert!(Request::parse(b"xxxx").is_err());
    }
}
