//! Running the server: probes for load balancers, and a stop that lets open work end.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, Server};

on_every_backend!(
    probes_answer,
    a_stop_lets_a_push_finish,
    metrics_follow_a_clone_and_a_push
);

/// `--log-format json`: one JSON object per line, request lines with their fields, no
/// colour codes and no secret; text lines carry no colour codes off a terminal either.
#[test]
fn logs_are_json_or_plain_text() {
    for format in ["json", "text"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("stderr");
        let mut child = common::stowage()
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", format])
            .arg("--store")
            .arg(format!("file://{}", dir.path().join("store").display()))
            .env("RUST_LOG", "stowage=info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("stowage starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let mut token = String::new();
        let base = loop {
            let line = lines.next().expect("a line").expect("utf-8");
            if line.trim().starts_with("stw_") {
                token = line.trim().to_owned();
            }
            if let Some(base) = line.strip_prefix("listening on ") {
                break base.to_owned();
            }
        };
        let (status, _) = common::get(&format!("{base}/-/health"));
        assert_eq!(status, 200);
        let (status, _) = common::get_with(
            &format!("{base}/nothing.git/info/refs?service=git-upload-pack"),
            &[&format!("Authorization: Bearer {token}")],
        );
        assert_eq!(status, 404);
        std::thread::sleep(Duration::from_millis(200));
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(!text.contains('\x1b'), "{format}: colour codes in {text}");
        assert!(
            !token.is_empty() && !text.contains(&token),
            "{format}: {text}"
        );
        assert!(text.contains("/-/health"), "{format}: {text}");
        if format == "json" {
            let requests: Vec<serde_json::Value> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .filter(|v: &serde_json::Value| v["fields"]["message"] == "request")
                .collect();
            let health = requests
                .iter()
                .find(|v| v["fields"]["path"] == "/-/health")
                .unwrap_or_else(|| panic!("no request line for /-/health in {text}"));
            assert_eq!(health["fields"]["status"], 200, "{health}");
            assert_eq!(health["level"], "INFO", "{health}");
            assert!(
                requests.iter().any(|v| v["fields"]["status"] == 404),
                "{text}"
            );
        }
    }
}

fn anon_get(server: &Server, path: &str) -> (u16, String) {
    let (status, body) = common::get(&format!("{}/{path}", server.anon_base));
    (status, String::from_utf8_lossy(&body).trim().to_owned())
}

/// `/-/health` and `/-/ready` answer anyone; ready follows the store.
fn probes_answer(backend: Backend) {
    let server = Server::start(&backend);
    assert_eq!(anon_get(&server, "-/health"), (200, "ok".into()));
    assert_eq!(anon_get(&server, "-/ready"), (200, "ready".into()));
    let (status, _) = common::post(&format!("{}/-/ready", server.anon_base), "text/plain", b"");
    assert_eq!(status, 405);

    // A store that fails (a filesystem store whose directory is gone, a file in its
    // place): not ready, within the second its answer is kept; ready again after.
    if let Backend::Fs(dir) = &backend {
        let root = dir.path();
        let aside = root.with_extension("aside");
        std::fs::rename(root, &aside).expect("move the store away");
        std::fs::write(root, b"not a directory").expect("a file in its place");
        let failing = wait_for(|| anon_get(&server, "-/ready").0 == 503);
        std::fs::remove_file(root).expect("remove the file");
        std::fs::rename(&aside, root).expect("put the store back");
        assert!(failing, "ready turns 503 while the store fails");
        assert_eq!(
            anon_get(&server, "-/health"),
            (200, "ok".into()),
            "the process still serves"
        );
        assert!(
            wait_for(|| anon_get(&server, "-/ready").0 == 200),
            "ready again"
        );
    }
}

fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// SIGTERM while a push is in the server: no new connection is taken, the push ends
/// well, the process exits 0, and the push is there for the next server.
fn a_stop_lets_a_push_finish(backend: Backend) {
    // Every store request takes 300 ms: a push spends seconds in the server.
    let mut server = Server::start_with(
        &backend,
        &[
            "--inject-latency-ms",
            "300",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let probe = format!("{}/-/ready", metrics_base(&server));
    let sb = Sandbox::new();
    let work = sb.init_repo("work");
    let first = sb.commit(&work, "a.txt", "one\n", "first");
    let url = server.url("drain.git");
    sb.git(&work, &["push", "-q", &url, "main"]);
    let second = sb.commit(&work, "b.txt", "two\n", "second");

    let before = common::stat(&server, "store_requests_total");
    let trace = sb.path("packet-trace");
    let push = sb
        .git_cmd(&work)
        .env("GIT_TRACE_PACKET", &trace)
        .args(["push", "-q", &url, "main"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("git push starts");
    // The push is in the server once git has sent its command and the server has read
    // the manifest for info/refs and again for receive-pack (then it stores a pack and
    // an index and swaps the manifest, 300 ms each).
    assert!(
        wait_for(|| {
            let sent = std::fs::read_to_string(&trace)
                .is_ok_and(|t| t.contains(&format!("{second} refs/heads/main")));
            sent && common::stat(&server, "store_requests_total") >= before + 2
        }),
        "the push reaches the server"
    );
    server.terminate();
    // The metrics listener stays up through the drain, where a prober sees it.
    assert!(
        wait_for(|| common::get(&probe).0 == 503),
        "ready answers 503 while the server drains"
    );
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
    let refused = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("{}/-/health", server.anon_base))
        .output()
        .expect("curl runs");
    assert!(!refused.status.success(), "no connection is taken any more");

    let again = Server::start(&backend);
    let listed = sb.git(&work, &["ls-remote", &again.url("drain.git")]);
    assert!(listed.contains(&second), "{listed}");
    assert!(!listed.contains(&first), "{listed}");
}

/// A push whose report takes long after its pack was read (every store request takes
/// 1.5 s here: checking, storing the pack and swapping the manifest take 6) gets
/// keep-alive packets on its side-band until the report, as from git's receive-pack,
/// and git takes them.
#[test]
fn a_slow_push_gets_keepalives() {
    let backend = Backend::fs();
    let server = Server::start_with(&backend, &["--no-auth", "--inject-latency-ms", "1500"]);
    let sb = Sandbox::new();
    let work = sb.init_repo("work");
    let first = sb.commit(&work, "a.txt", "one\n", "first");
    let url = server.url("slow.git");
    sb.git(&work, &["push", "-q", &url, "main"]);
    let second = sb.commit(&work, "b.txt", "two\n", "second");
    let objects = sb.git(
        &work,
        &["rev-list", "--objects", &format!("{first}..{second}")],
    );
    let ids: Vec<&str> = objects
        .lines()
        .filter_map(|l| l.split(' ').next())
        .collect();
    let pack = common::pack_of(&sb, &work, &ids);
    let body = common::push_body(&first, &second, "refs/heads/main", &pack);
    let (status, answer) = common::post(
        &server.url("slow.git/git-receive-pack"),
        "application/x-git-receive-pack-request",
        &body,
    );
    assert_eq!(status, 200);
    assert!(
        answer.starts_with(b"0005\x01"),
        "keep-alives first: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("unpack ok") && text.contains("ok refs/heads/main"),
        "{text}"
    );
    let third = sb.commit(&work, "c.txt", "three\n", "third");
    sb.git(&work, &["push", "-q", &url, "main"]);
    let listed = sb.git(&work, &["ls-remote", &url]);
    assert!(listed.contains(&third), "{listed}");
}

/// The `--metrics-listen` base URL a server printed.
fn metrics_base(server: &Server) -> String {
    server
        .banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("metrics on "))
        .and_then(|url| url.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {}", server.banner))
        .to_owned()
}

/// The server's metrics, parsed as the Prometheus text format.
fn scrape(url: &str) -> prometheus_parse::Scrape {
    let (status, body) = common::get(url);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8(body).expect("utf-8");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("metrics parse")
}

/// The sum of the samples of `name` whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => {
                buckets.last().map_or(0.0, |b| b.count)
            }
            _ => 0.0,
        })
        .sum()
}

/// `/metrics` parses, and its counters move by what a push and a clone did; anonymous
/// callers may not read it on the main listener.
fn metrics_follow_a_clone_and_a_push(backend: Backend) {
    let server = Server::start(&backend);
    let metrics = server.url("metrics");
    let (status, _) = common::get(&server.anon_url("metrics"));
    assert_eq!(
        status, 401,
        "the main listener's /metrics needs credentials"
    );
    let sb = Sandbox::new();
    let work = sb.init_repo("work");
    sb.commit(&work, "a.txt", "one\n", "first");
    let url = server.url("metrics.git");
    let before = scrape(&metrics);
    sb.git(&work, &["push", "-q", &url, "main"]);
    let pushed = scrape(&metrics);
    let push = [("operation", "push"), ("result", "ok")];
    assert_eq!(
        sample(&pushed, "stowage_git_operations_total", &push)
            - sample(&before, "stowage_git_operations_total", &push),
        1.0
    );
    let updates = [("result", "ok")];
    assert_eq!(
        sample(&pushed, "stowage_git_ref_updates_total", &updates)
            - sample(&before, "stowage_git_ref_updates_total", &updates),
        1.0
    );
    let receive = [("service", "receive_pack"), ("class", "2xx")];
    assert_eq!(
        sample(&pushed, "stowage_http_requests_total", &receive)
            - sample(&before, "stowage_http_requests_total", &receive),
        1.0
    );
    assert!(
        sample(
            &pushed,
            "stowage_http_request_bytes_total",
            &[("service", "receive_pack")]
        ) > sample(
            &before,
            "stowage_http_request_bytes_total",
            &[("service", "receive_pack")]
        )
    );
    let backend_label = match backend {
        Backend::Fs(_) => "fs",
        _ => "s3",
    };
    let puts = [
        ("backend", backend_label),
        ("operation", "put"),
        ("outcome", "ok"),
    ];
    assert!(
        sample(
            &pushed,
            "stowage_store_request_duration_seconds_count",
            &puts
        ) > sample(
            &before,
            "stowage_store_request_duration_seconds_count",
            &puts
        ),
        "the manifest write is timed"
    );

    let copy = sb.path("copy");
    sb.git(
        sb.dir.path(),
        &["clone", "-q", &url, copy.to_str().expect("utf-8")],
    );
    let cloned = scrape(&metrics);
    let clone = [("operation", "clone"), ("result", "ok")];
    assert_eq!(
        sample(&cloned, "stowage_git_operations_total", &clone)
            - sample(&pushed, "stowage_git_operations_total", &clone),
        1.0
    );
    let fetch = [("service", "upload_pack"), ("class", "2xx")];
    assert!(
        sample(&cloned, "stowage_http_requests_total", &fetch)
            > sample(&pushed, "stowage_http_requests_total", &fetch)
    );
    let first_byte = [("service", "upload_pack")];
    assert!(
        sample(
            &cloned,
            "stowage_http_time_to_first_byte_seconds_count",
            &first_byte
        ) > sample(
            &pushed,
            "stowage_http_time_to_first_byte_seconds_count",
            &first_byte
        )
    );
    assert!(
        sample(&cloned, "stowage_http_response_bytes_total", &first_byte)
            > sample(&pushed, "stowage_http_response_bytes_total", &first_byte)
    );
    // The state `/-/stats` shows is in the same registry: read between two scrapes,
    // its count lies between theirs.
    let logical = |s: &prometheus_parse::Scrape| {
        sample(s, "stowage_store_logical_requests_total", &[]) as u64
    };
    let stats = common::stat(&server, "store_requests_total");
    let after = scrape(&metrics);
    assert!(
        logical(&cloned) <= stats && stats <= logical(&after) && logical(&cloned) > 0,
        "{} <= {stats} <= {}",
        logical(&cloned),
        logical(&after)
    );
    assert!(
        sample(
            &cloned,
            "stowage_cache_lookups_total",
            &[("cache", "index")]
        ) > 0.0
    );
    assert_eq!(
        sample(&cloned, "stowage_admission_in_flight", &[]),
        0.0,
        "no pack request is left running"
    );
}

/// With two pack requests allowed per repository and no queue, a third concurrent
/// clone is refused with 429, Retry-After and a reason git shows; the first two end
/// whole, and the repository serves again after.
#[test]
fn a_busy_repository_refuses_a_third_clone() {
    use std::io::{Read, Write};
    let backend = Backend::fs();
    let server = Server::start_with(
        &backend,
        &[
            "--max-concurrent-per-repo",
            "2",
            "--max-queue-per-repo",
            "0",
        ],
    );
    let sb = Sandbox::new();
    let work = sb.init_repo("work");
    // Far more than the socket buffers hold: a client that does not read keeps its
    // request running.
    std::fs::write(work.join("data.bin"), common::random_bytes(24 << 20, 7)).expect("write");
    sb.git(&work, &["add", "data.bin"]);
    let tip = sb.commit(&work, "a.txt", "one\n", "first");
    let url = server.url("busy.git");
    sb.git(&work, &["push", "-q", &url, "main"]);

    let address = server
        .anon_base
        .strip_prefix("http://")
        .expect("http")
        .to_owned();
    let token = common::admin_token(&backend);
    let auth = common::base64_basic(&format!("admin:{token}"));
    let mut body = Vec::new();
    body.extend(common::pkt(b"command=fetch\n"));
    body.extend(b"0001");
    body.extend(common::pkt(format!("want {tip}\n").as_bytes()));
    body.extend(common::pkt(b"done\n"));
    body.extend(b"0000");
    let slow: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut tcp = std::net::TcpStream::connect(&address).expect("connect");
            let head = format!(
                "POST /busy.git/git-upload-pack HTTP/1.1\r\nHost: {address}\r\n\
                 Authorization: Basic {auth}\r\nGit-Protocol: version=2\r\n\
                 Content-Type: application/x-git-upload-pack-request\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            tcp.write_all(head.as_bytes()).expect("send");
            tcp.write_all(&body).expect("send");
            tcp
        })
        .collect();
    let metrics = server.url("metrics");
    assert!(
        wait_for(|| sample(&scrape(&metrics), "stowage_admission_in_flight", &[]) == 2.0),
        "two clones are running"
    );

    let copy = sb.path("third");
    let third = sb.git_output(
        sb.dir.path(),
        &["clone", "-q", &url, copy.to_str().expect("utf-8")],
    );
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success(), "the third clone is refused");
    assert!(
        stderr.contains("too many requests for this repository are running"),
        "git shows the reason: {stderr}"
    );
    assert!(stderr.contains("429"), "{stderr}");
    let (status, headers) = head_of(
        &server.url("busy.git/info/refs?service=git-upload-pack"),
        &[],
    );
    assert_eq!(status, 429);
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: "),
        "{headers}"
    );
    // A Git LFS upload through the server takes a place too: 429 as git-lfs expects
    // it (a JSON message, and Retry-After, which it waits out before trying again).
    let put = [
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        "abc",
    ];
    let object = format!("busy.git/info/lfs/objects/{}", "a".repeat(64));
    let (status, headers) = head_of(&server.url(&object), &put);
    assert_eq!(status, 429, "{headers}");
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: "),
        "{headers}"
    );
    let refused = scrape(&metrics);
    let refusals = |reason| {
        sample(
            &refused,
            "stowage_admission_refused_total",
            &[("reason", reason)],
        )
    };
    assert!(refusals("repo_busy") >= 2.0, "info/refs of the clones");
    assert!(refusals("repo_queue") >= 1.0, "the upload");

    for mut tcp in slow {
        tcp.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).expect("the clone's answer");
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &answer[..40.min(answer.len())]
        );
        assert!(
            answer.len() > 24 << 20,
            "the whole pack: {} bytes",
            answer.len()
        );
        assert!(
            answer.windows(8).any(|w| w == b"packfile"),
            "a packfile section"
        );
    }
    assert!(
        wait_for(|| sample(&scrape(&metrics), "stowage_admission_in_flight", &[]) == 0.0),
        "their places are free again"
    );
    sb.git(
        sb.dir.path(),
        &["clone", "-q", &url, copy.to_str().expect("utf-8")],
    );
}

/// Status and headers of a request to `url` (a GET, unless `args` say otherwise).
fn head_of(url: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (headers, status) = text.rsplit_once('\n').expect("status");
    (
        status.trim().parse().expect("status code"),
        headers.to_owned(),
    )
}
