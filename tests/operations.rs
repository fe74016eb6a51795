//! Running the server: probes for load balancers, and a stop that lets open work end.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, Server};

on_every_backend!(probes_answer, a_stop_lets_a_push_finish);

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
