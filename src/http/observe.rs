//! What every request is measured by, and its log line: both taken when its response
//! body ends (a clone's pack streams long after its handler returned), with the bytes
//! each way, the time to the first body byte, and the request's phase times.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use crate::metrics::{DurationLabels, HttpLabels, ServiceLabel, record, status_class};

/// The service a request is for, a bounded label.
pub(super) fn service_of(method: &Method, path: &str) -> &'static str {
    let path = path.trim_start_matches('/');
    match path {
        "-/stats" => return "stats",
        "-/health" | "-/ready" => return "probe",
        "metrics" => return "metrics",
        _ => {}
    }
    if path.starts_with("-/api/") {
        return "api";
    }
    if let Some((_, rest)) = path.split_once(".git/") {
        if let Some(lfs) = rest.strip_prefix("info/lfs/") {
            return if lfs.starts_with("objects/batch") {
                "lfs_batch"
            } else if lfs.starts_with("locks") {
                "lfs_locks"
            } else if lfs.starts_with("verify") {
                "lfs_verify"
            } else if !lfs.starts_with("tus/")
                && (*method == Method::GET || *method == Method::HEAD)
            {
                "lfs_download"
            } else {
                "lfs_upload"
            };
        }
        if rest.starts_with("raw/") {
            return "raw";
        }
    }
    if path.ends_with("/info/refs") {
        "info_refs"
    } else if path.ends_with("/git-upload-pack") {
        "upload_pack"
    } else if path.ends_with("/git-receive-pack") {
        "receive_pack"
    } else {
        "other"
    }
}

/// The git protocol version a request asks (`0`, `1`, `2`), or `none` off git routes.
pub(super) fn version_of(service: &str, headers: &HeaderMap) -> &'static str {
    if !matches!(service, "info_refs" | "upload_pack" | "receive_pack") {
        return "none";
    }
    let asked = |n: &str| {
        headers
            .get_all("git-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(':'))
            .any(|p| p.trim() == n)
    };
    if asked("version=2") {
        "2"
    } else if asked("version=1") {
        "1"
    } else {
        "0"
    }
}

/// A request being answered.
#[derive(Debug)]
pub(super) struct Observation {
    pub service: &'static str,
    pub version: &'static str,
    pub method: Method,
    pub path: String,
    pub started: Instant,
    pub access_on: bool,
    pub span: tracing::Span,
}

impl Observation {
    pub fn start(
        method: Method,
        path: String,
        headers: &HeaderMap,
        access_on: bool,
        span: tracing::Span,
    ) -> Self {
        let service = service_of(&method, &path);
        record(|m| {
            m.http_in_flight
                .get_or_create(&ServiceLabel { service })
                .inc();
        });
        Observation {
            service,
            version: version_of(service, headers),
            method,
            path,
            started: Instant::now(),
            access_on,
            span,
        }
    }

    /// `body` counted as request bytes.
    pub fn request_body(&self, body: Body) -> Body {
        Body::new(Counted {
            inner: body,
            service: self.service,
        })
    }

    /// `response`, whose body's end finishes the observation.
    pub fn response(self, response: Response, user: String) -> Response {
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = Body::new(Observed {
            inner: body,
            finish: Some(Finish {
                observation: self,
                status,
                user,
                bytes: 0,
                first_byte: None,
            }),
        });
        Response::from_parts(parts, body)
    }
}

/// A request body whose data is counted as its service's request bytes.
struct Counted {
    inner: Body,
    service: &'static str,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let service = self.service;
            record(|m| {
                m.http_request_bytes
                    .get_or_create(&ServiceLabel { service })
                    .inc_by(data.len() as u64)
            });
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What is measured when a response ends.
struct Finish {
    observation: Observation,
    status: u16,
    user: String,
    bytes: u64,
    first_byte: Option<Instant>,
}

impl Finish {
    fn done(self, complete: bool) {
        let o = &self.observation;
        let service = o.service;
        let class = status_class(self.status);
        let took = o.started.elapsed();
        record(|m| {
            m.http_in_flight
                .get_or_create(&ServiceLabel { service })
                .dec();
            m.http_requests
                .get_or_create(&HttpLabels {
                    service,
                    version: o.version,
                    class,
                })
                .inc();
            m.http_duration
                .get_or_create(&DurationLabels { service, class })
                .observe(took.as_secs_f64());
            m.http_response_bytes
                .get_or_create(&ServiceLabel { service })
                .inc_by(self.bytes);
            if let Some(at) = self.first_byte {
                m.http_first_byte
                    .get_or_create(&ServiceLabel { service })
                    .observe((at - o.started).as_secs_f64());
            }
        });
        let (method, path, status, user) = (&o.method, &o.path, self.status, &self.user);
        let ms = took.as_millis() as u64;
        let first_byte_ms = self
            .first_byte
            .map(|at| (at - o.started).as_millis() as u64);
        let phases = crate::telemetry::phases_of(&o.span);
        let _in = o.span.enter();
        // Paths and user names only: credentials never reach the log.
        match (o.access_on, complete) {
            (true, true) => tracing::info!(
                %method, path, status, user, ms, first_byte_ms, bytes = self.bytes, phases, "request"
            ),
            (false, true) => tracing::info!(
                %method, path, status, user, ms, first_byte_ms, bytes = self.bytes, phases,
                auth = "off", "request"
            ),
            (_, false) => tracing::info!(
                %method, path, status, user, ms, first_byte_ms, bytes = self.bytes, phases,
                "request cut: the response did not end"
            ),
        }
    }
}

/// A response body that finishes its request's observation when it ends or is dropped.
struct Observed {
    inner: Body,
    finish: Option<Finish>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(finish)) = (frame.data_ref(), self.finish.as_mut()) {
                    finish.bytes += data.len() as u64;
                    finish.first_byte.get_or_insert_with(Instant::now);
                }
            }
            Poll::Ready(None) => {
                if let Some(finish) = self.finish.take() {
                    finish.done(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(finish) = self.finish.take() {
                    finish.done(false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(finish) = self.finish.take() {
            // A body hyper never polled to its end: empty ones end without a poll.
            let complete = http_body::Body::is_end_stream(&self.inner);
            finish.done(complete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_named_by_route() {
        let get = Method::GET;
        let post = Method::POST;
        for (method, path, service) in [
            (&get, "/org/app.git/info/refs", "info_refs"),
            (&post, "/app/git-upload-pack", "upload_pack"),
            (&post, "/app.git/git-receive-pack", "receive_pack"),
            (&post, "/app.git/info/lfs/objects/batch", "lfs_batch"),
            (&get, "/app.git/info/lfs/objects/ab", "lfs_download"),
            (&post, "/app.git/info/lfs/locks/verify", "lfs_locks"),
            (&get, "/app.git/raw/main/README", "raw"),
            (&get, "/-/api/v1/repos", "api"),
            (&get, "/-/ready", "probe"),
            (&get, "/metrics", "metrics"),
            (&get, "/favicon.ico", "other"),
        ] {
            assert_eq!(service_of(method, path), service, "{path}");
        }
    }

    #[test]
    fn versions_come_from_the_git_protocol_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(version_of("upload_pack", &headers), "0");
        headers.insert("git-protocol", "version=2".parse().expect("value"));
        assert_eq!(version_of("upload_pack", &headers), "2");
        assert_eq!(version_of("api", &headers), "none");
    }
}
