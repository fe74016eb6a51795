//! pkt-line framing ([gitprotocol-common], "pkt-line Format") and side-band
//! multiplexing ([gitprotocol-pack], "Packfile Data").
//!
//! Parsing is split as the protocol suggests: [`PktLine::parse`] on a byte slice says
//! whether a whole line is there (`Ok(None)` when more bytes are needed: a normal
//! outcome, not an error) and what it is.
//!
//! [gitprotocol-common]: https://git-scm.com/docs/gitprotocol-common
//! [gitprotocol-pack]: https://git-scm.com/docs/gitprotocol-pack

use bytes::{BufMut, Bytes, BytesMut};

/// Largest pkt-line: four length bytes plus 65516 bytes of data.
pub const MAX_PKT_LEN: usize = 65520;
/// Largest payload of one side-band-64k frame (the band byte takes one).
pub const MAX_SIDEBAND_DATA: usize = MAX_PKT_LEN - 4 - 1;

/// One parsed pkt-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PktLine<'a> {
    /// `0000`: ends a section or message.
    Flush,
    /// `0001`: separates sections in protocol v2.
    Delim,
    /// `0002`: ends a stateless-connect response in protocol v2.
    ResponseEnd,
    /// A data line, with its trailing newline (if any) removed.
    Data(&'a [u8]),
}

/// Why bytes are not a valid pkt-line stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    #[error("invalid pkt-line length prefix {0:?}")]
    BadLength(String),
    #[error("pkt-line of {0} bytes is longer than the protocol allows")]
    TooLong(usize),
    #[error("the request ended inside a pkt-line")]
    Truncated,
}

impl<'a> PktLine<'a> {
    /// Parses one line from the start of `buf`: `Ok(None)` if more bytes are needed,
    /// otherwise the line and how many bytes it took.
    pub fn parse(buf: &'a [u8]) -> Result<Option<(PktLine<'a>, usize)>, PktError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let prefix = &buf[..4];
        let len = std::str::from_utf8(prefix)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .filter(|_| prefix.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| PktError::BadLength(String::from_utf8_lossy(prefix).into_owned()))?;
        let line = match len {
            0 => PktLine::Flush,
            1 => PktLine::Delim,
            2 => PktLine::ResponseEnd,
            3 => {
                return Err(PktError::BadLength(
                    String::from_utf8_lossy(prefix).into_owned(),
                ));
            }
            n if n > MAX_PKT_LEN => return Err(PktError::TooLong(n)),
            n => {
                if buf.len() < n {
                    return Ok(None);
                }
                let mut data = &buf[4..n];
                if let Some(stripped) = data.strip_suffix(b"\n") {
                    data = stripped;
                }
                return Ok(Some((PktLine::Data(data), n)));
            }
        };
        Ok(Some((line, 4)))
    }
}

/// Splits a whole request body into pkt-lines.
#[derive(Debug)]
pub struct PktReader<'a> {
    buf: &'a [u8],
}

impl<'a> PktReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        PktReader { buf }
    }

    /// The next line, `Ok(None)` at the end of the body, or an error for a body that
    /// is not pkt-lines or ends inside one.
    pub fn next_line(&mut self) -> Result<Option<PktLine<'a>>, PktError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        match PktLine::parse(self.buf)? {
            Some((line, used)) => {
                self.buf = &self.buf[used..];
                Ok(Some(line))
            }
            None => Err(PktError::Truncated),
        }
    }

    /// What is left after the lines read so far.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }
}

/// Builds pkt-line output.
#[derive(Debug, Default)]
pub struct PktWriter {
    buf: BytesMut,
}

impl PktWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A data line holding `data` as given (callers add the newline the protocol wants).
    pub fn data(&mut self, data: &[u8]) -> &mut Self {
        debug_assert!(data.len() + 4 <= MAX_PKT_LEN, "pkt-line too long");
        self.buf
            .put_slice(format!("{:04x}", data.len() + 4).as_bytes());
        self.buf.put_slice(data);
        self
    }

    /// A text line: `line` followed by a newline.
    pub fn line(&mut self, line: impl AsRef<str>) -> &mut Self {
        let line = line.as_ref();
        self.buf
            .put_slice(format!("{:04x}", line.len() + 5).as_bytes());
        self.buf.put_slice(line.as_bytes());
        self.buf.put_u8(b'\n');
        self
    }

    /// Bytes that are already pkt-lines, appended as they are.
    pub fn raw(&mut self, framed: &[u8]) -> &mut Self {
        self.buf.put_slice(framed);
        self
    }

    pub fn flush(&mut self) -> &mut Self {
        self.buf.put_slice(b"0000");
        self
    }

    pub fn delim(&mut self) -> &mut Self {
        self.buf.put_slice(b"0001");
        self
    }

    /// `data` in side-band frames of `band` (1: pack data, 2: progress, 3: error),
    /// split to fit `max_frame` bytes of payload.
    pub fn band(&mut self, band: u8, data: &[u8], max_frame: usize) -> &mut Self {
        for chunk in data.chunks(max_frame.max(1)) {
            self.buf
                .put_slice(format!("{:04x}", chunk.len() + 5).as_bytes());
            self.buf.put_u8(band);
            self.buf.put_slice(chunk);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn take(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// A git `ERR` line, which the client shows as `remote error: <message>`.
pub fn err_line(message: &str) -> Bytes {
    let mut w = PktWriter::new();
    w.line(format!("ERR {message}"));
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_flush_and_partial_input() {
        let body = b"000ahello\n0000000ecapability0001";
        let mut r = PktReader::new(body);
        assert_eq!(r.next_line(), Ok(Some(PktLine::Data(b"hello"))));
        assert_eq!(r.next_line(), Ok(Some(PktLine::Flush)));
        assert_eq!(r.next_line(), Ok(Some(PktLine::Data(b"capability"))));
        assert_eq!(r.next_line(), Ok(Some(PktLine::Delim)));
        assert_eq!(r.next_line(), Ok(None));
        assert_eq!(
            PktLine::parse(b"000ahel"),
            Ok(None),
            "incomplete is not an error"
        );
        assert_eq!(PktLine::parse(b"00"), Ok(None));
    }

    #[test]
    fn refuses_malformed_lengths() {
        assert!(matches!(
            PktLine::parse(b"zzzzabc"),
            Err(PktError::BadLength(_))
        ));
        assert!(matches!(
            PktLine::parse(b"0003"),
            Err(PktError::BadLength(_))
        ));
        assert!(matches!(
            PktLine::parse(b"+00a12345"),
            Err(PktError::BadLength(_))
        ));
        assert!(matches!(
            PktLine::parse(b"fff5xx"),
            Err(PktError::TooLong(_))
        ));
        assert_eq!(
            PktReader::new(b"0010short").next_line(),
            Err(PktError::Truncated)
        );
    }

    #[test]
    fn writes_lines_and_bands() {
        let mut w = PktWriter::new();
        w.line("# service=git-upload-pack").flush();
        assert_eq!(&w.take()[..], b"001e# service=git-upload-pack\n0000");
        w.band(2, b"abcdef", 4);
        assert_eq!(&w.take()[..], b"0009\x02abcd0007\x02ef");
        assert_eq!(
            &err_line("no such repository")[..],
            b"001bERR no such repository\n"
        );
    }
}
