//! A minimal HTTP/1.1 front for `git http-backend`, the reference Smart HTTP server the
//! conformance suite compares stowage with. Each connection is one request, answered
//! with `Connection: close`: the request body is read whole (chunked transfer coding
//! decoded), handed to `git http-backend` as a CGI script (RFC 3875), and its CGI
//! response turned back into an HTTP response.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// `git http-backend` serving every repository under `root`, on 127.0.0.1; stopped when
/// dropped. Connection threads wait for their CGI process, so none outlives a request.
#[derive(Debug)]
pub struct GitHttpBackend {
    /// `http://127.0.0.1:PORT`, as [`crate::common::Server::base`].
    pub base: String,
    /// Set when dropped; the accept loop checks it after each connection.
    stop: Arc<AtomicBool>,
    /// The accept loop, joined when dropped.
    accept: Option<JoinHandle<()>>,
}

impl GitHttpBackend {
    /// Serves the bare repositories under `root`; `home` is the HOME of the CGI
    /// processes (system and global git configuration are ignored).
    pub fn start(root: &Path, home: &Path) -> GitHttpBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let stop = Arc::new(AtomicBool::new(false));
        let cgi = Arc::new(Cgi {
            root: root.to_owned(),
            home: home.to_owned(),
        });
        let accept = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let cgi = cgi.clone();
                    std::thread::spawn(move || {
                        if let Err(err) = cgi.serve(stream) {
                            eprintln!("git http-backend bridge: {err}");
                        }
                    });
                }
            })
        };
        GitHttpBackend {
            base,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for GitHttpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// What every CGI process is given.
#[derive(Debug)]
struct Cgi {
    /// `GIT_PROJECT_ROOT`.
    root: PathBuf,
    /// `HOME`, so that no user configuration is read.
    home: PathBuf,
}

/// An HTTP request as far as CGI needs it.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: String,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Cgi {
    fn serve(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let request = read_request(&mut stream)?;
        let response = self.run(&request)?;
        stream.write_all(&response)?;
        stream.flush()?;
        let _ = stream.shutdown(Shutdown::Write);
        Ok(())
    }

    /// Runs `git http-backend` for `request`; returns the whole HTTP response.
    fn run(&self, request: &Request) -> std::io::Result<Vec<u8>> {
        let mut cmd = Command::new("git");
        cmd.arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REQUEST_METHOD", &request.method)
            .env("PATH_INFO", &request.path)
            .env("QUERY_STRING", &request.query)
            .env("REMOTE_ADDR", "127.0.0.1")
            // An authenticated user: http-backend then allows receive-pack.
            .env("REMOTE_USER", "conformance")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if request.method == "POST" {
            cmd.env("CONTENT_LENGTH", request.body.len().to_string());
        }
        for (header, var) in [
            ("content-type", "CONTENT_TYPE"),
            ("git-protocol", "GIT_PROTOCOL"),
            ("content-encoding", "HTTP_CONTENT_ENCODING"),
            ("accept", "HTTP_ACCEPT"),
        ] {
            if let Some(value) = request.header(header) {
                cmd.env(var, value);
            }
        }
        let mut child = cmd.spawn()?;
        // Written from another thread: http-backend may answer before reading it all.
        let mut stdin = child.stdin.take().expect("piped stdin");
        let body = request.body.clone();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let errors = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        let mut output = Vec::new();
        child
            .stdout
            .take()
            .expect("piped stdout")
            .read_to_end(&mut output)?;
        child.wait()?;
        let _ = writer.join();
        let errors = errors.join().unwrap_or_default();
        if !errors.is_empty() {
            eprintln!(
                "git http-backend ({} {}): {}",
                request.method,
                request.path,
                String::from_utf8_lossy(&errors).trim_end()
            );
        }
        Ok(http_response(&output))
    }
}

/// Reads one request: request line, headers, then the body by `Content-Length` or by
/// chunked transfer coding (git sends request bodies over 1 MiB chunked).
fn read_request(stream: &mut TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (path, query) = (path.to_owned(), query.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut request = Request {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
    };
    if request
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        request.body = read_chunked(&mut reader)?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| std::io::Error::other("bad Content-Length"))?;
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(request)
}

/// Decodes a chunked body (RFC 9112 section 7.1); chunk extensions and trailers are
/// read and ignored.
fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        line.clear();
        reader.read_line(&mut line)?; // the CRLF after the chunk
    }
}

/// The HTTP response for a CGI response: its `Status` header (200 when absent) becomes
/// the status line, other headers are passed on, the body gets a `Content-Length`.
fn http_response(cgi: &[u8]) -> Vec<u8> {
    let (head, body) = split_head(cgi);
    let mut status = "200 OK".to_owned();
    let mut headers = String::new();
    for line in String::from_utf8_lossy(head).lines() {
        let line = line.trim_end();
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_owned();
            }
            Some(_) => {
                headers.push_str(line);
                headers.push_str("\r\n");
            }
            None => {}
        }
    }
    let mut response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

/// Splits a CGI response at the empty line after its headers (LF or CRLF line ends).
fn split_head(cgi: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while let Some(end) = cgi[start..].iter().position(|b| *b == b'\n') {
        let line = &cgi[start..start + end];
        let next = start + end + 1;
        if line.is_empty() || line == b"\r" {
            return (&cgi[..start], &cgi[next..]);
        }
        start = next;
    }
    (cgi, &[])
}
