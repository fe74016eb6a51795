//! HTTPS without a proxy: git pushes and clones over TLS with a certificate from a test
//! CA; a renewed certificate, from another CA, is served without a restart; plain HTTP
//! sent to the HTTPS port and a client that never says hello stop nothing. And
//! `--idle-timeout-secs`: a client that stops reading a clone is cut off, while
//! one that keeps reading is not.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, Server};

on_every_backend!(https_push_clone_and_a_renewed_certificate);

/// A test certificate authority.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA's certificate, written to `path` for git's `http.sslCAInfo`.
    fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issuer.pem()).expect("write CA");
        path.to_owned()
    }

    /// A server certificate for 127.0.0.1 and localhost: (chain PEM, key PEM).
    fn issue(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// Puts a certificate and key in place, each file replaced by a rename as renewal
/// tools do (the certificate first: for a moment the pair does not match).
fn install(cert: &Path, key: &Path, (cert_pem, key_pem): &(String, String)) {
    for (path, text) in [(cert, cert_pem), (key, key_pem)] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }
}

/// git trusting only the CA certificate at `ca`.
fn git_trusting(sb: &Sandbox, cwd: &Path, ca: &Path, args: &[&str]) -> Output {
    let trust = format!("http.sslCAInfo={}", ca.display());
    let mut all = vec!["-c", trust.as_str()];
    all.extend_from_slice(args);
    sb.git_output(cwd, &all)
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a raw TCP client gets from `addr` for `request`, and how long until the
/// connection ended (`None`: it did not end within 15 s).
fn raw_exchange(addr: &str, request: &[u8]) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let _ = tcp.write_all(request);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return (got, Some(started.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, None);
            }
            // Reset: ended too.
            Err(_) => return (got, Some(started.elapsed())),
        }
    }
}

fn https_push_clone_and_a_renewed_certificate(backend: Backend) {
    let files = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    let first = Ca::new("stowage test CA one");
    let first_ca = first.write(&files.path().join("ca-one.pem"));
    install(&cert, &key, &first.issue());
    let server = Server::start_with(
        &backend,
        &[
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
            "--header-timeout-secs",
            "3",
        ],
    );
    assert!(
        server.anon_base.starts_with("https://127.0.0.1:"),
        "{}",
        server.anon_base
    );
    // The first push the server suggests is an HTTPS one.
    assert!(
        server.banner.contains("git push https://admin:stw_"),
        "{}",
        server.banner
    );

    let sb = Sandbox::new();
    let root = sb.dir.path();
    let src = sb.init_repo("src");
    sb.commit(&src, "a.txt", "over TLS\n", "first");
    let url = server.url("secure.git");
    ok(
        git_trusting(&sb, &src, &first_ca, &["push", "-q", &url, "main"]),
        "push over https",
    );
    ok(
        git_trusting(&sb, root, &first_ca, &["clone", "-q", &url, "one"]),
        "clone over https",
    );
    assert_eq!(
        std::fs::read_to_string(sb.path("one/a.txt")).expect("cloned file"),
        "over TLS\n"
    );
    // Trusting nothing but the system's CAs, git refuses the test certificate.
    let out = sb.git_output(root, &["ls-remote", &url]);
    assert!(!out.status.success(), "an unknown CA was trusted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Plain HTTP to the HTTPS port gets no HTTP answer, and no hang; a client that
    // never starts a handshake is dropped after the header timeout.
    let addr = server.anon_base.trim_start_matches("https://").to_owned();
    let (answer, ended) = raw_exchange(&addr, b"GET /-/health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        ended.is_some_and(|t| t < Duration::from_secs(5)),
        "plain HTTP to the HTTPS port hung: {ended:?}"
    );
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (_, ended) = raw_exchange(&addr, b"");
    assert!(
        ended.is_some_and(|t| t < Duration::from_secs(10)),
        "a silent client was kept for {ended:?}"
    );

    // Renewal: a certificate from a second CA replaces the files while the server
    // runs; it is served within a few seconds, and the first CA's is not any more.
    let second = Ca::new("stowage test CA two");
    let second_ca = second.write(&files.path().join("ca-two.pem"));
    install(&cert, &key, &second.issue());
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let out = git_trusting(&sb, root, &second_ca, &["ls-remote", &url]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < until,
            "the renewed certificate is not served after 20 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    ok(
        git_trusting(&sb, root, &second_ca, &["clone", "-q", &url, "two"]),
        "clone with the renewed certificate",
    );
    assert_eq!(
        std::fs::read_to_string(sb.path("two/a.txt")).expect("cloned file"),
        "over TLS\n"
    );
    let out = git_trusting(&sb, root, &first_ca, &["clone", "-q", &url, "old"]);
    assert!(
        !out.status.success(),
        "the first CA's certificate is still served"
    );
    sb.commit(&src, "b.txt", "after renewal\n", "second");
    ok(
        git_trusting(&sb, &src, &second_ca, &["push", "-q", &url, "main"]),
        "push after renewal",
    );
    let (status, _) = curl_health(&server, &second_ca);
    assert_eq!(status, "200");

    // LFS links point back over HTTPS (the store's own links on S3).
    if let Backend::Fs(_) = backend {
        let oid = "a".repeat(64);
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&second_ca)
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/vnd.git-lfs+json",
            ])
            .args([
                "-H",
                "Accept: application/vnd.git-lfs+json",
                "--data-binary",
            ])
            .arg(format!(
                r#"{{"operation":"upload","objects":[{{"oid":"{oid}","size":3}}]}}"#
            ))
            .arg(format!("{url}/info/lfs/objects/batch"))
            .output()
            .expect("curl runs");
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let href = answer["objects"][0]["actions"]["upload"]["href"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(
            href.starts_with(&format!(
                "{}/secure.git/info/lfs/objects/",
                server.anon_base
            )),
            "{href}"
        );
    }
}

/// `curl --cacert ca https://.../-/health`: (status, stderr).
fn curl_health(server: &Server, ca: &Path) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg(server.anon_url("-/health"))
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A number from `GET /-/stats`, over HTTPS trusting `ca`.
fn stat(server: &Server, ca: &Path, name: &str) -> u64 {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg(server.url("-/stats"))
        .output()
        .expect("curl runs");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stats: {e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name} in {stats}"))
}

/// SIGTERM while a push over HTTPS is in the server: the push lands, and the server
/// exits 0 after it.
#[test]
fn a_stop_lets_an_https_push_finish() {
    let backend = Backend::fs();
    let files = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    let ca = Ca::new("stowage test CA");
    let ca_file = ca.write(&files.path().join("ca.pem"));
    install(&cert, &key, &ca.issue());
    // Every store request takes 300 ms: a push spends seconds in the server.
    let mut server = Server::start_with(
        &backend,
        &[
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
            "--inject-latency-ms",
            "300",
        ],
    );
    let sb = Sandbox::new();
    let work = sb.init_repo("work");
    sb.commit(&work, "a.txt", "one\n", "first");
    let url = server.url("drain.git");
    ok(
        git_trusting(&sb, &work, &ca_file, &["push", "-q", &url, "main"]),
        "first push",
    );
    let second = sb.commit(&work, "b.txt", "two\n", "second");
    let before = stat(&server, &ca_file, "store_requests_total");
    let trace = sb.path("packet-trace");
    let trust = format!("http.sslCAInfo={}", ca_file.display());
    let push = sb
        .git_cmd(&work)
        .env("GIT_TRACE_PACKET", &trace)
        .args(["-c", &trust, "push", "-q", &url, "main"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("git push starts");
    // In the server: git sent its command, and the server read the manifest for
    // info/refs and again for receive-pack.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let sent = std::fs::read_to_string(&trace)
            .is_ok_and(|t| t.contains(&format!("{second} refs/heads/main")));
        if sent && stat(&server, &ca_file, "store_requests_total") >= before + 2 {
            break;
        }
        assert!(Instant::now() < until, "the push never reached the server");
        std::thread::sleep(Duration::from_millis(100));
    }
    server.terminate();
    let out = push.wait_with_output().expect("git push ends");
    assert!(
        out.status.success(),
        "the push lands: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("the server exits after its drain");
    assert!(status.success(), "{status:?}");
    let again = Server::start(&backend);
    let listed = sb.git(&work, &["ls-remote", &again.url("drain.git")]);
    assert!(listed.contains(&second), "{listed}");
}

/// Bad certificate files stop the start with a message naming the file; one flag
/// without the other is refused.
#[test]
fn bad_certificate_files_stop_the_start() {
    let backend = Backend::fs();
    let files = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    let ca = Ca::new("stowage test CA");
    install(&cert, &key, &ca.issue());
    let serve = |args: &[&Path]| {
        let mut cmd = common::stowage();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-auth", "--store"])
            .arg(backend.url());
        for (flag, path) in ["--tls-cert", "--tls-key"].iter().zip(args) {
            cmd.arg(flag).arg(path);
        }
        let out = cmd.output().expect("stowage runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = files.path().join("missing.pem");
    let stderr = serve(&[&missing, &key]);
    assert!(
        stderr.contains("cannot serve HTTPS") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    // The key given as the certificate, the certificate as the key.
    let stderr = serve(&[&key, &cert]);
    assert!(stderr.contains("key.pem holds no certificate"), "{stderr}");
    let other = files.path().join("other-key.pem");
    std::fs::write(&other, ca.issue().1).expect("write");
    let stderr = serve(&[&cert, &other]);
    assert!(
        stderr.contains("other-key.pem does not belong to the certificate"),
        "{stderr}"
    );
    let stderr = serve(&[&cert]);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

/// A clone's pack, far larger than the socket buffers between server and client.
const BIG: usize = 40 << 20;

#[test]
fn a_client_that_stops_reading_a_clone_is_cut_off() {
    let backend = Backend::fs();
    let server = Server::start_with(&backend, &["--no-auth", "--idle-timeout-secs", "2"]);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    std::fs::write(src.join("big.bin"), common::random_bytes(BIG, 0x5eed)).expect("write");
    sb.git(&src, &["add", "-A"]);
    sb.git(&src, &["commit", "-q", "-m", "big"]);
    let head = sb.git(&src, &["rev-parse", "HEAD"]).trim().to_owned();
    sb.git(&src, &["push", "-q", &server.url("big.git"), "main"]);

    // A client with a small receive buffer asks for the whole pack.
    let addr: std::net::SocketAddr = server
        .anon_base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(64 << 10).expect("buffer");
    socket.connect(&addr.into()).expect("connect");
    let mut client: TcpStream = socket.into();
    client
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut body = common::pkt(format!("want {head} side-band-64k ofs-delta\n").as_bytes());
    body.extend_from_slice(b"0000");
    body.extend_from_slice(&common::pkt(b"done\n"));
    write!(
        client,
        "POST /big.git/git-upload-pack HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/x-git-upload-pack-request\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("head");
    client.write_all(&body).expect("body");

    // It reads slower than the server writes, for twice the idle timeout: not cut.
    let mut got = 0usize;
    let mut buf = vec![0u8; 128 << 10];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let n = client
            .read(&mut buf)
            .expect("a reader that keeps reading is served");
        assert!(n > 0, "cut off after {got} bytes while reading");
        got += n;
        std::thread::sleep(Duration::from_millis(20));
    }
    let while_reading = got;

    // Then it stops reading, but stays connected, for longer than the idle timeout.
    std::thread::sleep(Duration::from_secs(6));
    let resumed = Instant::now();
    let ended = loop {
        match client.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    assert!(ended, "the connection was still open after {got} bytes");
    // After resuming it got only what sat in the socket buffers: the server had
    // closed the connection, and the rest of the pack never came.
    let after = got - while_reading;
    assert!(
        got < BIG && after < 8 << 20,
        "{got} bytes of a {BIG}-byte pack arrived, {after} of them after the pause"
    );
    assert!(resumed.elapsed() < Duration::from_secs(5));

    // Others are served all along.
    sb.git(
        sb.dir.path(),
        &["clone", "-q", &server.url("big.git"), "whole"],
    );
    assert_eq!(
        std::fs::read(sb.path("whole/big.bin"))
            .expect("cloned")
            .len(),
        BIG
    );
}
