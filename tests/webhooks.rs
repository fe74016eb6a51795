//! Webhooks, driven by the real git client against a receiver on 127.0.0.1: signed
//! push events per ref, retries under one delivery id, delivery by a second instance
//! after the first crashed, one event for the one of two racing pushes that landed, and
//! private destinations refused.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, Server, cli, cli_output};
use hmac::Mac;

on_every_backend!(
    deliveries_are_signed_and_say_what_each_ref_did,
    failed_deliveries_are_retried_under_one_id,
    another_instance_delivers_what_a_crashed_one_recorded,
    of_two_racing_pushes_only_the_one_that_landed_is_told,
    private_destinations_are_refused_without_the_flag,
    a_push_whose_event_cannot_be_stored_does_not_land
);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{name} in {:?}", self.headers))
    }
}

/// A webhook receiver: records each request, answers with the scripted statuses in
/// turn (200 once they run out).
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(script: &[u16]) -> Receiver {
        Self::start_slow(script, Duration::ZERO)
    }

    /// A receiver that takes `delay` to answer each request.
    fn start_slow(script: &[u16], delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.to_vec()));
        let (seen, statuses) = (got.clone(), script.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (seen, statuses) = (seen.clone(), statuses.clone());
                std::thread::spawn(move || serve(stream, &seen, &statuses, delay));
            }
        });
        Receiver { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits until `n` requests came (panics after `within`).
    fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let until = Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < until,
                "{} of {n} deliveries came: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(
    stream: std::net::TcpStream,
    seen: &Mutex<Vec<Received>>,
    statuses: &Mutex<Vec<u16>>,
    delay: Duration,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().expect("lock").push(Received {
            headers,
            body,
            at: Instant::now(),
        });
        let status = {
            let mut statuses = statuses.lock().expect("lock");
            if statuses.is_empty() {
                200
            } else {
                statuses.remove(0)
            }
        };
        std::thread::sleep(delay);
        let answer = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: 8\r\nContent-Type: text/plain\r\n\r\nanswered"
        );
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

const SECRET: &str = "It's a Secret to Everybody";
const NULL: &str = "0000000000000000000000000000000000000000";

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Adds a webhook by the API, as a repository admin would; returns its id.
fn add_hook_by_api(server: &Server, repo: &str, url: &str, secret: Option<&str>) -> (u16, String) {
    let body = serde_json::json!({ "url": url, "secret": secret, "events": ["push"] });
    let (status, answer) = common::post(
        &server.url(&format!("-/api/v1/repos/{repo}/hooks")),
        "application/json",
        body.to_string().as_bytes(),
    );
    (status, String::from_utf8_lossy(&answer).into_owned())
}

/// The deliveries `stowage hook deliveries` lists: (id, ref, status, attempts).
fn deliveries(backend: &Backend, repo: &str) -> Vec<Vec<String>> {
    cli(backend, &["hook", "deliveries", repo])
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// A repository pushed through `server`, with a webhook (signed with [`SECRET`]) to
/// `receiver` added by the API: each later push is told.
fn deliveries_are_signed_and_say_what_each_ref_did(backend: Backend) {
    let sb = Sandbox::new();
    let receiver = Receiver::start(&[]);
    let server = Server::start_with(&backend, &["--webhook-allow-private"]);
    let url = server.url("told.git");
    let work = sb.init_repo("work");
    let first = sb.commit(&work, "a.txt", "one\n", "first");
    sb.git(&work, &["push", "-q", &url, "main"]);
    let (status, answer) = add_hook_by_api(&server, "told", &receiver.url(), Some(SECRET));
    assert_eq!(status, 201, "{answer}");
    assert!(
        !answer.contains(SECRET),
        "the API never shows a secret: {answer}"
    );

    // A fast-forward of main and a new branch, in one push: one delivery per ref.
    let second = sb.commit(&work, "b.txt", "two\n", "second");
    sb.git(&work, &["branch", "topic"]);
    sb.git(&work, &["push", "-q", &url, "main", "topic"]);
    let got = receiver.wait_for(2, Duration::from_secs(20));
    let by_ref = |got: &[Received], name: &str| -> Received {
        got.iter()
            .find(|r| r.json()["ref"] == name)
            .unwrap_or_else(|| panic!("a delivery for {name}"))
            .clone()
    };
    let main = by_ref(&got, "refs/heads/main");
    let topic = by_ref(&got, "refs/heads/topic");
    for r in [&main, &topic] {
        assert_eq!(r.header("x-stowage-event"), "push");
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-hub-signature-256"), hmac_hex(SECRET, &r.body));
    }
    assert_ne!(
        main.header("x-stowage-delivery"),
        topic.header("x-stowage-delivery")
    );
    let m = main.json();
    assert_eq!(m["before"], first.as_str());
    assert_eq!(m["after"], second.as_str());
    assert_eq!(
        (&m["created"], &m["deleted"], &m["forced"]),
        (&false.into(), &false.into(), &false.into())
    );
    assert_eq!(m["commits"].as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m["commits"][0]["message"], "second\n");
    assert_eq!(m["commits"][0]["added"], serde_json::json!(["b.txt"]));
    assert_eq!(m["head_commit"]["id"], second.as_str());
    assert_eq!(m["repository"]["full_name"], "told");
    assert!(
        m["repository"]["clone_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/told.git")),
        "{m}"
    );
    assert_eq!(m["pusher"]["name"], "admin");
    let t = topic.json();
    assert_eq!((&t["before"], &t["created"]), (&NULL.into(), &true.into()));
    assert_eq!(t["head_commit"]["id"], second.as_str(), "{t}");

    // A deletion, then a force-push.
    sb.git(&work, &["push", "-q", &url, ":topic"]);
    let got = receiver.wait_for(3, Duration::from_secs(20));
    let deleted = got[2].json();
    assert_eq!(deleted["ref"], "refs/heads/topic");
    assert_eq!(
        (&deleted["deleted"], &deleted["after"]),
        (&true.into(), &NULL.into())
    );
    sb.git(&work, &["reset", "-q", "--hard", &first]);
    let rewritten = sb.commit(&work, "c.txt", "three\n", "rewritten");
    sb.git(&work, &["push", "-q", "--force", &url, "main"]);
    let got = receiver.wait_for(4, Duration::from_secs(20));
    let forced = got[3].json();
    assert_eq!(forced["forced"], true, "{forced}");
    assert_eq!(forced["after"], rewritten.as_str());
    assert_eq!(forced["before"], second.as_str());

    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.received().len(), 4, "each once");
    let listed = deliveries(&backend, "told");
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(listed.iter().all(|d| d[3] == "delivered"), "{listed:?}");
}

/// A receiver that answers 500, 500, then 200 gets three attempts of one delivery,
/// with the same id; a redelivery asked for later comes under that id again.
fn failed_deliveries_are_retried_under_one_id(backend: Backend) {
    let sb = Sandbox::new();
    let receiver = Receiver::start(&[500, 500]);
    cli(&backend, &["repo", "create", "retried"]);
    let id = cli(
        &backend,
        &[
            "hook",
            "add",
            "retried",
            &receiver.url(),
            "--secret",
            SECRET,
        ],
    );
    let id = id.trim();
    let listed = cli(&backend, &["hook", "list", "retried"]);
    assert!(
        listed.contains(id) && listed.contains("signed") && !listed.contains(SECRET),
        "{listed}"
    );
    let server = Server::start_with(
        &backend,
        &["--webhook-allow-private", "--webhook-sweep-secs", "1"],
    );
    let work = sb.init_repo("work");
    sb.commit(&work, "a.txt", "one\n", "first");
    sb.git(&work, &["push", "-q", &server.url("retried.git"), "main"]);
    let got = receiver.wait_for(3, Duration::from_secs(30));
    let ids: Vec<&str> = got.iter().map(|r| r.header("x-stowage-delivery")).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one id: {ids:?}");
    assert!(got.iter().all(|r| r.body == got[0].body), "the same body");
    assert!(
        got[2].at - got[1].at > got[1].at - got[0].at - Duration::from_millis(300),
        "backoff grows"
    );
    let delivery = ids[0].to_owned();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = deliveries(&backend, "retried");
        if listed.len() == 1 && listed[0][3] == "delivered" {
            assert_eq!(listed[0][4], "3 attempts", "{listed:?}");
            break;
        }
        assert!(Instant::now() < until, "{listed:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let full: serde_json::Value = serde_json::from_str(&cli(
        &backend,
        &["hook", "deliveries", "retried", &delivery],
    ))
    .expect("a delivery as JSON");
    let statuses: Vec<u64> = full["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(full["attempts"][0]["response"], "answered");

    cli(&backend, &["hook", "redeliver", "retried", &delivery]);
    let got = receiver.wait_for(4, Duration::from_secs(20));
    assert_eq!(got[3].header("x-stowage-delivery"), delivery);
    assert_eq!(got[3].body, got[0].body);
    drop(server);
}

/// A server that crashes as it starts to deliver (after the push was acknowledged)
/// loses nothing: a second instance on the store delivers the event.
fn another_instance_delivers_what_a_crashed_one_recorded(backend: Backend) {
    let sb = Sandbox::new();
    let receiver = Receiver::start(&[]);
    cli(&backend, &["repo", "create", "crashed"]);
    cli(&backend, &["hook", "add", "crashed", &receiver.url()]);
    let mut first = Server::start_with(
        &backend,
        &[
            "--webhook-allow-private",
            "--inject-faults",
            "op=put,key=*.git/webhooks/*,nth=1,error=crash",
        ],
    );
    let work = sb.init_repo("work");
    let pushed = sb.commit(&work, "a.txt", "one\n", "first");
    let out = sb.git_output(&work, &["push", &first.url("crashed.git"), "main"]);
    assert!(
        out.status.success(),
        "the push was acknowledged: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        first.wait_exit(Duration::from_secs(20)).is_some(),
        "the first server crashed"
    );
    assert!(receiver.received().is_empty());
    let second = Server::start_with(
        &backend,
        &["--webhook-allow-private", "--webhook-sweep-secs", "1"],
    );
    let got = receiver.wait_for(1, Duration::from_secs(30));
    assert_eq!(got[0].json()["after"], pushed.as_str());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.received().len(), 1, "delivered once");
    drop(second);
}

/// Two pushes to one branch through two instances at once: one lands, and only it is
/// told, once, though both instances sweep the queue every second while the receiver
/// takes longer than that to answer (a delivery being sent is claimed).
fn of_two_racing_pushes_only_the_one_that_landed_is_told(backend: Backend) {
    let sb = Sandbox::new();
    let receiver = Receiver::start_slow(&[], Duration::from_millis(2500));
    let work = sb.init_repo("work");
    sb.commit(&work, "a.txt", "one\n", "first");
    let flags = ["--webhook-allow-private", "--webhook-sweep-secs", "1"];
    let a = Server::start_with(&backend, &flags);
    sb.git(&work, &["push", "-q", &a.url("raced.git"), "main"]);
    cli(&backend, &["hook", "add", "raced", &receiver.url()]);
    let b = Server::start_with(&backend, &flags);
    // Both instances see the hook (their access state is at most 4 s old).
    std::thread::sleep(Duration::from_millis(4500));
    let left = sb.path("left");
    let right = sb.path("right");
    for dir in [&left, &right] {
        sb.git(
            &work,
            &[
                "clone",
                "-q",
                &a.url("raced.git"),
                dir.to_str().expect("utf-8"),
            ],
        );
    }
    let left_id = sb.commit(&left, "l.txt", "left\n", "left");
    let right_id = sb.commit(&right, "r.txt", "right\n", "right");
    let pushes: Vec<_> = [(&left, a.url("raced.git")), (&right, b.url("raced.git"))]
        .into_iter()
        .map(|(dir, url)| {
            sb.git_cmd(dir)
                .args(["push", "-q", &url, "main"])
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("git push")
        })
        .collect();
    let landed: Vec<bool> = pushes
        .into_iter()
        .map(|mut p| p.wait().expect("push").success())
        .collect();
    assert_eq!(
        landed.iter().filter(|l| **l).count(),
        1,
        "one lands: {landed:?}"
    );
    let winner = if landed[0] { &left_id } else { &right_id };
    receiver.wait_for(1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(receiver.received().len(), 1, "exactly one event, sent once");
    assert_eq!(receiver.received()[0].json()["after"], winner.as_str());
}

/// Without --webhook-allow-private: the API refuses a hook on 127.0.0.1, and a hook
/// on a private address added by the operator's CLI is never sent to.
fn private_destinations_are_refused_without_the_flag(backend: Backend) {
    let sb = Sandbox::new();
    let receiver = Receiver::start(&[]);
    cli(&backend, &["repo", "create", "guarded"]);
    let local = format!("http://localhost:{}/hook", receiver.port);
    cli(&backend, &["hook", "add", "guarded", &local]);
    let server = Server::start(&backend);
    let (status, answer) = add_hook_by_api(&server, "guarded", &receiver.url(), None);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("not a public address"), "{answer}");
    let (status, answer) = add_hook_by_api(
        &server,
        "guarded",
        "http://169.254.169.254/latest/meta-data/",
        None,
    );
    assert_eq!(status, 400, "{answer}");

    let work = sb.init_repo("work");
    sb.commit(&work, "a.txt", "one\n", "first");
    sb.git(&work, &["push", "-q", &server.url("guarded.git"), "main"]);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = deliveries(&backend, "guarded");
        if listed.len() == 1 && listed[0][3] == "failed" {
            assert!(listed[0][5].contains("not a public address"), "{listed:?}");
            break;
        }
        assert!(Instant::now() < until, "{listed:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
    let out = cli_output(&backend, &["hook", "add", "guarded", "ftp://example.com/"]);
    assert!(!out.status.success());
}

/// A push whose event cannot be written fails whole: no ref moves and nobody is told;
/// the next push lands and is told.
fn a_push_whose_event_cannot_be_stored_does_not_land(backend: Backend) {
    let sb = Sandbox::new();
    let receiver = Receiver::start(&[]);
    cli(&backend, &["repo", "create", "faulty"]);
    cli(&backend, &["hook", "add", "faulty", &receiver.url()]);
    let server = Server::start_with(
        &backend,
        &[
            "--webhook-allow-private",
            "--inject-faults",
            "op=put,key=.webhooks/queue/*,nth=1,error=permanent",
        ],
    );
    let url = server.url("faulty.git");
    let work = sb.init_repo("work");
    sb.commit(&work, "a.txt", "one\n", "first");
    let out = sb.git_output(&work, &["push", &url, "main"]);
    assert!(!out.status.success(), "the push failed");
    assert!(
        sb.git(&work, &["ls-remote", &url]).trim().is_empty(),
        "no ref moved"
    );
    let second = sb.commit(&work, "b.txt", "two\n", "second");
    sb.git(&work, &["push", "-q", &url, "main"]);
    let got = receiver.wait_for(1, Duration::from_secs(20));
    assert_eq!(got[0].json()["after"], second.as_str());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        receiver.received().len(),
        1,
        "only the push that landed is told"
    );
}
