//! The server side of git's wire protocol over stateless HTTP, as pure functions over
//! request bytes and streams, knowing nothing of HTTP frameworks.
//!
//! - [`pktline`]: framing and side-band multiplexing;
//! - [`advertise`]: `info/refs` answers (v0 advertisement, v2 capabilities);
//! - [`upload_pack`]: fetch and clone in protocol v0/v1 (stateless negotiation);
//! - [`v2`]: protocol v2 commands `ls-refs` and `fetch`;
//! - [`receive_pack`]: push (commands, pack, report-status).
//!
//! References: [gitprotocol-http], [gitprotocol-pack], [gitprotocol-v2].
//!
//! [gitprotocol-http]: https://git-scm.com/docs/gitprotocol-http
//! [gitprotocol-pack]: https://git-scm.com/docs/gitprotocol-pack
//! [gitprotocol-v2]: https://git-scm.com/docs/gitprotocol-v2

pub mod advertise;
pub mod pktline;
pub mod receive_pack;
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

/// The `agent=` value this server announces.
pub fn agent() -> String {
    format!("stowage/{}", env!("CARGO_PKG_VERSION"))
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

/// Parses a 40-hex object id.
pub fn parse_oid(hex: &[u8]) -> Result<ObjectId, BadRequest> {
    if hex.len() != 40 {
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

/// `prefix` (already framed), then the pack from `chunks` framed as `framing` says,
/// then `suffix`. Progress lines go on band 2 when `progress` is on and there is a
/// side-band. A failure while producing the pack goes to the client on band 3 when
/// there is a side-band, and cuts the response short otherwise.
pub fn pack_response(
    prefix: Bytes,
    chunks: PackChunks,
    framing: Framing,
    progress: bool,
    suffix: Bytes,
) -> Body {
    let head = futures::stream::once(async move { Ok(prefix) });
    let pack = tokio_stream_from(chunks).filter_map(move |event| {
        let framed = match (event, framing) {
            (Ok(PackEvent::Data(bytes)), Framing::Raw) => Some(Ok(bytes)),
            (Ok(PackEvent::Data(bytes)), Framing::Sideband(max)) => {
                let mut w = PktWriter::new();
                w.band(1, &bytes, max);
                Some(Ok(w.finish()))
            }
            (Ok(PackEvent::Progress(line)), Framing::Sideband(max)) if progress => {
                let mut w = PktWriter::new();
                w.band(2, line.as_bytes(), max);
                Some(Ok(w.finish()))
            }
            (Ok(PackEvent::Progress(_)), _) => None,
            (Err(e), Framing::Sideband(max)) => {
                tracing::error!(error = %e, "pack generation failed");
                let mut w = PktWriter::new();
                w.band(3, format!("error: {e}\n").as_bytes(), max);
                Some(Ok(w.finish()))
            }
            (Err(e), Framing::Raw) => Some(Err(io::Error::other(e.to_string()))),
        };
        futures::future::ready(framed)
    });
    let tail = futures::stream::once(async move { Ok(suffix) });
    head.chain(pack).chain(tail).boxed()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
