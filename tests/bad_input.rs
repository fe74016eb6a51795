//! Bad input gets a clear answer and changes nothing: corrupt and truncated packs,
//! unconnected pushes, malformed pkt-lines, missing repositories, hostile names; and
//! the request encodings git uses (gzip, chunked) work.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Backend, Sandbox, Server, get, pack_of, pkt, post, post_with, push_body};

on_every_backend!(
    corrupt_and_truncated_packs_are_refused,
    unconnected_push_is_refused,
    malformed_requests_get_errors,
    missing_repositories_and_hostile_names,
    gzip_negotiation_and_chunked_push,
    a_pack_must_be_closed_over_the_repository,
    refs_cannot_be_file_and_directory,
    v2_object_info,
    other_format_push_is_refused,
);

const ZERO: &str = "0000000000000000000000000000000000000000";

fn ls_remote(sb: &Sandbox, url: &str) -> String {
    sb.git(sb.dir.path(), &["ls-remote", url])
}

/// A repository on the server with one commit on main; returns the local clone.
fn seeded(sb: &Sandbox, server: &Server) -> std::path::PathBuf {
    let src = sb.init_repo("src");
    sb.commit(&src, "a.txt", "a\n", "first");
    sb.git(&src, &["push", "-q", &server.url("demo.git"), "main"]);
    src
}

fn corrupt_and_truncated_packs_are_refused(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server);
    let before = ls_remote(&sb, &server.url("demo.git"));
    let content: String = (0..4000).map(|i| format!("line {i}\n")).collect();
    let commit = sb.commit(&src, "big.txt", &content, "second");
    let ids: Vec<String> = sb
        .git(&src, &["rev-list", "--objects", "HEAD^..HEAD"])
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_owned())
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let pack = pack_of(&sb, &src, &ids);
    let url = server.url("demo.git/git-receive-pack");
    let old = sb.git(&src, &["rev-parse", "HEAD^"]);

    let mut corrupt = pack.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    corrupt[middle + 1] ^= 0x55;
    let truncated = &pack[..pack.len() / 2];
    for (what, bad) in [("corrupt", &corrupt[..]), ("truncated", truncated)] {
        let body = push_body(old.trim(), &commit, "refs/heads/main", bad);
        let (status, answer) = post(&url, "application/x-git-receive-pack-request", &body);
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, 200, "{what}: {text}");
        assert!(
            text.contains("unpack ") && !text.contains("unpack ok"),
            "{what}: {text}"
        );
        assert!(text.contains("ng refs/heads/main"), "{what}: {text}");
        assert_eq!(
            ls_remote(&sb, &server.url("demo.git")),
            before,
            "{what} pack moved a ref"
        );
    }
    // The intact pack goes through.
    let body = push_body(old.trim(), &commit, "refs/heads/main", &pack);
    let (_, answer) = post(&url, "application/x-git-receive-pack-request", &body);
    assert!(String::from_utf8_lossy(&answer).contains("ok refs/heads/main"));
}

fn unconnected_push_is_refused(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server);
    let before = ls_remote(&sb, &server.url("demo.git"));
    let middle = sb.commit(&src, "b.txt", "b\n", "not pushed");
    let tip = sb.commit(&src, "c.txt", "c\n", "tip");
    // Only the tip's own objects: its parent (and b.txt's blob) are missing.
    let tree = sb.git(&src, &["rev-parse", "HEAD^{tree}"]);
    let blob = sb.git(&src, &["rev-parse", "HEAD:c.txt"]);
    let pack = pack_of(&sb, &src, &[&tip, tree.trim(), blob.trim()]);
    let body = push_body(ZERO, &tip, "refs/heads/feature", &pack);
    let (status, answer) = post(
        &server.url("demo.git/git-receive-pack"),
        "application/x-git-receive-pack-request",
        &body,
    );
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status, 200);
    assert!(text.contains("unpack ok"), "{text}");
    assert!(
        text.contains("ng refs/heads/feature missing necessary objects"),
        "{text}"
    );
    assert!(
        text.contains(&middle) || text.contains(sb.git(&src, &["rev-parse", "HEAD^:b.txt"]).trim()),
        "the message names a missing object: {text}"
    );
    assert_eq!(ls_remote(&sb, &server.url("demo.git")), before);
}

fn malformed_requests_get_errors(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    seeded(&sb, &server);
    let before = ls_remote(&sb, &server.url("demo.git"));
    let upload = server.url("demo.git/git-upload-pack");
    let receive = server.url("demo.git/git-receive-pack");
    for (url, body) in [
        (&upload, &b"zzzz"[..]),
        (
            &upload,
            b"0032want 0000000000000000000000000000000000000000",
        ),
        (&upload, b"0009want 0000"),
        (&receive, b"00zzjunk"),
        (&receive, b"0010short"),
        (&receive, b"0032not-an-id not-an-id refs/heads/main\n0000"),
    ] {
        let (status, answer) = post(url, "application/x-git-upload-pack-request", body);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            (400..500).contains(&status) || (status == 200 && text.contains("ERR ")),
            "{:?} got {status}: {text}",
            String::from_utf8_lossy(body)
        );
    }
    // A want of an object the repository does not have.
    let mut body = pkt(format!("want {} side-band-64k\n", "1".repeat(40)).as_bytes());
    body.extend_from_slice(b"00000009done\n");
    let (_, answer) = post(&upload, "application/x-git-upload-pack-request", &body);
    assert!(String::from_utf8_lossy(&answer).contains("ERR upload-pack: not our ref"));
    assert_eq!(ls_remote(&sb, &server.url("demo.git")), before);
}

fn missing_repositories_and_hostile_names(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    seeded(&sb, &server);
    let (status, _) = get(&server.url("nothing.git/info/refs?service=git-upload-pack"));
    assert_eq!(status, 404);
    let out = sb.git_output(sb.dir.path(), &["clone", &server.url("nothing.git"), "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    for hostile in [
        "../demo.git",
        "a/../demo.git",
        "%2e%2e/demo.git",
        "a/%2e%2e/%2e%2e/demo.git",
        "..%2fdemo.git",
        "demo%00.git",
        ".git",
        "/etc/passwd",
        "demo.git/../demo.git",
    ] {
        let url = format!(
            "{}/{hostile}/info/refs?service=git-upload-pack",
            server.base
        );
        let (status, body) = get(&url);
        assert!(
            status == 400 || status == 404,
            "{hostile}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    if let Backend::Fs(dir) = &backend {
        let mut entries: Vec<String> = std::fs::read_dir(dir.path())
            .expect("store dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [".access", "demo.git"],
            "nothing written outside the repository and the access state"
        );
    }
}

fn gzip_negotiation_and_chunked_push(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server);
    // A push larger than git's 1 MiB post buffer is sent chunked.
    let random = common::random_bytes(3_000_000, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(src.join("random.bin"), &random).expect("write");
    sb.git(&src, &["add", "random.bin"]);
    sb.git(&src, &["commit", "-q", "-m", "big binary"]);
    let out = sb
        .git_cmd(&src)
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .args(["push", &server.url("demo.git"), "main"])
        .output()
        .expect("push");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Transfer-Encoding: chunked"),
        "the push was sent chunked"
    );
    sb.git(
        sb.dir.path(),
        &["clone", "-q", &server.url("demo.git"), "copy"],
    );
    assert_eq!(
        std::fs::read(sb.path("copy/random.bin")).expect("read"),
        random
    );

    // A gzip-compressed negotiation request, as git sends for large ones.
    let head = sb.git(&src, &["rev-parse", "HEAD"]);
    let mut body = pkt(format!("want {} side-band-64k ofs-delta\n", head.trim()).as_bytes());
    body.extend_from_slice(b"00000009done\n");
    let mut gz = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    gz.stdin
        .take()
        .expect("stdin")
        .write_all(&body)
        .expect("write");
    let gzipped = gz.wait_with_output().expect("gzip").stdout;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("body.gz"), &gzipped).expect("write");
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-H", "Content-Encoding: gzip"])
        .args(["-H", "Content-Type: application/x-git-upload-pack-request"])
        .arg("--data-binary")
        .arg(format!("@{}", dir.path().join("body.gz").display()))
        .arg(server.url("demo.git/git-upload-pack"))
        .output()
        .expect("curl");
    let answer = out.stdout;
    assert!(
        answer.starts_with(b"0008NAK\n"),
        "{:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(100)])
    );
    assert!(answer.windows(4).any(|w| w == b"PACK"), "a pack follows");

    // A push over the server's size limit is refused and changes nothing.
    let strict = Server::start_with(&backend, &["--max-push-mb", "1"]);
    let before = ls_remote(&sb, &strict.url("demo.git"));
    sb.commit(&src, "more.bin", &"z".repeat(10), "small");
    std::fs::write(
        src.join("random2.bin"),
        random.iter().rev().copied().collect::<Vec<u8>>(),
    )
    .expect("write");
    sb.git(&src, &["add", "random2.bin"]);
    sb.git(&src, &["commit", "-q", "-m", "another big binary"]);
    let out = sb.git_output(&src, &["push", &strict.url("demo.git"), "main"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("larger than this server accepts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ls_remote(&sb, &strict.url("demo.git")), before);
}

fn a_pack_must_be_closed_over_the_repository(backend: Backend) {
    // A push whose pack also carries a commit with a missing parent is refused whole:
    // storing that commit would let a later push point a ref at it with no pack.
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server);
    let before = ls_remote(&sb, &server.url("demo.git"));
    let old = sb.git(&src, &["rev-parse", "HEAD"]);
    let good = sb.commit(&src, "good.txt", "good\n", "good");
    sb.git(&src, &["checkout", "-q", "-b", "side"]);
    sb.commit(&src, "hidden.txt", "hidden\n", "never sent");
    let dangling = sb.commit(&src, "dangling.txt", "dangling\n", "parent missing");
    let mut ids: Vec<String> = sb
        .git(
            &src,
            &["rev-list", "--objects", &format!("{}..main", old.trim())],
        )
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_owned())
        .collect();
    ids.push(dangling.clone());
    ids.push(
        sb.git(&src, &["rev-parse", "HEAD^{tree}"])
            .trim()
            .to_owned(),
    );
    ids.push(
        sb.git(&src, &["rev-parse", "HEAD:dangling.txt"])
            .trim()
            .to_owned(),
    );
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let pack = pack_of(&sb, &src, &ids);
    let body = push_body(old.trim(), &good, "refs/heads/main", &pack);
    let url = server.url("demo.git/git-receive-pack");
    let (_, answer) = post(&url, "application/x-git-receive-pack-request", &body);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("ng refs/heads/main missing necessary objects"),
        "{text}"
    );
    assert_eq!(ls_remote(&sb, &server.url("demo.git")), before);
    // Pointing a ref at the dangling commit with an empty pack finds nothing to use.
    let empty = pack_of(&sb, &src, &[]);
    let body = push_body(ZERO, &dangling, "refs/heads/x", &empty);
    let (_, answer) = post(&url, "application/x-git-receive-pack-request", &body);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.contains("ng refs/heads/x missing necessary objects"),
        "{text}"
    );
    assert_eq!(ls_remote(&sb, &server.url("demo.git")), before);
    sb.git(
        sb.dir.path(),
        &["clone", "-q", &server.url("demo.git"), "check"],
    );
}

fn refs_cannot_be_file_and_directory(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server);
    let url = server.url("demo.git");
    let out = sb.git_output(&src, &["push", &url, "main:refs/heads/main/sub"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refs/heads/main exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sb.git(&src, &["push", "-q", &url, "main:refs/heads/team/a"]);
    let out = sb.git_output(&src, &["push", &url, "main:refs/heads/team"]);
    assert!(!out.status.success());
    sb.git(sb.dir.path(), &["clone", "-q", &url, "check"]);

    // A shallow clone (made elsewhere) can push its new work.
    sb.git(
        sb.dir.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &format!("file://{}", src.display()),
            "shallow",
        ],
    );
    let shallow = sb.path("shallow");
    sb.commit(&shallow, "from-shallow.txt", "s\n", "from a shallow clone");
    sb.git(&shallow, &["push", "-q", &url, "HEAD:refs/heads/main"]);
    sb.git(sb.dir.path(), &["clone", "-q", &url, "after-shallow"]);
    assert!(sb.path("after-shallow/from-shallow.txt").exists());
}

fn v2_object_info(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server);
    let blob = sb.git(&src, &["rev-parse", "HEAD:a.txt"]);
    let blob = blob.trim();
    let size = sb.git(&src, &["cat-file", "-s", blob]);
    let unknown = "1".repeat(40);
    let mut body = pkt(b"command=object-info\n");
    body.extend_from_slice(b"0001");
    body.extend(pkt(b"size\n"));
    body.extend(pkt(format!("oid {blob}\n").as_bytes()));
    body.extend(pkt(format!("oid {unknown}\n").as_bytes()));
    body.extend_from_slice(b"0000");
    let (status, answer) = post_with(
        &server.url("demo.git/git-upload-pack"),
        "application/x-git-upload-pack-request",
        &body,
        &["Git-Protocol: version=2"],
    );
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("0009size\n"), "{text}");
    assert!(
        text.contains(&format!("{blob} {}\n", size.trim())),
        "{text}"
    );
    assert!(text.contains(&format!("{unknown} \n")), "{text}");
}

/// A push whose commands are in the other object format than the repository's is
/// refused by the server too (git's client refuses it first, from the advertisement).
fn other_format_push_is_refused(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = seeded(&sb, &server);
    let before = ls_remote(&sb, &server.url("demo.git"));
    let wide = "1".repeat(64);
    let zero = "0".repeat(64);
    let url = server.url("demo.git/git-receive-pack");
    for (caps, says) in [
        (
            "report-status object-format=sha256",
            "unsupported object format 'sha256'",
        ),
        ("report-status", "does not use object format sha1"),
        (
            "report-status object-format=md5",
            "unsupported object format 'md5'",
        ),
    ] {
        let mut body = pkt(format!("{zero} {wide} refs/heads/wide\0{caps}\n").as_bytes());
        body.extend_from_slice(b"0000");
        let (status, answer) = post(&url, "application/x-git-receive-pack-request", &body);
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, 200, "{caps}: {text}");
        assert!(text.contains(says), "{caps}: {text}");
    }
    assert_eq!(ls_remote(&sb, &server.url("demo.git")), before);
    let _ = src;
}
