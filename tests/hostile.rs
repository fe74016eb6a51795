//! Hostile pushes and requests: objects git's fsck refuses, and every limit, each with
//! the message git shows its user; none of them changes a ref or stops the server.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::{Backend, Sandbox, Server, stowage};

on_every_backend!(
    pushed_objects_are_checked_as_git_fsck_checks_them,
    limits_refuse_hostile_requests,
);

/// Writes an object as it is, with `git hash-object --literally`.
fn literally(sb: &Sandbox, repo: &Path, kind: &str, data: &[u8]) -> String {
    let mut child = sb
        .git_cmd(repo)
        .args(["hash-object", "-t", kind, "-w", "--literally", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git hash-object");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("hash-object");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A tree of `(mode, name, id)` entries, written as they are.
fn tree(sb: &Sandbox, repo: &Path, entries: &[(&str, &[u8], &str)]) -> String {
    let mut data = Vec::new();
    for (mode, name, id) in entries {
        data.extend_from_slice(mode.as_bytes());
        data.push(b' ');
        data.extend_from_slice(name);
        data.push(0);
        data.extend_from_slice(&hex::decode(id).expect("hex id"));
    }
    literally(sb, repo, "tree", &data)
}

fn commit_on(sb: &Sandbox, repo: &Path, tree: &str, parent: &str) -> String {
    sb.git(repo, &["commit-tree", tree, "-p", parent, "-m", "hostile"])
        .trim()
        .to_owned()
}

fn pushed_objects_are_checked_as_git_fsck_checks_them(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    let first = sb.commit(&src, "a.txt", "a\n", "first");
    let url = server.url("demo.git");
    sb.git(&src, &["push", "-q", &url, "main"]);
    let blob = literally(&sb, &src, "blob", b"content\n");
    let modules = |text: &str| literally(&sb, &src, "blob", text.as_bytes());
    let hooks = sb
        .git(&src, &["rev-parse", "HEAD^{tree}"])
        .trim()
        .to_owned();

    let bad_commit = {
        let tree = sb
            .git(&src, &["rev-parse", "HEAD^{tree}"])
            .trim()
            .to_owned();
        literally(
            &sb,
            &src,
            "commit",
            format!(
                "tree {tree}\nparent {first}\nauthor A <a@example.com> 1700000000 +01x0\n\
                 committer A <a@example.com> 1700000000 +0100\n\nbad zone\n"
            )
            .as_bytes(),
        )
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "zeroPaddedFilemode: contains zero-padded file modes",
            commit_on(
                &sb,
                &src,
                &tree(&sb, &src, &[("0100644", b"a.txt", &blob)]),
                &first,
            ),
        ),
        (
            "hasDotgit: contains '.git'",
            commit_on(
                &sb,
                &src,
                &tree(&sb, &src, &[("40000", b".GIT", &hooks)]),
                &first,
            ),
        ),
        (
            "hasDotgit: contains '.git'",
            commit_on(
                &sb,
                &src,
                &tree(&sb, &src, &[("40000", b"git~1", &hooks)]),
                &first,
            ),
        ),
        (
            "hasDotdot: contains '..'",
            commit_on(
                &sb,
                &src,
                &tree(&sb, &src, &[("40000", b"..", &hooks)]),
                &first,
            ),
        ),
        (
            "duplicateEntries: contains duplicate file entries",
            commit_on(
                &sb,
                &src,
                &tree(
                    &sb,
                    &src,
                    &[("100644", b"a", &blob), ("100644", b"a", &blob)],
                ),
                &first,
            ),
        ),
        (
            "badTimezone: invalid author/committer line - bad time zone",
            bad_commit,
        ),
        (
            "gitmodulesUrl: disallowed submodule url",
            commit_on(
                &sb,
                &src,
                &tree(
                    &sb,
                    &src,
                    &[(
                        "100644",
                        b".gitmodules",
                        &modules(
                            "[submodule \"x\"]\n\tpath = x\n\turl = --upload-pack=touch /tmp/pwned\n",
                        ),
                    )],
                ),
                &first,
            ),
        ),
        (
            "gitmodulesPath: disallowed submodule path",
            commit_on(
                &sb,
                &src,
                &tree(
                    &sb,
                    &src,
                    &[(
                        "100644",
                        b".gitmodules",
                        &modules("[submodule \"x\"]\n\tpath = -x\n\turl = https://example.com/x\n"),
                    )],
                ),
                &first,
            ),
        ),
        (
            "gitmodulesSymlink: .gitmodules is a symbolic link",
            commit_on(
                &sb,
                &src,
                &tree(&sb, &src, &[("120000", b".gitmodules", &blob)]),
                &first,
            ),
        ),
    ];
    for (expected, commit) in &cases {
        let out = sb.git_output(&src, &["push", &url, &format!("{commit}:refs/heads/main")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{expected}: accepted");
        assert!(
            stderr.contains("remote: error: object ") && stderr.contains(expected),
            "{expected}: {stderr}"
        );
        assert!(
            stderr.contains("remote: fatal: fsck error in packed object")
                && stderr.contains("unpacker error"),
            "{stderr}"
        );
        let now = sb.git(sb.dir.path(), &["ls-remote", &url, "refs/heads/main"]);
        assert!(now.starts_with(&first), "{expected}: the ref moved: {now}");
    }
    let fsck = stowage()
        .args(["fsck", "demo", "--store", &backend.url()])
        .output()
        .expect("fsck");
    assert!(fsck.status.success());

    // One finding ignored, the others still refused.
    let ignoring = Server::start_with(&backend, &["--fsck-ignore", "zeroPaddedFilemode"]);
    let (_, zero_padded) = &cases[0];
    sb.git(
        &src,
        &[
            "push",
            "-q",
            &ignoring.url("ignoring.git"),
            &format!("{zero_padded}:refs/heads/main"),
        ],
    );
    let (_, dotgit) = &cases[1];
    let out = sb.git_output(
        &src,
        &[
            "push",
            &ignoring.url("ignoring.git"),
            &format!("{dotgit}:refs/heads/other"),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("hasDotgit"));

    // With the checks off, git's own server would take them; so does stowage.
    let lax = Server::start_with(&backend, &["--no-fsck-objects"]);
    sb.git(
        &src,
        &[
            "push",
            "-q",
            &lax.url("demo.git"),
            &format!("{zero_padded}:refs/heads/main"),
        ],
    );
}

/// Every limit, on a server that has them small.
const SMALL_LIMITS: &[&str] = &[
    "--max-request-mb",
    "1",
    "--max-pkt-lines",
    "50",
    "--max-wants",
    "5",
    "--max-haves",
    "5",
    "--max-depth",
    "3",
    "--max-filter-bytes",
    "20",
    "--max-push-commands",
    "3",
    "--max-push-options",
    "1",
    "--max-ref-name-bytes",
    "40",
    "--max-object-mb",
    "1",
    "--max-delta-depth",
    "2",
    "--max-tree-depth",
    "5",
    "--max-header-kb",
    "8",
    "--header-timeout-secs",
    "2",
    "--min-request-rate",
    "1000",
    "--request-rate-window-secs",
    "2",
];

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).expect("compress");
    z.finish().expect("compress")
}

/// A pack entry's header: type and (declared) size.
fn entry_header(kind: u8, size: usize) -> Vec<u8> {
    let mut size = size;
    let mut first = (kind << 4) | (size & 15) as u8;
    size >>= 4;
    let mut out = Vec::new();
    while size > 0 {
        out.push(first | 0x80);
        first = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(first);
    out
}

/// A pack of `entries` (each header and data, in order), with its checksum.
fn pack(entries: &[Vec<u8>]) -> Vec<u8> {
    use sha1::Digest;
    let mut out = b"PACK".to_vec();
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        out.extend_from_slice(e);
    }
    let sum = sha1::Sha1::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// An ofs-delta entry `distance` bytes after its base, replacing a base of
/// `base_len` bytes with `result`.
fn ofs_delta(distance: usize, base_len: usize, result: &[u8]) -> Vec<u8> {
    let mut delta = Vec::new();
    varint(base_len, &mut delta);
    varint(result.len(), &mut delta);
    delta.push(result.len() as u8);
    delta.extend_from_slice(result);
    let mut out = entry_header(6, delta.len());
    let mut n = distance;
    let mut offset = vec![(n & 0x7f) as u8];
    n >>= 7;
    while n > 0 {
        n -= 1;
        offset.insert(0, 0x80 | (n & 0x7f) as u8);
        n >>= 7;
    }
    out.extend_from_slice(&offset);
    out.extend_from_slice(&zlib(&delta));
    out
}

/// POSTs a push of `pack` setting `refs/heads/x` to `new`; returns the answer.
fn push_raw(server: &Server, new: &str, pack_bytes: &[u8]) -> String {
    let mut body =
        common::pkt(format!("{ZERO} {new} refs/heads/x\0report-status side-band-64k\n").as_bytes());
    body.extend_from_slice(b"0000");
    body.extend_from_slice(pack_bytes);
    let (_, answer) = common::post(
        &server.url("demo.git/git-receive-pack"),
        "application/x-git-receive-pack-request",
        &body,
    );
    String::from_utf8_lossy(&answer).into_owned()
}

const ZERO: &str = "0000000000000000000000000000000000000000";

fn upload(server: &Server, lines: &[String]) -> String {
    let mut body = Vec::new();
    for line in lines {
        if line == "0000" {
            body.extend_from_slice(b"0000");
        } else {
            body.extend_from_slice(&common::pkt(line.as_bytes()));
        }
    }
    let (_, answer) = common::post(
        &server.url("demo.git/git-upload-pack"),
        "application/x-git-upload-pack-request",
        &body,
    );
    String::from_utf8_lossy(&answer).into_owned()
}

fn limits_refuse_hostile_requests(backend: Backend) {
    use std::io::Read;
    let server = Server::start_with(&backend, SMALL_LIMITS);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    let head = sb.commit(&src, "a.txt", "a\n", "first");
    let url = server.url("demo.git");
    sb.git(&src, &["push", "-q", &url, "main"]);
    let refs = || sb.git(sb.dir.path(), &["ls-remote", &url]);
    let before = refs();
    let root = sb.dir.path();

    // A gzip bomb: a small body that inflates past the request limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut bomb = common::pkt(format!("want {head} side-band-64k\n").as_bytes());
    bomb.resize(3 << 20, b'0');
    gz.write_all(&bomb).expect("gzip");
    let gz = gz.finish().expect("gzip");
    assert!(gz.len() < 64 << 10);
    let (status, answer) = common::post_with(
        &server.url("demo.git/git-upload-pack"),
        "application/x-git-upload-pack-request",
        &gz,
        &["Content-Encoding: gzip"],
    );
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));

    // Lines, wants, haves, depth and filters of one fetch request.
    let want = format!("want {head} side-band-64k");
    let mut flushes = vec![want.clone()];
    flushes.extend((0..60).map(|_| "0000".to_owned()));
    assert!(upload(&server, &flushes).contains("more than 50 lines"));
    let mut wants: Vec<String> = (0..6)
        .map(|i| format!("want {}", format!("{i}").repeat(40)))
        .collect();
    wants.push("0000".into());
    assert!(upload(&server, &wants).contains("more than 5 wants"));
    let mut haves = vec![want.clone(), "0000".to_owned()];
    haves.extend((0..6).map(|i| format!("have {}", format!("{i}").repeat(40))));
    haves.push("done".into());
    assert!(upload(&server, &haves).contains("more than 5 haves"));
    for (args, expected) in [
        (
            vec!["clone", "--depth", "4"],
            "deeper than this server accepts",
        ),
        (
            vec!["clone", "--filter=combine:blob:none+tree:3"],
            "filter spec is longer than this server accepts",
        ),
    ] {
        let mut all = args.clone();
        all.extend([url.as_str(), "clone-limited"]);
        let out = sb.git_output(root, &all);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_dir_all(sb.path("clone-limited"));
    }
    sb.git(root, &["clone", "-q", "--depth", "3", &url, "shallow-ok"]);

    // Ref updates per push, and ref names.
    for b in ["b1", "b2", "b3", "b4"] {
        sb.git(&src, &["branch", b]);
    }
    let out = sb.git_output(&src, &["push", &url, "b1", "b2", "b3", "b4"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("more than 3 ref updates"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb.git_output(&src, &["push", "-o", "a", "-o", "b", &url, "b1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("more than 1 push options"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let long = format!("refs/heads/{}", "n".repeat(40));
    let out = sb.git_output(&src, &["push", &url, &format!("main:{long}")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("longer than this server accepts (40 bytes)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Objects: bigger than declared, bigger than allowed, chains too long, trees too deep.
    let mut liar = entry_header(3, 5);
    liar.extend_from_slice(&zlib(b"0123456789"));
    let answer = push_raw(&server, &head, &pack(&[liar]));
    assert!(
        answer.contains("inflates to more than its 5 bytes"),
        "{answer}"
    );
    let big = vec![7u8; (1 << 20) + 1];
    let mut huge = entry_header(3, big.len());
    huge.extend_from_slice(&zlib(&big));
    let answer = push_raw(&server, &head, &pack(&[huge]));
    assert!(
        answer.contains("larger than this server accepts"),
        "{answer}"
    );
    let mut chain = Vec::new();
    let mut base = entry_header(3, 1);
    base.extend_from_slice(&zlib(b"a"));
    let mut previous = (0usize, 1usize);
    let mut offset = 12 + base.len();
    chain.push(base);
    for i in 1..=3 {
        let content = vec![b'a' + i as u8; i + 1];
        let entry = ofs_delta(offset - previous.0 - 12, previous.1, &content);
        previous = (offset - 12, content.len());
        offset += entry.len();
        chain.push(entry);
    }
    let answer = push_raw(&server, &head, &pack(&chain));
    assert!(answer.contains("a chain of more than 2 deltas"), "{answer}");
    let deep = src.join("d1/d2/d3/d4/d5/d6/d7");
    std::fs::create_dir_all(&deep).expect("dirs");
    std::fs::write(deep.join("f.txt"), "deep\n").expect("write");
    sb.git(&src, &["add", "-A"]);
    sb.git(&src, &["commit", "-q", "-m", "deep"]);
    let out = sb.git_output(&src, &["push", &url, "main"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nested more than 5 levels deep"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A request head too large, headers sent slowly, a body sent slowly.
    let answer = common::get_with(&url, &[&format!("X-Big: {}", "h".repeat(9000))]);
    assert_eq!(answer.0, 431);
    let addr = server.anon_base.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let mut closed = false;
    for byte in b"GET /demo.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n" {
        if slow.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        if started.elapsed() > std::time::Duration::from_secs(10) {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        closed || started.elapsed() < std::time::Duration::from_secs(10),
        "a client sending its headers a byte at a time is cut off"
    );
    let token = common::admin_token(&backend);
    let auth = common::base64_basic(&format!("admin:{token}"));
    let mut slow = std::net::TcpStream::connect(&addr).expect("connect");
    slow.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    write!(
        slow,
        "POST /demo.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/x-git-upload-pack-request\r\nContent-Length: 100000\r\n\r\n"
    )
    .expect("head");
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    for _ in 0..40 {
        if slow.write_all(b"0").is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let _ = slow.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("slower than this server accepts")
            || started.elapsed() < std::time::Duration::from_secs(9),
        "a body sent a byte at a time is cut off: {text}"
    );

    // Nothing of it changed a ref, and the server still serves.
    assert_eq!(refs(), before);
    sb.git(root, &["clone", "-q", &url, "after"]);
}
