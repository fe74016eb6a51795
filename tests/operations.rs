//! Running the server: probes for load balancers, and a stop that lets open work end.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, Server};

on_every_backend!(probes_answer, a_stop_lets_a_push_finish);

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
    let mut server = Server::start_with(&backend, &["--inject-latency-ms", "300"]);
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
