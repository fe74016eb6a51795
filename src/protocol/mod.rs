//! The server side of git's wire protocol over stateless HTTP, as pure functions over
//! request bytes and streams, knowing nothing of HTTP frameworks.
//!
//! - [`pktline`]: framing and side-band multiplexing;
//! - [`advertise`]: `info/refs` answers (v0 advertisement, v2 capabilities);
//! - [`upload_pack`]: fetch and clone in protocol v0/v1 (stateless negotiation);
//! - [`v2`]: protocol v2 commands `ls-refs` and `fetch`;
//! - [`receive_pack`]: push (commands, pack, report-status);
//! - [`serve`]: answers each request for one repository (negotiation, walk limits,
//!   pack streaming, the push), given a repository and, for pushes, a ref policy.
//!
//! References: [gitprotocol-http], [gitprotocol-pack], [gitprotocol-v2].
//!
//! [gitprotocol-http]: https://git-scm.com/docs/gitprotocol-http
//! [gitprotocol-pack]: https://git-scm.com/docs/gitprotocol-pack
//! [gitprotocol-v2]: https://git-scm.com/docs/gitprotocol-v2

pub mod advertise;
pub mod pktline;
pub mod receive_pack;
pub mod serve;
pub mod upload_pack;
pub mod v2;

use std::io;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use gix_hash::ObjectId;

use crate::repo::packgen::{PackChunks, PackEvent};
use pktline::{MAX_SIDEBAND_DATA, PktWriter};

/// A response body, produced as the client reads it.
pub type Body = BoxStream<'static, Result<Bytes, io::Error>>;

/// The two git services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    UploadPack,
    ReceivePack,
}

impl Service {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "git-upload-pack" => Some(Service::UploadPack),
            "git-receive-pack" => Some(Service::ReceivePack),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::UploadPack => "git-upload-pack",
            Service::ReceivePack => "git-receive-pack",
        }
    }
}

/// The protocol version a request asked for with `Git-Protocol: version=<n>` (the
/// highest one named that this server speaks; v0 when none is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0,
    /// The v0 protocol, its advertisement opened by `version 1`.
    V1,
    V2,
}

impl Version {
    /// The version asked for by the values of a request's `Git-Protocol` headers.
    pub fn requested<'a>(values: impl IntoIterator<Item = &'a str>) -> Version {
        values
            .into_iter()
            .flat_map(|v| v.split(':'))
            .filter_map(|p| match p.trim() {
                "version=2" => Some(Version::V2),
                "version=1" => Some(Version::V1),
                _ => None,
            })
            .max()
            .unwrap_or(Version::V0)
    }
}

/// The `agent=` value this server announces.
pub fn agent() -> String {
    format!("stowage/{}", env!("CARGO_PKG_VERSION"))
}

/// Optional protocol features, named after the git settings that turn them on in
/// `git upload-pack` and `git receive-pack`; off by default there and here.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// Accept `want-ref` in v2 fetches and advertise `ref-in-want`
    /// (`uploadpack.allowRefInWant`).
    pub ref_in_want: bool,
    /// Advertise a `session-id` (`transfer.advertiseSID`).
    pub advertise_session_id: bool,
    /// Clones served by links to the store (`--packfile-uris`, `--bundle-uri`).
    pub offload: Option<Offload>,
}

/// Clone bytes fetched from the store itself, by links it signs, so that they do not
/// pass through the server: stored packs as `packfile-uris` of a v2 fetch, and bundles
/// of compacted packs as a `bundle-uri` list.
#[derive(Debug, Clone)]
pub struct Offload {
    pub access: std::sync::Arc<dyn stowage_store::direct::DirectAccess>,
    /// Answer `packfile-uris` (`--packfile-uris`).
    pub packfile_uris: bool,
    /// Advertise and answer `bundle-uri` (`--bundle-uri`).
    pub bundle_uri: bool,
    /// Smallest pack offloaded, and smallest compacted pack given a bundle.
    pub min_bytes: u64,
    /// How long a link is good for.
    pub lifetime: std::time::Duration,
}

impl Features {
    /// The `session-id=...` capability of one answer, when advertised.
    pub fn session_id(&self) -> Option<String> {
        self.advertise_session_id.then(session_id)
    }
}

/// A session id for one answer: unique per server process and request, so that a
/// client's trace and the server's log can be matched.
fn session_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let start = START.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{:x}.{:06}-P{:x}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id()
        )
    });
    format!("stowage-{start}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What one request may ask of the server. Each limit has a default and a
/// `stowage serve` flag (README, "Limits"); a request past one is refused with a
/// message git shows its user.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// pkt-lines in one fetch request (`--max-pkt-lines`).
    pub max_pkt_lines: usize,
    /// `want` lines in one fetch request (`--max-wants`).
    pub max_wants: usize,
    /// `have` lines in one fetch request (`--max-haves`).
    pub max_haves: usize,
    /// The deepest `deepen <n>` (`--max-depth`); git asks 2147483647 to unshallow.
    pub max_depth: u32,
    /// The longest `filter` spec, in bytes (`--max-filter-bytes`).
    pub max_filter_bytes: usize,
    /// Ref updates (and shallow lines) in one push (`--max-push-commands`).
    pub max_push_commands: usize,
    /// Push options in one push (`--max-push-options`).
    pub max_push_options: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_pkt_lines: 2_000_000,
            max_wants: 1_000_000,
            max_haves: 1_000_000,
            max_depth: i32::MAX as u32,
            max_filter_bytes: 4096,
            max_push_commands: 100_000,
            max_push_options: 100,
        }
    }
}

impl RequestLimits {
    /// Counts one more line of a request, refusing past the limit.
    pub(crate) fn line(&self, count: &mut usize) -> Result<(), BadRequest> {
        *count += 1;
        if *count > self.max_pkt_lines {
            return Err(BadRequest::new(format!(
                "the request has more than {} lines, more than this server accepts",
                self.max_pkt_lines
            )));
        }
        Ok(())
    }

    /// Checks what a fetch asks for, whichever protocol version carried it.
    pub(crate) fn check_fetch(
        &self,
        wants: usize,
        haves: usize,
        deepen: &upload_pack::Deepen,
        filter: Option<&str>,
    ) -> Result<(), BadRequest> {
        let over = |what: &str, limit: usize| {
            Err(BadRequest::new(format!(
                "the request has more than {limit} {what}, more than this server accepts"
            )))
        };
        if wants > self.max_wants {
            return over("wants", self.max_wants);
        }
        if haves > self.max_haves {
            return over("haves", self.max_haves);
        }
        if let Some(depth) = deepen.depth
            && depth > self.max_depth
        {
            return Err(BadRequest::new(format!(
                "deepen {depth} is deeper than this server accepts ({})",
                self.max_depth
            )));
        }
        if let Some(spec) = filter
            && spec.len() > self.max_filter_bytes
        {
            return Err(BadRequest::new(format!(
                "the filter spec is longer than this server accepts ({} bytes)",
                self.max_filter_bytes
            )));
        }
        Ok(())
    }
}

/// A request the protocol layer refuses, with the text git shows to its user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

impl BadRequest {
    pub fn new(message: impl Into<String>) -> Self {
        BadRequest(message.into())
    }
}

impl From<pktline::PktError> for BadRequest {
    fn from(e: pktline::PktError) -> Self {
        BadRequest(format!("malformed request: {e}"))
    }
}

/// Parses an object id: 40 hex digits (sha1) or 64 (sha256).
pub fn parse_oid(hex: &[u8]) -> Result<ObjectId, BadRequest> {
    if hex.len() != 40 && hex.len() != 64 {
        return Err(BadRequest::new(format!(
            "invalid object id {:?}",
            String::from_utf8_lossy(hex)
        )));
    }
    ObjectId::from_hex(hex).map_err(|_| {
        BadRequest::new(format!(
            "invalid object id {:?}",
            String::from_utf8_lossy(hex)
        ))
    })
}

/// How pack data reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Raw pack bytes (no side-band).
    Raw,
    /// Side-band with frames of at most this much data.
    Sideband(usize),
}

impl Framing {
    pub fn from_caps(side_band_64k: bool, side_band: bool) -> Self {
        if side_band_64k {
            Framing::Sideband(MAX_SIDEBAND_DATA)
        } else if side_band {
            Framing::Sideband(999 - 5)
        } else {
            Framing::Raw
        }
    }
}

/// How long a side-band response may stay silent before an empty band-1 packet
/// (`0005\x01`) tells the client and any proxy that the server is still at work, as
/// git's `uploadpack.keepAlive` (5 seconds by default) does.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// `prefix` (already framed), then the pack from `chunks` framed as `framing` says,
/// then `suffix`. Progress lines go on band 2 when `progress` is on and there is a
/// side-band. A failure while producing the pack goes to the client on band 3 when
/// there is a side-band, and cuts the response short otherwise. While the pack is
/// silent for [`KEEPALIVE`] (a long walk), a side-band response sends keep-alives.
pub fn pack_response(
    prefix: Bytes,
    chunks: PackChunks,
    framing: Framing,
    progress: bool,
    suffix: Bytes,
) -> Body {
    pack_response_with(prefix, chunks, framing, progress, suffix, KEEPALIVE)
}

fn pack_response_with(
    prefix: Bytes,
    chunks: PackChunks,
    framing: Framing,
    progress: bool,
    suffix: Bytes,
    keepalive: std::time::Duration,
) -> Body {
    let head = futures::stream::once(async move { Ok(prefix) });
    let events = match framing {
        Framing::Raw => tokio_stream_from(chunks).map(Some).boxed(),
        Framing::Sideband(_) => with_keepalive(chunks, keepalive),
    };
    let pack = events.flat_map(move |event| {
        let framed = match (event, framing) {
            (None, _) => Some(Ok(Bytes::from_static(b"0005\x01"))),
            (Some(Ok(PackEvent::Data(bytes))), Framing::Raw) => Some(Ok(bytes)),
            (Some(Ok(PackEvent::Data(bytes))), Framing::Sideband(max)) => {
                // Each frame's 5-byte header, then its data as it is (not copied).
                return futures::stream::iter(band_frames(bytes, max)).boxed();
            }
            (Some(Ok(PackEvent::Progress(line))), Framing::Sideband(max)) if progress => {
                let mut w = PktWriter::new();
                w.band(2, line.as_bytes(), max);
                Some(Ok(w.finish()))
            }
            (Some(Ok(PackEvent::Progress(_))), _) => None,
            (Some(Err(e)), Framing::Sideband(max)) => {
                tracing::error!(error = %e, "pack generation failed");
                let mut w = PktWriter::new();
                w.band(3, format!("error: {e}\n").as_bytes(), max);
                Some(Ok(w.finish()))
            }
            (Some(Err(e)), Framing::Raw) => Some(Err(io::Error::other(e.to_string()))),
        };
        futures::stream::iter(framed).boxed()
    });
    let tail = futures::stream::once(async move { Ok(suffix) });
    head.chain(pack).chain(tail).boxed()
}

/// `data` as side-band 1 frames of at most `max` bytes: header and data of each frame
/// as separate buffers, the data sliced from `data` without copying.
fn band_frames(data: Bytes, max: usize) -> Vec<Result<Bytes, io::Error>> {
    let max = max.max(1);
    let mut frames = Vec::with_capacity(2 * data.len().div_ceil(max));
    let mut start = 0;
    while start < data.len() {
        let end = (start + max).min(data.len());
        let header = format!("{:04x}\x01", end - start + 5);
        frames.push(Ok(Bytes::from(header.into_bytes())));
        frames.push(Ok(data.slice(start..end)));
        start = end;
    }
    frames
}

/// The events of `rx`, with a `None` for each `interval` in which none came.
fn with_keepalive<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
    interval: std::time::Duration,
) -> BoxStream<'static, Option<T>> {
    futures::stream::unfold(rx, move |mut rx| async move {
        match tokio::time::timeout(interval, rx.recv()).await {
            Ok(Some(event)) => Some((Some(event), rx)),
            Ok(None) => None,
            Err(_) => Some((None, rx)),
        }
    })
    .boxed()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_highest_version_asked_for_is_spoken() {
        assert_eq!(Version::requested([]), Version::V0);
        assert_eq!(Version::requested(["version=1"]), Version::V1);
        assert_eq!(Version::requested(["version=1:version=2"]), Version::V2);
        assert_eq!(
            Version::requested(["object-format=sha1", "version=1"]),
            Version::V1
        );
        assert_eq!(Version::requested(["version=3"]), Version::V0);
    }

    #[tokio::test]
    async fn a_silent_pack_gets_keepalives_on_the_side_band() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = tx
                .send(Ok(PackEvent::Data(Bytes::from_static(b"PACK"))))
                .await;
        });
        let body = pack_response_with(
            Bytes::from_static(b"000dpackfile\n"),
            rx,
            Framing::Sideband(MAX_SIDEBAND_DATA),
            true,
            Bytes::from_static(b"0000"),
            Duration::from_millis(50),
        );
        let parts: Vec<Bytes> = body.map(|r| r.expect("no error")).collect().await;
        let all: Vec<u8> = parts.concat();
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("000dpackfile\n0005\x01"), "{text:?}");
        assert!(text.ends_with("0009\x01PACK0000"), "{text:?}");
        let keepalives = parts.iter().filter(|p| &p[..] == b"0005\x01").count();
        assert!(keepalives >= 2, "{keepalives} keep-alives in {text:?}");
    }

    #[tokio::test]
    async fn raw_packs_get_no_keepalives() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tx
                .send(Ok(PackEvent::Data(Bytes::from_static(b"PACK"))))
                .await;
        });
        let body = pack_response_with(
            Bytes::new(),
            rx,
            Framing::Raw,
            true,
            Bytes::new(),
            Duration::from_millis(20),
        );
        let all: Vec<u8> = body
            .map(|r| r.expect("no error"))
            .collect::<Vec<_>>()
            .await
            .concat();
        assert_eq!(all, b"PACK");
    }
}
