//! `POST git-receive-pack`: the command list, the pack after it, and the
//! report-status answer ([gitprotocol-pack], "Pushing Data To a Server").
//!
//! The command list is read pkt-line by pkt-line from the body stream, stopping at the
//! flush (and the push options that may follow), so that the reader sits at the first
//! byte of the pack, which is then streamed, never held whole in memory.
//!
//! [gitprotocol-pack]: https://git-scm.com/docs/gitprotocol-pack

use std::collections::HashSet;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::pktline::{MAX_PKT_LEN, PktLine, PktWriter};
use super::{BadRequest, Framing, RequestLimits, parse_oid};
use crate::repo::push::{Command, Report};

/// The command section of a push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub commands: Vec<Command>,
    pub caps: HashSet<String>,
    pub push_options: Vec<String>,
}

impl Request {
    pub fn has(&self, cap: &str) -> bool {
        self.caps.contains(cap)
    }

    pub fn framing(&self) -> Framing {
        Framing::from_caps(self.has("side-band-64k"), false)
    }
}

/// Reads one pkt-line from `reader`: `None` at a clean end of input.
async fn read_pkt<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Option<PktLine<'static>>, BadRequest> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader
            .read(&mut len[got..])
            .await
            .map_err(|e| BadRequest::new(format!("reading the request failed: {e}")))?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(BadRequest::new("the request ended inside a pkt-line"))
            };
        }
        got += n;
    }
    match PktLine::parse(&len)? {
        Some((PktLine::Flush, _)) => Ok(Some(PktLine::Flush)),
        Some((PktLine::Delim, _)) => Ok(Some(PktLine::Delim)),
        Some((PktLine::ResponseEnd, _)) => Ok(Some(PktLine::ResponseEnd)),
        _ => {
            let total =
                usize::from_str_radix(std::str::from_utf8(&len).unwrap_or("0"), 16).unwrap_or(0);
            if !(5..=MAX_PKT_LEN).contains(&total) {
                return Err(BadRequest::new("malformed pkt-line length"));
            }
            buf.resize(total - 4, 0);
            reader
                .read_exact(buf)
                .await
                .map_err(|_| BadRequest::new("the request ended inside a pkt-line"))?;
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            Ok(Some(PktLine::Data(&[])))
        }
    }
}

/// Reads the command list (and push options) from the start of a push body, within
/// `limits`. On error, also says how to frame the answer, as far as the capabilities
/// were read.
pub async fn read_request<R: AsyncRead + Unpin>(
    reader: &mut R,
    limits: &RequestLimits,
) -> Result<Request, (BadRequest, Framing)> {
    let mut request = Request::default();
    match read_sections(reader, &mut request, limits).await {
        Ok(()) => Ok(request),
        Err(e) => Err((e, request.framing())),
    }
}

async fn read_sections<R: AsyncRead + Unpin>(
    reader: &mut R,
    request: &mut Request,
    limits: &RequestLimits,
) -> Result<(), BadRequest> {
    let max_commands = limits.max_push_commands;
    let mut buf = Vec::new();
    let mut lines = 0usize;
    loop {
        match read_pkt(reader, &mut buf).await? {
            None => {
                if request.commands.is_empty() {
                    return Ok(()); // an empty push: nothing to do
                }
                return Err(BadRequest::new("the command list ended without a flush"));
            }
            Some(PktLine::Flush) => break,
            Some(PktLine::Data(_)) => {
                lines += 1;
                if lines > max_commands {
                    return Err(BadRequest::new(format!(
                        "more than {max_commands} ref updates in one push, more than this \
                         server accepts"
                    )));
                }
                let (line, caps) = match buf.iter().position(|b| *b == 0) {
                    Some(i) => (&buf[..i], Some(&buf[i + 1..])),
                    None => (&buf[..], None),
                };
                if request.commands.is_empty()
                    && let Some(caps) = caps
                {
                    request.caps = String::from_utf8_lossy(caps)
                        .split(' ')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                // A shallow client names its shallow commits first. The push is still
                // checked for connectivity against the repository, as git does with
                // receive.shallowUpdate off.
                if line.starts_with(b"shallow ") {
                    continue;
                }
                request.commands.push(parse_command(line)?);
            }
            Some(_) => return Err(BadRequest::new("unexpected delimiter in the command list")),
        }
    }
    if request.has("push-options") {
        loop {
            match read_pkt(reader, &mut buf).await? {
                Some(PktLine::Flush) | None => break,
                Some(PktLine::Data(_)) => {
                    if request.push_options.len() >= limits.max_push_options {
                        return Err(BadRequest::new(format!(
                            "more than {} push options, more than this server accepts",
                            limits.max_push_options
                        )));
                    }
                    request
                        .push_options
                        .push(String::from_utf8_lossy(&buf).into_owned());
                }
                Some(_) => return Err(BadRequest::new("unexpected delimiter in push options")),
            }
        }
    }
    Ok(())
}

fn parse_command(line: &[u8]) -> Result<Command, BadRequest> {
    let text =
        std::str::from_utf8(line).map_err(|_| BadRequest::new("a ref update line is not UTF-8"))?;
    let mut parts = text.splitn(3, ' ');
    let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(BadRequest::new(format!("malformed ref update {text:?}")));
    };
    Ok(Command {
        old: parse_oid(old.as_bytes())?,
        new: parse_oid(new.as_bytes())?,
        name: name.to_owned(),
    })
}

/// The report-status answer, framed for the client.
pub fn report(report: &Report, framing: Framing) -> Bytes {
    let mut inner = PktWriter::new();
    match &report.unpack {
        Ok(()) => inner.line("unpack ok"),
        Err(reason) => inner.line(format!("unpack {}", one_line(reason))),
    };
    for (name, result) in &report.refs {
        let name = one_line(name);
        match result {
            Ok(()) => inner.line(format!("ok {name}")),
            Err(reason) => inner.line(format!("ng {name} {}", one_line(reason))),
        };
    }
    inner.flush();
    let inner = inner.finish();
    match framing {
        Framing::Raw => inner,
        Framing::Sideband(max) => {
            let mut w = PktWriter::new();
            for message in &report.messages {
                w.band(2, format!("{}\n", one_line(message)).as_bytes(), max);
            }
            w.band(1, &inner, max).flush();
            w.finish()
        }
    }
}

/// Lines shown to the pusher as `remote:` lines (band 2), while the push runs; nothing
/// without a side-band.
pub fn notes(lines: &[String], framing: Framing) -> Bytes {
    match framing {
        Framing::Raw => Bytes::new(),
        Framing::Sideband(max) => {
            let mut w = PktWriter::new();
            for line in lines {
                w.band(2, format!("{}\n", one_line(line)).as_bytes(), max);
            }
            w.finish()
        }
    }
}

/// A fatal error for a push, as the client shows it (band 3 when multiplexed).
pub fn fatal(message: &str, framing: Framing) -> Bytes {
    match framing {
        Framing::Raw => super::pktline::err_line(message),
        Framing::Sideband(max) => {
            let mut w = PktWriter::new();
            w.band(3, format!("{message}\n").as_bytes(), max).flush();
            w.finish()
        }
    }
}

/// `text` on one line, short enough for a pkt-line whatever a client sent.
fn one_line(text: &str) -> String {
    let mut line = text.replace(['\n', '\r'], " ");
    if line.len() > 4000 {
        let mut end = 4000;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const Z: &str = "0000000000000000000000000000000000000000";
    const A: &str = "67463eab6b939e3de1ed116192ded6d6788017e3";

    #[tokio::test]
    async fn reads_commands_and_stops_at_the_pack() {
        let mut w = PktWriter::new();
        w.data(
            format!("{Z} {A} refs/heads/main\0report-status side-band-64k push-options\n")
                .as_bytes(),
        )
        .line(format!("{A} {Z} refs/heads/old"))
        .flush()
        .line("ci.skip")
        .flush();
        let mut body = w.finish().to_vec();
        body.extend_from_slice(b"PACK....");
        let mut reader = &body[..];
        let request = read_request(&mut reader, &RequestLimits::default())
            .await
            .map_err(|e| e.0)
            .expect("valid");
        assert_eq!(request.commands.len(), 2);
        assert_eq!(request.commands[0].name, "refs/heads/main");
        assert!(request.commands[1].new.is_null());
        assert!(request.has("side-band-64k"));
        assert_eq!(request.push_options, ["ci.skip"]);
        assert_eq!(reader, b"PACK....", "the reader sits at the pack");
    }

    #[tokio::test]
    async fn refuses_malformed_command_lists() {
        for bad in [&b"0010short"[..], b"zzzz", b"0009xxxxx0000", b"0003"] {
            let mut reader = bad;
            assert!(
                read_request(&mut reader, &RequestLimits::default())
                    .await
                    .is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn shallow_lines_are_skipped() {
        let mut w = PktWriter::new();
        w.line(format!("shallow {A}"))
            .data(format!("{A} {A} refs/heads/main\0report-status\n").as_bytes())
            .flush();
        let body = w.finish();
        let mut reader = &body[..];
        let request = read_request(&mut reader, &RequestLimits::default())
            .await
            .map_err(|e| e.0)
            .expect("valid");
        assert_eq!(request.commands.len(), 1);
        assert!(request.has("report-status"));
    }

    #[test]
    fn reports_in_side_band() {
        let r = Report {
            event: None,
            unpack: Ok(()),
            refs: vec![
                ("refs/heads/main".into(), Ok(())),
                ("refs/heads/x".into(), Err("fetch first".into())),
            ],
            messages: Vec::new(),
            created: false,
        };
        let raw = report(&r, Framing::Raw);
        assert_eq!(
            &raw[..],
            b"000eunpack ok\n0017ok refs/heads/main\n0020ng refs/heads/x fetch first\n0000"
        );
        let banded = report(&r, Framing::Sideband(65515));
        assert!(banded.starts_with(b"004e\x01000eunpack ok"));
        assert!(banded.ends_with(b"00000000"));
    }
}
