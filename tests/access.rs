//! Access control end to end, with the real git client on the filesystem and S3:
//! tokens, roles, public and private repositories, protected refs, credential helpers,
//! the management CLI and API, and several instances on one store.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, Server, admin_token, cli, cli_output, stat, stowage, user};

on_every_backend!(
    private_repositories_need_valid_tokens,
    public_repositories_are_read_anonymously,
    protected_refs_refuse_force_pushes_and_deletions,
    credential_helpers_store_and_forget_tokens,
    a_push_larger_than_the_post_buffer_authenticates_first,
    private_and_missing_look_the_same,
    a_revocation_reaches_another_instance,
    parallel_token_creation_loses_nothing,
    hostile_authorization_headers,
    the_management_api,
    creating_by_push_needs_write_on_a_prefix,
    the_first_start_and_no_auth,
    a_trusted_proxy_names_the_user,
    checking_access_costs_no_store_requests,
);

/// A repository with one commit on main, pushed by the admin to `name`.
fn seeded(sb: &Sandbox, server: &Server, name: &str) -> PathBuf {
    let src = sb.init_repo(&format!("src-{}", name.replace('/', "-")));
    sb.commit(&src, "a.txt", "a\n", "first");
    sb.git(&src, &["push", "-q", &server.url(name), "main"]);
    src
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns how long it took.
fn until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// An HTTP answer: status, headers (lower-cased names, without `date`), body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Runs curl with `args` and parses what it got.
fn curl(args: &[&std::ffi::OsStr]) -> Answer {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers_file = dir.path().join("headers");
    let body_file = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", "--path-as-is", "-D"])
        .arg(&headers_file)
        .arg("-o")
        .arg(&body_file)
        .args(args)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl: {}", stderr_of(&out));
    let raw = std::fs::read_to_string(&headers_file).expect("headers");
    let mut lines = raw.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .filter(|(k, _)| k != "date")
        .collect();
    Answer {
        status,
        headers,
        body: std::fs::read(&body_file).unwrap_or_default(),
    }
}

fn curl_str(args: &[&str]) -> Answer {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    curl(&args)
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

/// A management API call with `token` as Bearer credentials.
fn api(server: &Server, token: &str, method: &str, path: &str, body: Option<&str>) -> Answer {
    let url = server.anon_url(&format!("-/api/v1/{path}"));
    let auth = format!("Authorization: Bearer {token}");
    let mut args = vec!["-X", method, "-H", &auth];
    if let Some(body) = body {
        args.extend([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    args.push(&url);
    curl_str(&args)
}

fn ls_remote_ok(sb: &Sandbox, url: &str) -> bool {
    sb.git_output(sb.dir.path(), &["ls-remote", url])
        .status
        .success()
}

fn private_repositories_need_valid_tokens(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server, "team/private.git");
    let root = sb.dir.path();

    // Without credentials: git is asked for them (401) and has none to give.
    let out = sb.git_output(
        root,
        &["clone", &server.anon_url("team/private.git"), "anon"],
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("could not read Username"),
        "{}",
        stderr_of(&out)
    );
    let answer =
        curl_str(&[&server.anon_url("team/private.git/info/refs?service=git-upload-pack")]);
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.header("www-authenticate"),
        Some(r#"Basic realm="stowage""#)
    );

    // A token with a read grant clones; it cannot push.
    let bob = user(&backend, "bob", Some(("team/private", "read")));
    let url = server.url_as("bob", &bob, "team/private.git");
    sb.git(root, &["clone", "-q", &url, "bob"]);
    assert_eq!(
        sb.git(&root.join("bob"), &["rev-parse", "HEAD"]),
        sb.git(&src, &["rev-parse", "HEAD"])
    );
    sb.commit(&root.join("bob"), "b.txt", "b\n", "by bob");
    let out = sb.git_output(&root.join("bob"), &["push", "-q", "origin", "main"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("remote: bob may read team/private but not push to it"),
        "{}",
        stderr_of(&out)
    );

    // A read-only token clones, and cannot push even with a write grant.
    cli(&backend, &["repo", "grant", "team/private", "bob", "write"]);
    let read_only = cli(
        &backend,
        &["token", "create", "bob", "--read-only", "--note", "ci"],
    );
    let ro_url = server.url_as("bob", read_only.trim(), "team/private.git");
    sb.git(root, &["clone", "-q", &ro_url, "ro"]);
    sb.commit(&root.join("ro"), "c.txt", "c\n", "by a read-only token");
    let out = sb.git_output(&root.join("ro"), &["push", "-q", "origin", "main"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("remote: this token is read-only"),
        "{}",
        stderr_of(&out)
    );
    // The write grant lets bob's other token push.
    sb.git(&root.join("bob"), &["push", "-q", "origin", "main"]);

    // Listed by id, created, expiry, scope and note; never the token.
    let list = cli(&backend, &["token", "list", "bob"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(!list.contains(&bob) && !list.contains(read_only.trim()));
    let ro_line = list.lines().find(|l| l.contains("read-only")).expect("ro");
    assert!(ro_line.ends_with("\tci"), "{ro_line}");
    let id = list
        .lines()
        .find(|l| l.contains("read-write"))
        .and_then(|l| l.split('\t').next())
        .expect("the read-write token's id")
        .to_owned();

    // Revoked: refused within 5 seconds, with git's "Authentication failed".
    let out = cli_output(&backend, &["token", "revoke", "bob", "000000000000"]);
    assert!(!out.status.success(), "an unknown id is an error");
    cli(&backend, &["token", "revoke", "bob", &id]);
    let took = until(Duration::from_secs(6), || !ls_remote_ok(&sb, &url));
    assert!(took.is_some_and(|t| t < Duration::from_secs(5)), "{took:?}");
    let out = sb.git_output(root, &["clone", &url, "revoked"]);
    assert!(
        stderr_of(&out).contains("Authentication failed"),
        "{}",
        stderr_of(&out)
    );

    // A user without a grant sees no repository at all.
    let carol = user(&backend, "carol", None);
    let out = sb.git_output(
        root,
        &[
            "clone",
            &server.url_as("carol", &carol, "team/private.git"),
            "c",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("not found"), "{}", stderr_of(&out));

    // A grant on a prefix covers nested repositories, and nothing else.
    seeded(&sb, &server, "org/team/x.git");
    let dave = user(&backend, "dave", Some(("org/", "read")));
    sb.git(
        root,
        &[
            "clone",
            "-q",
            &server.url_as("dave", &dave, "org/team/x.git"),
            "d",
        ],
    );
    assert!(!ls_remote_ok(
        &sb,
        &server.url_as("dave", &dave, "team/private.git")
    ));
}

fn public_repositories_are_read_anonymously(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let root = sb.dir.path();
    seeded(&sb, &server, "pub.git");
    let admin = admin_token(&backend);
    let answer = api(
        &server,
        &admin,
        "PUT",
        "repos/pub/visibility",
        Some(r#"{"visibility":"public"}"#),
    );
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert_eq!(answer.json()["visibility"], "public");

    sb.git(root, &["clone", "-q", &server.anon_url("pub.git"), "anon"]);
    sb.commit(&root.join("anon"), "x.txt", "x\n", "anonymous change");
    let out = sb.git_output(&root.join("anon"), &["push", "origin", "main"]);
    assert!(!out.status.success(), "anonymous pushes are refused");
    assert!(
        stderr_of(&out).contains("could not read Username"),
        "{}",
        stderr_of(&out)
    );
    // An anonymous push to a new name creates nothing.
    let out = sb.git_output(
        &root.join("anon"),
        &["push", &server.anon_url("fresh.git"), "main"],
    );
    assert!(!out.status.success());
    assert!(!cli(&backend, &["repo", "list"]).contains("fresh"));

    // Private again, from the CLI: in force within 5 seconds.
    cli(&backend, &["repo", "visibility", "pub", "private"]);
    let took = until(Duration::from_secs(6), || {
        !ls_remote_ok(&sb, &server.anon_url("pub.git"))
    });
    assert!(took.is_some_and(|t| t < Duration::from_secs(5)), "{took:?}");
    // `repo create --public` makes a public repository.
    cli(&backend, &["repo", "create", "open", "--public"]);
    let took = until(Duration::from_secs(6), || {
        ls_remote_ok(&sb, &server.anon_url("open.git"))
    });
    assert!(took.is_some_and(|t| t < Duration::from_secs(5)), "{took:?}");
}

fn protected_refs_refuse_force_pushes_and_deletions(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let root = sb.dir.path();
    let src = seeded(&sb, &server, "demo.git");
    sb.git(
        &src,
        &["push", "-q", &server.url("demo.git"), "main:release/1"],
    );
    let admin = admin_token(&backend);
    for body in [
        r#"{"pattern":"main"}"#,
        r#"{"pattern":"release/*"}"#,
        r#"{"pattern":"refs/tags/v*","admins_only":true}"#,
    ] {
        let answer = api(
            &server,
            &admin,
            "POST",
            "repos/demo/protections",
            Some(body),
        );
        assert_eq!(answer.status, 201, "{:?}", answer.json());
    }
    let writer = user(&backend, "writer", Some(("demo", "write")));
    let url = server.url_as("writer", &writer, "demo.git");
    sb.git(root, &["clone", "-q", &url, "w"]);
    let w = root.join("w");
    let remote_main = || sb.git(root, &["ls-remote", &url, "refs/heads/main"]);

    // A fast-forward is accepted.
    sb.commit(&w, "b.txt", "b\n", "second");
    sb.git(&w, &["push", "-q", "origin", "main"]);
    let before = remote_main();

    // A force-push is refused with the reason, for the admin as well.
    sb.git(&w, &["reset", "-q", "--hard", "HEAD~1"]);
    sb.commit(&w, "c.txt", "c\n", "rewritten");
    for push_url in [url.clone(), server.url("demo.git")] {
        let out = sb.git_output(&w, &["push", "-f", &push_url, "main"]);
        assert!(!out.status.success());
        assert!(
            stderr_of(&out).contains("protected branch: force-push not allowed"),
            "{}",
            stderr_of(&out)
        );
    }
    assert_eq!(remote_main(), before);

    // Deletions: refused by the protection, and the default branch never.
    let out = sb.git_output(&w, &["push", "origin", ":release/1"]);
    assert!(stderr_of(&out).contains("protected branch: deletion not allowed"));
    let out = sb.git_output(&w, &["push", &server.url("demo.git"), ":main"]);
    assert!(
        stderr_of(&out).contains("deletion of the current branch prohibited"),
        "{}",
        stderr_of(&out)
    );

    // An admins-only pattern refuses a writer, not an admin.
    sb.git(&w, &["tag", "v1"]);
    let out = sb.git_output(&w, &["push", "origin", "v1"]);
    assert!(
        stderr_of(&out).contains("protected tag: only repository admins may push to it"),
        "{}",
        stderr_of(&out)
    );
    sb.git(&w, &["push", "-q", &server.url("demo.git"), "v1"]);

    // Without --atomic, the other commands of a push still apply; with it, none.
    sb.git(&w, &["checkout", "-q", "-b", "topic"]);
    let out = sb.git_output(&w, &["push", "-f", "origin", "topic", "main"]);
    assert!(!out.status.success());
    assert!(
        sb.git(root, &["ls-remote", &url])
            .contains("refs/heads/topic")
    );
    sb.commit(&w, "t.txt", "t\n", "topic work");
    let topic_before = sb.git(root, &["ls-remote", &url, "refs/heads/topic"]);
    let out = sb.git_output(&w, &["push", "--atomic", "-f", "origin", "topic", "main"]);
    assert!(!out.status.success());
    assert_eq!(
        sb.git(root, &["ls-remote", &url, "refs/heads/topic"]),
        topic_before
    );

    // Unprotected, the force-push goes through.
    let answer = api(
        &server,
        &admin,
        "DELETE",
        "repos/demo/protections/main",
        None,
    );
    assert_eq!(answer.status, 204);
    sb.git(&w, &["push", "-q", "-f", "origin", "main"]);
    assert_ne!(remote_main(), before);
}

fn credential_helpers_store_and_forget_tokens(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let root = sb.dir.path();
    seeded(&sb, &server, "demo.git");
    let store = sb.path("credentials");
    let helper = format!("credential.helper=store --file={}", store.display());
    std::fs::write(&store, format!("{}\n", server.base)).expect("credentials");
    let url = server.anon_url("demo.git");
    sb.git(root, &["-c", &helper, "clone", "-q", &url, "c"]);
    let c = root.join("c");
    sb.git(&c, &["-c", &helper, "fetch", "-q"]);
    sb.commit(&c, "h.txt", "h\n", "through a credential helper");
    sb.git(&c, &["-c", &helper, "push", "-q", "origin", "main"]);

    // A wrong stored token: git says so and tells the helper to forget it.
    let wrong = format!(
        "{}\n",
        server
            .anon_base
            .replacen("://", "://admin:stw_not_a_real_token@", 1)
    );
    std::fs::write(&store, &wrong).expect("credentials");
    let out = sb.git_output(root, &["-c", &helper, "clone", &url, "wrong"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("Authentication failed"),
        "{}",
        stderr_of(&out)
    );
    let left = std::fs::read_to_string(&store).expect("credentials");
    assert!(!left.contains("stw_not_a_real_token"), "{left}");
}

fn a_push_larger_than_the_post_buffer_authenticates_first(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server, "demo.git");
    let random = common::random_bytes(2_000_000, 0x2545_f491_4f6c_dd1d);
    std::fs::write(src.join("random.bin"), &random).expect("write");
    sb.git(&src, &["add", "random.bin"]);
    sb.git(&src, &["commit", "-q", "-m", "big binary"]);
    let store = sb.path("credentials");
    std::fs::write(&store, format!("{}\n", server.base)).expect("credentials");
    let helper = format!("credential.helper=store --file={}", store.display());
    // git sends a small probe first, so that the chunked body need not be replayed
    // after a 401.
    let out = sb
        .git_cmd(&src)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .args([
            "-c",
            &helper,
            "-c",
            "http.postBuffer=65536",
            "push",
            &server.anon_url("demo.git"),
            "main",
        ])
        .output()
        .expect("git push");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let trace = stderr_of(&out);
    assert!(
        trace.contains("Transfer-Encoding: chunked"),
        "the push was chunked"
    );
    assert_eq!(
        sb.git(
            sb.dir.path(),
            &["ls-remote", &server.url("demo.git"), "refs/heads/main"]
        )
        .split('\t')
        .next(),
        Some(sb.git(&src, &["rev-parse", "HEAD"]).trim())
    );
}

fn private_and_missing_look_the_same(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    seeded(&sb, &server, "team/private.git");
    let carol = user(&backend, "carol", None);
    let request = |name: &str, route: usize, auth: Option<&str>| {
        let (path, post) = match route {
            0 => ("info/refs?service=git-upload-pack", false),
            1 => ("info/refs?service=git-receive-pack", false),
            2 => ("git-upload-pack", true),
            _ => ("git-receive-pack", true),
        };
        let url = server.anon_url(&format!("{name}.git/{path}"));
        let header = auth.map(|t| format!("Authorization: Bearer {t}"));
        let mut args: Vec<&str> = Vec::new();
        if let Some(h) = &header {
            args.extend(["-H", h]);
        }
        if post {
            args.extend(["--data-binary", "0000"]);
        }
        args.push(&url);
        let mut answer = curl_str(&args);
        // The repository's own name is the one difference a client may see.
        answer.body = String::from_utf8_lossy(&answer.body)
            .replace(name, "NAME")
            .into_bytes();
        answer
    };
    for route in 0..4 {
        let private = request("team/private", route, None);
        assert_eq!(private.status, 401);
        assert_eq!(
            private,
            request("team/missing", route, None),
            "route {route}"
        );
        let private = request("team/private", route, Some(&carol));
        assert_eq!(private.status, 404);
        assert_eq!(
            private,
            request("team/missing", route, Some(&carol)),
            "route {route}"
        );
    }
}

fn a_revocation_reaches_another_instance(backend: Backend) {
    let a = Server::start(&backend);
    let b = Server::start(&backend);
    let sb = Sandbox::new();
    seeded(&sb, &a, "demo.git");
    let bob = user(&backend, "bob", Some(("demo", "read")));
    let on_b = b.url_as("bob", &bob, "demo.git");
    assert!(ls_remote_ok(&sb, &on_b));
    let listed = api(&a, &admin_token(&backend), "GET", "users/bob/tokens", None);
    let id = listed.json()[0]["id"].as_str().expect("id").to_owned();
    let answer = api(
        &a,
        &admin_token(&backend),
        "DELETE",
        &format!("users/bob/tokens/{id}"),
        None,
    );
    assert_eq!(answer.status, 204);
    let probe = b.anon_url("demo.git/info/refs?service=git-upload-pack");
    let auth = format!("Authorization: Bearer {bob}");
    let took = until(Duration::from_secs(10), || {
        curl_str(&["-H", &auth, &probe]).status == 401
    })
    .expect("the revocation reached the second instance");
    eprintln!("a token revoked through one instance was refused by the other after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!ls_remote_ok(&sb, &on_b));
}

fn parallel_token_creation_loses_nothing(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    seeded(&sb, &server, "demo.git");
    cli(&backend, &["user", "add", "bob"]);
    cli(&backend, &["repo", "grant", "demo", "bob", "read"]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            stowage()
                .args(["token", "create", "bob", "--note", &format!("n{i}")])
                .args(["--store", &backend.url()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("stowage runs")
        })
        .collect();
    let tokens: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("token create");
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        })
        .collect();
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 8);
    for token in &tokens {
        assert!(
            ls_remote_ok(&sb, &server.url_as("bob", token, "demo.git")),
            "a token made in parallel works"
        );
    }
    assert_eq!(cli(&backend, &["token", "list", "bob"]).lines().count(), 8);
}

fn hostile_authorization_headers(backend: Backend) {
    use std::os::unix::ffi::OsStrExt;
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    seeded(&sb, &server, "demo.git");
    let url = server.anon_url("demo.git/info/refs?service=git-upload-pack");
    let long = format!("Authorization: Bearer {}", "x".repeat(6000));
    let headers: Vec<Vec<u8>> = vec![
        b"Authorization: Basic !!!not-base64".to_vec(),
        b"Authorization: Basic bm9jb2xvbg==".to_vec(),
        b"Authorization: Basic".to_vec(),
        b"Authorization: Bearer".to_vec(),
        b"Authorization: Basic \xff\xfe\xfd".to_vec(),
        b"Authorization: Basic //79".to_vec(),
        b"Authorization: Negotiate abc".to_vec(),
        long.into_bytes(),
    ];
    for header in &headers {
        let answer = curl(&[
            std::ffi::OsStr::new("-H"),
            std::ffi::OsStr::from_bytes(header),
            std::ffi::OsStr::new(&url),
        ]);
        assert!(
            matches!(answer.status, 400 | 401),
            "{}: {}",
            String::from_utf8_lossy(&header[..header.len().min(40)]),
            answer.status
        );
        assert!(ls_remote_ok(&sb, &server.url("demo.git")), "still serving");
    }

    // Repeated wrong tokens are slowed down; the real user, even at the same address,
    // is not locked out.
    let wrong = "Authorization: Bearer stw_wrong";
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..14 {
        let answer = curl_str(&["-H", wrong, &url]);
        statuses.push(answer.status);
        if answer.status == 429 {
            retry_after = answer.header("retry-after").map(str::to_owned);
        }
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let wait: u64 = retry_after
        .expect("a Retry-After header")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&wait), "{wait}");
    assert!(ls_remote_ok(&sb, &server.url("demo.git")), "not locked out");
    assert_eq!(
        curl_str(&["-H", wrong, &url]).status,
        429,
        "still throttled"
    );
}

fn the_management_api(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let admin = admin_token(&backend);
    let call =
        |method: &str, path: &str, body: Option<&str>| api(&server, &admin, method, path, body);

    // Users.
    let answer = call("POST", "users", Some(r#"{"name":"erin"}"#));
    assert_eq!(answer.status, 201, "{:?}", answer.json());
    assert_eq!(
        call("POST", "users", Some(r#"{"name":"erin"}"#)).status,
        409
    );
    assert_eq!(
        call("POST", "users", Some(r#"{"name":"../x"}"#)).status,
        400
    );
    let users = call("GET", "users", None).json();
    assert!(
        users
            .as_array()
            .expect("list")
            .iter()
            .any(|u| u["name"] == "erin")
    );

    // Tokens: shown once, listed without the secret.
    let made = call(
        "POST",
        "users/erin/tokens",
        Some(r#"{"read_only":false,"expires_days":30,"note":"laptop"}"#),
    );
    assert_eq!(made.status, 201);
    let erin = made.json()["token"].as_str().expect("token").to_owned();
    assert!(erin.starts_with("stw_"));
    let listed = call("GET", "users/erin/tokens", None);
    assert!(!String::from_utf8_lossy(&listed.body).contains(&erin));
    assert_eq!(listed.json()[0]["note"], "laptop");
    assert!(listed.json()[0]["expires"].is_string());

    // Repositories: create, settings, visibility, grants, protections.
    let made = call("POST", "repos", Some(r#"{"name":"api/r"}"#));
    assert_eq!(made.status, 201, "{:?}", made.json());
    assert_eq!(
        call("POST", "repos", Some(r#"{"name":"api/r"}"#)).status,
        409
    );
    assert_eq!(
        call("GET", "repos/api%2Fr", None).json()["visibility"],
        "private"
    );
    assert_eq!(
        call(
            "PUT",
            "repos/api%2Fr/visibility",
            Some(r#"{"visibility":"public"}"#)
        )
        .json()["visibility"],
        "public"
    );
    assert_eq!(
        call(
            "PUT",
            "repos/api%2Fr/grants/erin",
            Some(r#"{"role":"admin"}"#)
        )
        .status,
        200
    );
    assert_eq!(
        call(
            "PUT",
            "repos/api%2F/grants/erin",
            Some(r#"{"role":"read"}"#)
        )
        .status,
        200
    );
    assert_eq!(
        call(
            "PUT",
            "repos/nothing/grants/erin",
            Some(r#"{"role":"read"}"#)
        )
        .status,
        404
    );
    let protected = call(
        "POST",
        "repos/api%2Fr/protections",
        Some(r#"{"pattern":"release/*","allow_delete":true}"#),
    );
    assert_eq!(protected.status, 201);
    assert_eq!(protected.json()["protections"][0]["pattern"], "release/*");
    assert_eq!(
        call(
            "POST",
            "repos/api%2Fr/protections",
            Some(r#"{"pattern":"a b"}"#)
        )
        .status,
        400
    );
    let repos = call("GET", "repos", None).json();
    assert!(
        repos
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["name"] == "api/r")
    );

    // A repository admin manages the repository, not users; others see nothing.
    let as_erin =
        |method: &str, path: &str, body: Option<&str>| api(&server, &erin, method, path, body);
    assert_eq!(
        as_erin(
            "PUT",
            "repos/api%2Fr/visibility",
            Some(r#"{"visibility":"private"}"#)
        )
        .status,
        200
    );
    assert_eq!(as_erin("GET", "users", None).status, 403);
    assert_eq!(
        as_erin("POST", "users", Some(r#"{"name":"x"}"#)).status,
        403
    );
    cli(&backend, &["repo", "create", "secret"]);
    assert_eq!(as_erin("GET", "repos/secret", None).status, 404);
    assert_eq!(as_erin("DELETE", "repos/secret", None).status, 404);
    let repos = as_erin("GET", "repos", None).json();
    assert!(
        !repos
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r["name"] == "secret")
    );

    // Bodies must be JSON, routes must exist, callers must authenticate.
    let url = server.anon_url("-/api/v1/users");
    let auth = format!("Authorization: Bearer {admin}");
    assert_eq!(
        curl_str(&[
            "-H",
            &auth,
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            r#"{"name":"y"}"#,
            &url
        ])
        .status,
        415
    );
    assert_eq!(call("GET", "nothing", None).status, 404);
    assert_eq!(curl_str(&[&url]).status, 401);
    assert_eq!(curl_str(&[&server.anon_url("-/stats")]).status, 401);
    assert_eq!(
        curl_str(&[
            "-H",
            &format!("Authorization: Bearer {erin}"),
            &server.anon_url("-/stats")
        ])
        .status,
        403
    );

    // Removal.
    assert_eq!(
        call("DELETE", "repos/api%2Fr/protections/release%2F%2A", None).status,
        204
    );
    assert_eq!(call("DELETE", "repos/api%2F/grants/erin", None).status, 204);
    assert_eq!(call("DELETE", "repos/api%2F/grants/erin", None).status, 404);
    let id = listed.json()[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        call("DELETE", &format!("users/erin/tokens/{id}"), None).status,
        204
    );
    assert_eq!(
        call("DELETE", &format!("users/erin/tokens/{id}"), None).status,
        404
    );
    assert_eq!(call("DELETE", "repos/api%2Fr", None).status, 204);
    assert_eq!(call("GET", "repos/api%2Fr", None).status, 404);
    assert_eq!(call("DELETE", "users/erin", None).status, 204);
    assert_eq!(
        call("DELETE", "users/admin", None).status,
        400,
        "the last admin stays"
    );
    let users = cli(&backend, &["user", "list"]);
    assert!(!users.contains("erin"), "{users}");
    drop(sb);
}

fn creating_by_push_needs_write_on_a_prefix(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    sb.commit(&src, "a.txt", "a\n", "first");
    let frank = user(&backend, "frank", Some(("frank/", "write")));
    sb.git(
        &src,
        &[
            "push",
            "-q",
            &server.url_as("frank", &frank, "frank/new.git"),
            "main",
        ],
    );
    // The creator is the new repository's admin.
    let answer = api(
        &server,
        &frank,
        "PUT",
        "repos/frank%2Fnew/visibility",
        Some(r#"{"visibility":"public"}"#),
    );
    assert_eq!(answer.status, 200, "{:?}", answer.json());
    assert!(ls_remote_ok(&sb, &server.anon_url("frank/new.git")));
    // Anywhere else, the name does not exist for them.
    let out = sb.git_output(
        &src,
        &[
            "push",
            &server.url_as("frank", &frank, "other/x.git"),
            "main",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("not found"), "{}", stderr_of(&out));
    assert!(!cli(&backend, &["repo", "list"]).contains("other/x"));
}

fn the_first_start_and_no_auth(backend: Backend) {
    // Two servers starting at once on a store without users: one admin, one token.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Server::start(&backend));
        let b = s.spawn(|| Server::start(&backend));
        (a.join().expect("a"), b.join().expect("b"))
    });
    let printed: Vec<&Server> = [&a, &b]
        .into_iter()
        .filter(|s| s.banner.contains("stw_"))
        .collect();
    assert_eq!(printed.len(), 1, "{}\n---\n{}", a.banner, b.banner);
    let users = cli(&backend, &["user", "list"]);
    assert_eq!(users.lines().count(), 1, "{users}");
    assert!(users.starts_with("admin\tadmin"), "{users}");

    // The push line it prints takes a newcomer to a first push and clone.
    let banner = &printed[0].banner;
    let push = banner
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("git push "))
        .expect("a git push line");
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    sb.commit(&src, "a.txt", "a\n", "first");
    let args: Vec<&str> = push.split(' ').skip(1).collect();
    sb.git(&src, &args);
    let clone = banner
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("git clone "))
        .expect("a git clone line");
    assert!(
        !clone.contains("stw_"),
        "the clone line keeps the token out of the URL"
    );
    // git asks for the password; the answer is the token.
    let askpass = sb.path("askpass.sh");
    std::fs::write(
        &askpass,
        format!("#!/bin/sh\necho {}\n", admin_token(&backend)),
    )
    .expect("askpass");
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let args: Vec<&str> = clone.split(' ').skip(1).collect();
    let out = sb
        .git_cmd(sb.dir.path())
        .env("GIT_ASKPASS", &askpass)
        .args(&args)
        .output()
        .expect("git clone");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(sb.path("demo").join("a.txt").exists());

    // With --no-auth, anyone may push and clone, and the server says so.
    let open = Backend::fs();
    let server = Server::start_with(&open, &["--no-auth"]);
    assert!(
        server.banner.contains("access control is off"),
        "{}",
        server.banner
    );
    sb.git(
        &src,
        &["push", "-q", &server.anon_url("anyone.git"), "main"],
    );
    sb.git(
        sb.dir.path(),
        &["clone", "-q", &server.anon_url("anyone.git"), "anyone"],
    );
    // Management stays with the operator's commands: no API for everyone.
    let answer = curl_str(&[&server.anon_url("-/api/v1/users")]);
    assert_eq!(answer.status, 403);
    assert!(
        answer.json()["error"]
            .as_str()
            .expect("error")
            .contains("--no-auth")
    );
}

fn a_trusted_proxy_names_the_user(backend: Backend) {
    let first = Server::start(&backend);
    let sb = Sandbox::new();
    seeded(&sb, &first, "demo.git");
    user(&backend, "bob", Some(("demo", "read")));
    let server = Server::start_with(&backend, &["--trust-proxy-user", "X-Remote-User"]);
    let url = server.anon_url("demo.git");
    sb.git(
        sb.dir.path(),
        &[
            "-c",
            "http.extraHeader=X-Remote-User: bob",
            "clone",
            "-q",
            &url,
            "c",
        ],
    );
    let probe = server.anon_url("demo.git/info/refs?service=git-upload-pack");
    assert_eq!(
        curl_str(&["-H", "X-Remote-User: nobody", &probe]).status,
        403
    );
    assert_eq!(curl_str(&["-H", "X-Remote-User: bob", &probe]).status, 200);
    // Without the option the header means nothing.
    assert_eq!(
        curl_str(&[
            "-H",
            "X-Remote-User: bob",
            &first.anon_url("demo.git/info/refs?service=git-upload-pack")
        ])
        .status,
        401
    );
    // From an address that is not the proxy's, the header is refused.
    let elsewhere = Server::start_with(
        &backend,
        &[
            "--trust-proxy-user",
            "X-Remote-User",
            "--trusted-proxy-addr",
            "10.0.0.0/8",
        ],
    );
    let probe = elsewhere.anon_url("demo.git/info/refs?service=git-upload-pack");
    assert_eq!(curl_str(&["-H", "X-Remote-User: bob", &probe]).status, 403);
}

fn checking_access_costs_no_store_requests(backend: Backend) {
    let seeding = Server::start(&backend);
    let sb = Sandbox::new();
    for mode in ["on", "off"] {
        seeded(&sb, &seeding, &format!("demo-{mode}.git"));
    }
    // Store requests of a clone, then of a push of one commit, each through a server
    // started right before it (which read the access state as it started, so that no
    // refresh of its cache falls inside what is counted).
    let start = |mode: &str| match mode {
        "on" => Server::start_with(&backend, &["--no-background-compaction"]),
        _ => Server::start_with(&backend, &["--no-background-compaction", "--no-auth"]),
    };
    let counted = |server: &Server, what: &dyn Fn(&Server)| {
        let before = stat(server, "store_requests_total");
        what(server);
        stat(server, "store_requests_total") - before
    };
    let mut figures = Vec::new();
    for mode in ["on", "off"] {
        let dir = sb.path(&format!("measure-{mode}"));
        let clone = counted(&start(mode), &|server| {
            let url = server.url(&format!("demo-{mode}.git"));
            sb.git(
                sb.dir.path(),
                &["clone", "-q", &url, dir.to_str().expect("utf-8")],
            );
        });
        sb.commit(&dir, "m.txt", &format!("{mode}\n"), "measured push");
        let push = counted(&start(mode), &|server| {
            let url = server.url(&format!("demo-{mode}.git"));
            sb.git(&dir, &["push", "-q", &url, "main"]);
        });
        figures.push((clone, push));
    }
    eprintln!(
        "store requests with access control on / off: clone {} / {}, push {} / {}",
        figures[0].0, figures[1].0, figures[0].1, figures[1].1
    );
    assert_eq!(figures[0], figures[1]);
}
