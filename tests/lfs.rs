//! Git LFS end to end, with the real git and git-lfs clients on the filesystem and S3:
//! pushes and clones of tracked files, content proven by its hash, access, ranges and
//! hostile requests.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{Backend, Sandbox, Server, cli, stat, user};
use sha2::{Digest, Sha256};

on_every_backend!(
    tracked_files_push_and_clone,
    tracked_files_through_the_server,
    wrong_bytes_never_become_an_object,
    access_follows_the_repository,
    downloads_answer_ranges,
    hostile_batches_are_answered_in_place,
    locks_bind_their_holders_and_pushes,
    two_instances_race_for_locks,
    raw_files_by_path,
    resumable_uploads_resume,
    two_instances_race_for_an_upload,
    two_instances_race_to_resume_an_upload,
);

/// The size of the file of [`resumable_uploads_resume`], in MiB
/// (`STOWAGE_LFS_TUS_MB`, default 64; 6144 shows an object past S3's 5 GiB `PUT`).
fn tus_mb() -> usize {
    std::env::var("STOWAGE_LFS_TUS_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// The size of the large file of [`tracked_files_push_and_clone`], in MiB
/// (`STOWAGE_LFS_BIG_MB`, default 200).
fn big_mb() -> usize {
    std::env::var("STOWAGE_LFS_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Writes `len` bytes that do not compress to `path`, in 1 MiB steps.
fn write_random(path: &Path, len: usize, seed: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut left = len;
    let mut step = 0;
    while left > 0 {
        let n = left.min(1 << 20);
        file.write_all(&common::random_bytes(
            n,
            seed.wrapping_mul(1_000_003) + step,
        ))
        .expect("write");
        left -= n;
        step += 1;
    }
    file.flush().expect("flush");
}

fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("open");
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).expect("read");
    hex::encode(hasher.finalize())
}

fn oid_of(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// curl with `args`; returns (status, headers lower-cased, body).
fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--path-as-is", "-o", "-", "-D"])
        .arg(&headers)
        .args(args)
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read_to_string(&headers)
        .expect("headers")
        .to_lowercase();
    // The last response's status (curl may have followed a redirect).
    let status = head
        .lines()
        .rfind(|l| l.starts_with("http/"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, head, out.stdout)
}

/// A batch request to `repo_url` (a repository URL, with credentials or not).
fn batch(repo_url: &str, body: &str) -> (u16, String, serde_json::Value) {
    let (status, headers, body) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/vnd.git-lfs+json; charset=utf-8",
        "-H",
        "Accept: application/vnd.git-lfs+json",
        "--data-binary",
        body,
        &format!("{repo_url}/info/lfs/objects/batch"),
    ]);
    let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

/// A work tree tracking `*.bin` with LFS, its remote `origin` at `url`.
fn lfs_repo(sb: &Sandbox, name: &str, url: &str) -> std::path::PathBuf {
    let work = sb.init_repo(name);
    sb.git(&work, &["lfs", "track", "*.bin"]);
    sb.git(&work, &["remote", "add", "origin", url]);
    work
}

fn tracked_files_push_and_clone(backend: Backend) {
    push_and_clone(backend, big_mb(), &[]);
}

fn tracked_files_through_the_server(backend: Backend) {
    push_and_clone(backend, 20, &["--lfs-direct=false"]);
}

/// Pushes three tracked files (one of `big_mb` MiB) and clones them elsewhere. On S3,
/// unless `--lfs-direct=false` is among `flags`, their bytes go straight to the bucket.
fn push_and_clone(backend: Backend, big_mb: usize, flags: &[&str]) {
    let direct = matches!(backend, Backend::S3 { .. }) && !flags.contains(&"--lfs-direct=false");
    let server = Server::start_with(&backend, flags);
    let sb = Sandbox::with_lfs();
    let work = lfs_repo(&sb, "work", &server.url("data.git"));
    let sizes = [
        ("small.bin", 1000),
        ("medium.bin", 3 << 20),
        ("big.bin", big_mb << 20),
    ];
    for (i, (name, size)) in sizes.iter().enumerate() {
        write_random(&work.join(name), *size, i as u64 + 1);
    }
    std::fs::write(work.join("README"), "not tracked\n").expect("write");
    sb.git(&work, &["add", "-A"]);
    sb.git(&work, &["commit", "-q", "-m", "three large files"]);
    // What git stores is a pointer.
    let pointer = sb.git(&work, &["show", "HEAD:big.bin"]);
    assert!(
        pointer.starts_with("version https://git-lfs.github.com/spec/v1"),
        "{pointer}"
    );
    sb.git(&work, &["push", "-q", "-u", "origin", "main"]);
    let total: usize = sizes.iter().map(|(_, s)| s).sum();
    // Through the server, every byte passed it; direct, none did.
    let (through, links) = if direct { (0, 3) } else { (total as u64, 0) };
    assert_eq!(stat(&server, "lfs_bytes_received"), through);
    assert_eq!(stat(&server, "lfs_direct_uploads"), links);

    let clone = sb.path("clone");
    sb.git(
        &sb.path(""),
        &[
            "clone",
            "-q",
            &server.url("data.git"),
            clone.to_str().expect("utf-8"),
        ],
    );
    for (name, _) in sizes {
        assert_eq!(
            sha256_file(&clone.join(name)),
            sha256_file(&work.join(name)),
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).expect("read"),
        "not tracked\n"
    );
    let fsck = sb.git(&clone, &["lfs", "fsck"]);
    assert!(fsck.contains("Git LFS fsck OK"), "{fsck}");
    sb.git(&clone, &["lfs", "fetch", "--all"]);
    assert_eq!(stat(&server, "lfs_bytes_sent"), through);
    if direct {
        assert!(stat(&server, "lfs_direct_downloads") >= 3);
    }

    // A second push of the same objects sends nothing.
    sb.commit(&work, "README", "changed\n", "no new objects");
    sb.git(&work, &["push", "-q", "origin", "main"]);
    assert_eq!(stat(&server, "lfs_bytes_received"), through);
    assert_eq!(stat(&server, "lfs_direct_uploads"), links);
}

/// The first object's action `name` in a batch answer: its URL and headers.
fn action(answer: &serde_json::Value, name: &str) -> (String, Vec<String>) {
    let action = &answer["objects"][0]["actions"][name];
    let href = action["href"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {answer}"));
    let headers = action["header"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().expect("a header value")))
                .collect()
        })
        .unwrap_or_default();
    (href.to_owned(), headers)
}

/// `headers` as curl arguments, then `args`.
fn with_headers<'a>(headers: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    let mut all: Vec<&str> = headers.iter().flat_map(|h| ["-H", h.as_str()]).collect();
    all.extend_from_slice(args);
    all
}

#[test]
fn s3_presigned_uploads_refuse_other_bytes() {
    common::on_s3(|backend| {
        let server = Server::start(&backend);
        cli(&backend, &["repo", "create", "data"]);
        let repo_url = server.url("data.git");
        let dir = tempfile::tempdir().expect("temp dir");
        let real = common::random_bytes(300_000, 11);
        let oid = oid_of(&real);
        let real_arg = format!("@{}", dir.path().join("real").display());
        std::fs::write(dir.path().join("real"), &real).expect("write");
        let mut fake = real.clone();
        fake[1000] ^= 1;
        let fake_arg = format!("@{}", dir.path().join("fake").display());
        std::fs::write(dir.path().join("fake"), &fake).expect("write");
        let upload = format!(
            r#"{{"operation":"upload","objects":[{{"oid":"{oid}","size":{}}}]}}"#,
            real.len()
        );
        let download = upload.replace("upload", "download");
        let (status, _, answer) = batch(&repo_url, &upload);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["objects"][0]["authenticated"], true, "{answer}");
        let (href, headers) = action(&answer, "upload");
        let endpoint = stowage_s3::testing::endpoint();
        assert!(
            href.starts_with(&endpoint),
            "straight to the bucket: {href}"
        );
        let query = href.split_once('?').expect("a signed query").1;
        assert!(
            !query
                .split('&')
                .any(|p| p.to_lowercase().starts_with("x-amz-checksum")),
            "the checksum is not a query parameter (S3 ignores it there): {href}"
        );
        assert!(
            query.contains("X-Amz-SignedHeaders=content-length%3Bhost%3Bx-amz-checksum-sha256"),
            "length and checksum are signed headers: {href}"
        );
        assert!(
            headers
                .iter()
                .any(|h| h.starts_with("x-amz-checksum-sha256: ")),
            "{headers:?}"
        );
        assert!(
            !headers
                .iter()
                .any(|h| h.to_lowercase().starts_with("authorization")),
            "a link to the store never carries the client's credentials"
        );

        // The same length, one bit changed: S3 refuses it.
        let put = |headers: &[String], body: &str, url: &str| {
            curl(&with_headers(
                headers,
                &["-X", "PUT", "--data-binary", body, url],
            ))
            .0
        };
        assert_eq!(put(&headers, &fake_arg, &href), 400, "a wrong checksum");
        assert_eq!(put(&[], &fake_arg, &href), 403, "without the signed header");
        let forged = href.replace("X-Amz-Signature=", "X-Amz-Signature=0");
        assert_eq!(put(&headers, &real_arg, &forged), 403, "a forged signature");
        let (_, _, answer) = batch(&repo_url, &download);
        assert_eq!(
            answer["objects"][0]["error"]["code"], 404,
            "never served: {answer}"
        );
        let (verify_href, verify_headers) = action(&batch(&repo_url, &upload).2, "verify");
        let verify_body = format!(r#"{{"oid":"{oid}","size":{}}}"#, real.len());
        let verify = |extra: &[&str]| {
            let mut args = vec![
                "-X",
                "POST",
                "-H",
                "Content-Type: application/vnd.git-lfs+json",
                "--data-binary",
                &verify_body,
                &verify_href,
            ];
            args.extend_from_slice(extra);
            curl(&with_headers(&verify_headers, &args)).0
        };
        assert_eq!(verify(&[]), 404, "nothing there to verify");

        // The right bytes are taken, verified, and served from the bucket.
        assert_eq!(put(&headers, &real_arg, &href), 200);
        assert_eq!(verify(&[]), 200);
        let (_, _, again) = batch(&repo_url, &upload);
        assert!(
            again["objects"][0]["actions"].is_null(),
            "nothing to send: {again}"
        );
        let (_, _, answer) = batch(&repo_url, &download);
        let (href, _) = action(&answer, "download");
        assert!(href.starts_with(&endpoint), "{href}");
        let (status, _, got) = curl(&[&href]);
        assert!(status == 200 && got == real);
        assert_eq!(stat(&server, "lfs_bytes_received"), 0);
        assert_eq!(stat(&server, "lfs_bytes_sent"), 0);

        // An object that does not match its oid (written around the server) fails
        // verification and is deleted.
        let bad = oid_of(b"what the oid promises");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let Backend::S3 { bucket } = &backend else {
            unreachable!()
        };
        let key = format!("data.git/lfs/objects/{}/{}/{bad}", &bad[..2], &bad[2..4]);
        runtime.block_on(async {
            stowage_s3::testing::client()
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(b"something else".to_vec().into())
                .send()
                .await
                .expect("put around the server");
        });
        let bad_body = format!(r#"{{"oid":"{bad}","size":14}}"#);
        let (status, _, body) = curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/vnd.git-lfs+json",
            "--data-binary",
            &bad_body,
            &format!("{repo_url}/info/lfs/verify"),
        ]);
        assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
        let (_, _, answer) = batch(
            &repo_url,
            &bad_body
                .replace(r#"{"oid""#, r#"{"operation":"download","objects":[{"oid""#)
                .replace("14}", "14}]}"),
        );
        assert_eq!(
            answer["objects"][0]["error"]["code"], 404,
            "deleted: {answer}"
        );
    });
}

fn wrong_bytes_never_become_an_object(backend: Backend) {
    let server = Server::start(&backend);
    cli(&backend, &["repo", "create", "data"]);
    let real = b"the real content of the object";
    let oid = oid_of(real);
    let object_url = server.url(&format!("data.git/info/lfs/objects/{oid}"));
    let (status, _, body) = curl(&["-X", "PUT", "--data-binary", "tampered bytes", &object_url]);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    let message: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert!(
        message["message"]
            .as_str()
            .expect("a message")
            .contains("does not match"),
        "{message}"
    );
    let (status, _, _) = curl(&[&object_url]);
    assert_eq!(status, 404, "never served");
    let request = format!(
        r#"{{"operation":"download","objects":[{{"oid":"{oid}","size":{}}}]}}"#,
        real.len()
    );
    let (_, _, answer) = batch(&server.url("data.git"), &request);
    assert_eq!(answer["objects"][0]["error"]["code"], 404, "{answer}");

    // The right bytes are taken.
    let (status, _, _) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        std::str::from_utf8(real).expect("text"),
        &object_url,
    ]);
    assert_eq!(status, 200);
    let (status, _, got) = curl(&[&object_url]);
    assert_eq!((status, got.as_slice()), (200, &real[..]));
}

fn access_follows_the_repository(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::with_lfs();
    let work = lfs_repo(&sb, "work", &server.url("secret.git"));
    write_random(&work.join("weights.bin"), 100_000, 7);
    sb.git(&work, &["add", "-A"]);
    sb.git(&work, &["commit", "-q", "-m", "private weights"]);
    sb.git(&work, &["push", "-q", "-u", "origin", "main"]);
    let oid = sha256_file(&work.join("weights.bin"));
    let download =
        format!(r#"{{"operation":"download","objects":[{{"oid":"{oid}","size":100000}}]}}"#);

    // Anonymous: 401 with the challenge git-lfs answers with its credential helper.
    let (status, headers, body) = batch(&server.anon_url("secret.git"), &download);
    assert_eq!(status, 401, "{body}");
    assert!(headers.contains("lfs-authenticate: basic"), "{headers}");
    assert!(body["message"].is_string(), "{body}");
    let (status, _, _) = curl(&[&server.anon_url(&format!("secret.git/info/lfs/objects/{oid}"))]);
    assert_eq!(status, 401);

    // The credential helper flow: a clone from a URL without credentials.
    let token = common::admin_token(&backend);
    let store = sb.path("credentials");
    let host = server.anon_base.trim_start_matches("http://");
    std::fs::write(&store, format!("http://admin:{token}@{host}\n")).expect("write");
    let helper = format!("store --file={}", store.display());
    let clone = sb.path("clone");
    sb.git(
        &sb.path(""),
        &[
            "-c",
            &format!("credential.helper={helper}"),
            "clone",
            "-q",
            &server.anon_url("secret.git"),
            clone.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(sha256_file(&clone.join("weights.bin")), oid);

    // A reader downloads; a read-only token cannot upload, whatever its grant.
    let reader = user(&backend, "reader", Some(("secret", "read")));
    let (status, _, answer) = batch(&server.url_as("reader", &reader, "secret.git"), &download);
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["objects"][0]["actions"]["download"].is_object(),
        "{answer}"
    );
    let upload = download.replace("download", "upload");
    let (status, _, answer) = batch(&server.url_as("reader", &reader, "secret.git"), &upload);
    assert_eq!(status, 403, "{answer}");
    cli(&backend, &["user", "add", "writer"]);
    cli(&backend, &["repo", "grant", "secret", "writer", "write"]);
    let read_only = cli(&backend, &["token", "create", "writer", "--read-only"]);
    let ro_url = server.url_as("writer", read_only.trim(), "secret.git");
    let (status, _, answer) = batch(&ro_url, &upload);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .expect("message")
            .contains("read-only"),
        "{answer}"
    );
    let new = b"new content";
    let (status, _, _) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        "new content",
        &format!("{ro_url}/info/lfs/objects/{}", oid_of(new)),
    ]);
    assert_eq!(status, 403);
    // And git lfs says so when a push with such a token sends an object.
    let ro_work = sb.path("ro-work");
    sb.git(
        &sb.path(""),
        &["clone", "-q", &ro_url, ro_work.to_str().expect("utf-8")],
    );
    write_random(&ro_work.join("more.bin"), 5000, 9);
    sb.git(&ro_work, &["add", "-A"]);
    sb.git(&ro_work, &["commit", "-q", "-m", "more"]);
    let out = sb.git_output(&ro_work, &["push", "origin", "main"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("403") || stderr.contains("read-only"),
        "{stderr}"
    );

    // Guessing tokens: after a few wrong ones, 429 with Retry-After (git-lfs waits and
    // retries); the real token still passes meanwhile.
    let guess = server.url_as("admin", "stw_guessed", "secret.git");
    let mut last = (0, String::new());
    for _ in 0..15 {
        let (status, headers, _) = batch(&guess, &download);
        last = (status, headers);
        if status == 429 {
            break;
        }
        assert_eq!(status, 401);
    }
    assert_eq!(last.0, 429, "{}", last.1);
    assert!(last.1.contains("retry-after: "), "{}", last.1);
    let (status, _, answer) = batch(&server.url_as("reader", &reader, "secret.git"), &download);
    assert_eq!(status, 200, "{answer}");
}

fn downloads_answer_ranges(backend: Backend) {
    let server = Server::start(&backend);
    let content = common::random_bytes(10_000, 3);
    let oid = oid_of(&content);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("object");
    std::fs::write(&file, &content).expect("write");
    let url = server.url(&format!("data.git/info/lfs/objects/{oid}"));
    let (status, _, _) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", file.display()),
        &url,
    ]);
    assert_eq!(status, 200);

    let (status, headers, body) = curl(&["-H", "Range: bytes=100-199", &url]);
    assert_eq!(status, 206);
    assert_eq!(body, &content[100..200]);
    assert!(
        headers.contains("content-range: bytes 100-199/10000"),
        "{headers}"
    );
    let (status, _, body) = curl(&["-H", "Range: bytes=9990-", &url]);
    assert_eq!((status, body.as_slice()), (206, &content[9990..]));
    // An end past any size is the end of the object.
    let (status, _, body) = curl(&["-H", "Range: bytes=9000-18446744073709551615", &url]);
    assert_eq!((status, body.as_slice()), (206, &content[9000..]));
    let (status, headers, _) = curl(&["-H", "Range: bytes=20000-", &url]);
    assert_eq!(status, 416);
    assert!(
        headers.contains("content-range: bytes */10000"),
        "{headers}"
    );
    let (status, headers, _) = curl(&["-I", &url]);
    assert_eq!(status, 200);
    assert!(headers.contains("content-length: 10000"), "{headers}");
    assert!(headers.contains(&format!("etag: \"{oid}\"")), "{headers}");
}

fn hostile_batches_are_answered_in_place(backend: Backend) {
    let server = Server::start_with(
        &backend,
        &["--lfs-max-object-mb", "1", "--lfs-max-locks", "2"],
    );
    cli(&backend, &["repo", "create", "data"]);
    let url = server.url("data.git");
    // A repository holds a bounded number of locks.
    let lock = |path: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/vnd.git-lfs+json",
            "--data-binary",
            &format!(r#"{{"path":"{path}"}}"#),
            &format!("{url}/info/lfs/locks"),
        ])
    };
    assert_eq!(lock("one.bin").0, 201);
    assert_eq!(lock("two.bin").0, 201);
    let (status, _, body) = lock("three.bin");
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("2 locks"));
    let good = oid_of(b"x");
    let objects = format!(
        r#"[{{"oid":"../../../../etc/passwd","size":1}},{{"oid":"{}","size":1}},{{"oid":"{good}","size":-5}},{{"oid":"{good}","size":2097152}},{{"oid":"{good}","size":1}}]"#,
        good.to_uppercase()
    );
    let (status, _, answer) = batch(
        &url,
        &format!(r#"{{"operation":"upload","objects":{objects}}}"#),
    );
    assert_eq!(status, 200, "{answer}");
    let codes: Vec<_> = answer["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o["error"]["code"].as_u64())
        .collect();
    assert_eq!(
        codes,
        [Some(422), Some(422), Some(422), Some(422), None],
        "{answer}"
    );

    let (status, _, answer) = batch(&url, r#"{"operation":"destroy","objects":[]}"#);
    assert_eq!(status, 422, "{answer}");
    // Lock routes with no id.
    for path in ["locks/unlock", "locks//unlock"] {
        let (status, _, _) = curl(&["-X", "POST", &format!("{url}/info/lfs/{path}")]);
        assert_eq!(status, 404, "{path}");
    }
    // A download from a repository that does not exist.
    let (status, _, answer) = batch(
        &server.url("nothing-here.git"),
        &format!(r#"{{"operation":"download","objects":[{{"oid":"{good}","size":1}}]}}"#),
    );
    assert_eq!(status, 404, "{answer}");
    assert!(answer["message"].is_string(), "{answer}");
    let (status, _, _) = batch(&url, "not json");
    assert_eq!(status, 422);
    let (status, _, answer) = batch(
        &url,
        &format!(
            r#"{{"operation":"download","hash_algo":"sha512","objects":[{{"oid":"{good}","size":1}}]}}"#
        ),
    );
    assert_eq!(
        (status, answer["objects"][0]["error"]["code"].as_u64()),
        (200, Some(409))
    );
    let many: Vec<String> = (0..1001)
        .map(|_| format!(r#"{{"oid":"{good}","size":1}}"#))
        .collect();
    let (status, _, _) = batch(
        &url,
        &format!(
            r#"{{"operation":"download","objects":[{}]}}"#,
            many.join(",")
        ),
    );
    assert_eq!(status, 413, "too many objects");
    let huge = format!(
        r#"{{"operation":"download","objects":[],"pad":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("body");
    std::fs::write(&body, huge).expect("write");
    let (status, _, _) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/vnd.git-lfs+json",
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("{url}/info/lfs/objects/batch"),
    ]);
    assert_eq!(status, 413, "an oversized body");
    let (status, _, _) = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/x-www-form-urlencoded",
        "--data-binary",
        r#"{"operation":"download","objects":[]}"#,
        &format!("{url}/info/lfs/objects/batch"),
    ]);
    assert_eq!(status, 415, "not JSON by its type");
    for path in [
        "objects/../../../manifest",
        "objects/..%2F..%2Fmanifest",
        &format!("objects/{}", good.to_uppercase()),
    ] {
        let (status, _, _) = curl(&[&format!("{url}/info/lfs/{path}")]);
        assert_eq!(status, 422, "{path}");
        let (status, _, _) = curl(&[
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &format!("{url}/info/lfs/{path}"),
        ]);
        assert_eq!(status, 422, "{path}");
    }
    // An object over the largest size is refused as it streams.
    let big = vec![7u8; 2 << 20];
    let file = dir.path().join("big");
    std::fs::write(&file, &big).expect("write");
    let (status, _, _) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{url}/info/lfs/objects/{}", oid_of(&big)),
    ]);
    assert_eq!(status, 413);
}

/// A clone of `url` at `name`, with the remote's credentials in its URL.
fn clone_as(sb: &Sandbox, url: &str, name: &str) -> std::path::PathBuf {
    let path = sb.path(name);
    sb.git(
        &sb.path(""),
        &["clone", "-q", url, path.to_str().expect("utf-8")],
    );
    path
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn locks_bind_their_holders_and_pushes(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::with_lfs();
    let work = lfs_repo(&sb, "work", &server.url("team.git"));
    for (i, name) in ["a.bin", "b.bin", "c.bin"].iter().enumerate() {
        write_random(&work.join(name), 2000, i as u64 + 20);
    }
    sb.git(&work, &["add", "-A"]);
    sb.git(&work, &["commit", "-q", "-m", "assets"]);
    sb.git(&work, &["push", "-q", "-u", "origin", "main"]);
    let alice = user(&backend, "alice", Some(("team", "write")));
    let bob = user(&backend, "bob", Some(("team", "write")));
    let a = clone_as(&sb, &server.url_as("alice", &alice, "team.git"), "alice");
    let b = clone_as(&sb, &server.url_as("bob", &bob, "team.git"), "bob");

    let locked = sb.git(&a, &["lfs", "lock", "a.bin"]);
    assert!(locked.contains("Locked a.bin"), "{locked}");
    sb.git(&a, &["lfs", "lock", "c.bin"]);
    let listed = sb.git(&b, &["lfs", "locks"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("a.bin") && l.contains("alice")),
        "{listed}"
    );
    let by_path = sb.git(&b, &["lfs", "locks", "--path", "c.bin"]);
    assert_eq!(by_path.lines().count(), 1, "{by_path}");

    // Bob can neither take, nor release, nor force alice's lock.
    let out = sb.git_output(&b, &["lfs", "lock", "a.bin"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("alice"), "{}", stderr_of(&out));
    let out = sb.git_output(&b, &["lfs", "unlock", "a.bin"]);
    assert!(!out.status.success(), "not his lock");
    let out = sb.git_output(&b, &["lfs", "unlock", "--force", "a.bin"]);
    assert!(!out.status.success(), "bob is no admin");
    assert!(stderr_of(&out).contains("admin"), "{}", stderr_of(&out));

    // A push that changes a.bin is refused by the server, with who holds the lock
    // (git-lfs's own check, which would stop it first, is off here)...
    write_random(&b.join("a.bin"), 2000, 99);
    sb.git(&b, &["commit", "-q", "-am", "bob changes a locked file"]);
    let out = sb.git_output(
        &b,
        &["-c", "lfs.locksverify=false", "push", "origin", "main"],
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("a.bin is locked by alice"),
        "{}",
        stderr_of(&out)
    );
    // ...and by git-lfs itself, which asks the server which locks are someone else's.
    let out = sb.git_output(&b, &["push", "origin", "main"]);
    assert!(!out.status.success());
    // Nor does it get in another way: its commit sent along with another branch's
    // (which lands, and with it the pack), then main set to it with no new objects.
    let locked_change = sb.git(&b, &["rev-parse", "HEAD"]).trim().to_owned();
    sb.git(&b, &["checkout", "-q", "-b", "side", "origin/main"]);
    sb.commit(&b, "side.txt", "side\n", "a side branch");
    let out = sb.git_output(
        &b,
        &[
            "-c",
            "lfs.locksverify=false",
            "push",
            "origin",
            "side",
            "main",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("a.bin is locked by alice"),
        "{}",
        stderr_of(&out)
    );
    let old_main = sb.git(&b, &["rev-parse", "origin/main"]).trim().to_owned();
    let empty = common::pack_of(&sb, &b, &[]);
    let body = common::push_body(&old_main, &locked_change, "refs/heads/main", &empty);
    let (status, answer) = common::post(
        &server.url_as("bob", &bob, "team.git/git-receive-pack"),
        "application/x-git-receive-pack-request",
        &body,
    );
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("a.bin is locked by alice"), "{text}");
    sb.git(&b, &["checkout", "-q", "main"]);
    sb.git(&b, &["reset", "-q", "--hard", "origin/main"]);
    // Files nobody locked are pushed as ever.
    write_random(&b.join("b.bin"), 2000, 98);
    sb.git(&b, &["commit", "-q", "-am", "bob changes b"]);
    sb.git(
        &b,
        &[
            "-c",
            "lfs.locksverify=false",
            "push",
            "-q",
            "origin",
            "main",
        ],
    );

    // The holder pushes the locked file, and releases a lock herself.
    sb.git(&a, &["pull", "-q", "--rebase"]);
    write_random(&a.join("a.bin"), 2000, 97);
    sb.git(&a, &["commit", "-q", "-am", "alice changes her file"]);
    sb.git(&a, &["push", "-q", "origin", "main"]);
    sb.git(&a, &["lfs", "unlock", "c.bin"]);

    // A repository admin forces the last one; then bob may change the file.
    let out = sb.git(&work, &["lfs", "unlock", "--force", "a.bin"]);
    assert!(out.contains("Unlocked a.bin"), "{out}");
    assert!(sb.git(&b, &["lfs", "locks"]).trim().is_empty());
    sb.git(&b, &["pull", "-q", "--rebase"]);
    write_random(&b.join("a.bin"), 2000, 96);
    sb.git(&b, &["commit", "-q", "-am", "bob changes a"]);
    sb.git(&b, &["push", "-q", "origin", "main"]);
}

fn two_instances_race_for_locks(backend: Backend) {
    let one = Server::start(&backend);
    let two = Server::start(&backend);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    sb.commit(&src, "f.txt", "x\n", "first");
    sb.git(&src, &["push", "-q", &one.url("race.git"), "main"]);
    let alice = user(&backend, "alice", Some(("race", "write")));
    let bob = user(&backend, "bob", Some(("race", "write")));
    let create = |server: &Server, user: &str, token: &str, path: &str| {
        curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/vnd.git-lfs+json",
            "--data-binary",
            &format!(r#"{{"path":"{path}"}}"#),
            &server.url_as(user, token, "race.git/info/lfs/locks"),
        ])
    };
    let paths: Vec<String> = (0..16).map(|i| format!("data/file-{i}.bin")).collect();
    let (from_one, from_two) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            paths
                .iter()
                .map(|p| create(&one, "alice", &alice, p))
                .collect::<Vec<_>>()
        });
        let b = s.spawn(|| {
            paths
                .iter()
                .map(|p| create(&two, "bob", &bob, p))
                .collect::<Vec<_>>()
        });
        (a.join().expect("alice"), b.join().expect("bob"))
    });
    for (i, ((sa, _, ba), (sb_, _, bb))) in from_one.iter().zip(&from_two).enumerate() {
        let mut statuses = [*sa, *sb_];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "path {i}: exactly one gets it");
        let (won, lost) = if *sa == 201 { (ba, bb) } else { (bb, ba) };
        let won: serde_json::Value = serde_json::from_slice(won).expect("JSON");
        let lost: serde_json::Value = serde_json::from_slice(lost).expect("JSON");
        assert_eq!(
            won["lock"]["id"], lost["lock"]["id"],
            "the loser is shown the winner's lock"
        );
    }
    let (status, _, listed) =
        curl(&[&one.url_as("alice", &alice, "race.git/info/lfs/locks?limit=10")]);
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&listed).expect("JSON");
    assert_eq!(listed["locks"].as_array().expect("locks").len(), 10);
    let cursor = listed["next_cursor"].as_str().expect("a next page");
    let (_, _, rest) = curl(&[&two.url_as(
        "bob",
        &bob,
        &format!("race.git/info/lfs/locks?limit=10&cursor={cursor}"),
    )]);
    let rest: serde_json::Value = serde_json::from_slice(&rest).expect("JSON");
    assert_eq!(rest["locks"].as_array().expect("locks").len(), 6);
    assert!(rest["next_cursor"].is_null());
}

fn raw_files_by_path(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::with_lfs();
    let work = lfs_repo(&sb, "work", &server.url("models.git"));
    std::fs::create_dir_all(work.join("data")).expect("dir");
    write_random(&work.join("data/model.bin"), 100_000, 5);
    std::fs::write(work.join("README"), "version one of the readme\n").expect("write");
    sb.git(&work, &["add", "-A"]);
    sb.git(&work, &["commit", "-q", "-m", "first"]);
    sb.git(&work, &["tag", "v1"]);
    let first = sb.git(&work, &["rev-parse", "HEAD"]).trim().to_owned();
    sb.git(&work, &["checkout", "-q", "-b", "feature/x"]);
    std::fs::write(
        work.join("README"),
        "version two, on a branch with a slash\n",
    )
    .expect("write");
    write_random(&work.join("data/model.bin"), 50_000, 6);
    sb.git(&work, &["commit", "-q", "-am", "second"]);
    sb.git(&work, &["push", "-q", "origin", "main", "feature/x", "v1"]);
    let model_v1 = {
        sb.git(&work, &["checkout", "-q", "main"]);
        std::fs::read(work.join("data/model.bin")).expect("read")
    };
    let raw = |spec: &str| server.url(&format!("models.git/raw/{spec}"));

    let (status, headers, body) = curl(&[&raw("main/README")]);
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"version one of the readme\n"[..])
    );
    let blob = sb
        .git(&work, &["rev-parse", "main:README"])
        .trim()
        .to_owned();
    assert!(headers.contains(&format!("etag: \"{blob}\"")), "{headers}");
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    let (_, _, body) = curl(&[&raw("feature/x/README")]);
    assert_eq!(body, b"version two, on a branch with a slash\n");
    let (_, _, body) = curl(&[&raw(&format!("{first}/README"))]);
    assert_eq!(body, b"version one of the readme\n");
    let (status, _, body) = curl(&["-H", "Range: bytes=8-10", &raw("v1/README")]);
    assert_eq!((status, body.as_slice()), (206, &b"one"[..]));

    // A tracked file is its LFS object (on S3, by a redirect to the bucket).
    let oid = hex::encode(Sha256::digest(&model_v1));
    let (status, headers, _) = curl(&[&raw("main/data/model.bin")]);
    if matches!(backend, Backend::S3 { .. }) {
        assert_eq!(status, 302, "{headers}");
        assert!(headers.contains(&format!("location: {}", stowage_s3::testing::endpoint())));
    } else {
        assert_eq!(status, 200);
    }
    assert!(headers.contains(&format!("etag: \"{oid}\"")), "{headers}");
    for spec in [
        "main/data/model.bin",
        "v1/data/model.bin",
        &format!("{first}/data/model.bin"),
    ] {
        let (status, _, body) = curl(&["-L", &raw(spec)]);
        assert!(status == 200 && body == model_v1, "{spec}: {status}");
    }
    let (status, _, body) = curl(&[
        "-L",
        "-H",
        "Range: bytes=1000-1999",
        &raw("v1/data/model.bin"),
    ]);
    assert_eq!((status, body.as_slice()), (206, &model_v1[1000..2000]));
    let (_, _, body) = curl(&["-L", &raw("feature/x/data/model.bin")]);
    assert_eq!(body.len(), 50_000);
    let (status, headers, _) = curl(&["-I", &raw("main/README")]);
    assert!(
        status == 200 && headers.contains("content-length: 26"),
        "{headers}"
    );
    let (status, _, _) = curl(&[
        "-H",
        &format!("If-None-Match: \"{blob}\""),
        &raw("main/README"),
    ]);
    assert_eq!(status, 304);

    // Clear answers for what is not there.
    for (spec, says) in [
        ("main/missing.txt", "missing.txt not found at main"),
        ("nope/README", "no branch, tag or commit"),
        ("main/data", "is a directory"),
        (
            &format!("{}/README", "0".repeat(40)),
            "no branch, tag or commit",
        ),
    ] {
        let (status, _, body) = curl(&[&raw(spec)]);
        assert_eq!(status, 404, "{spec}");
        assert!(
            String::from_utf8_lossy(&body).contains(says),
            "{spec}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The same access rules as git.
    let (status, _, _) = curl(&[&server.anon_url("models.git/raw/main/README")]);
    assert_eq!(status, 401);
}

fn resumable_uploads_resume(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::with_lfs();
    let work = lfs_repo(&sb, "work", &server.url("big.git"));
    let size = tus_mb() << 20;
    write_random(&work.join("huge.bin"), size, 42);
    sb.git(&work, &["add", "-A"]);
    sb.git(&work, &["commit", "-q", "-m", "one huge file"]);
    let oid = sha256_file(&work.join("huge.bin"));
    let started = std::time::Instant::now();

    // A first attempt is cut off about half way.
    let request = format!(
        r#"{{"operation":"upload","transfers":["basic","tus"],"objects":[{{"oid":"{oid}","size":{size}}}]}}"#
    );
    let (status, _, answer) = batch(&server.url("big.git"), &request);
    assert_eq!(
        (status, answer["transfer"].as_str()),
        (200, Some("tus")),
        "{answer}"
    );
    let (href, headers) = action(&answer, "upload");
    let rate: usize = if size >= 1 << 30 { 256 << 20 } else { 16 << 20 };
    let seconds = size as f64 / 2.0 / rate as f64;
    let cut = Command::new("curl")
        .args(["-sS", "-X", "PATCH", "--limit-rate", &rate.to_string()])
        .args(["--max-time", &format!("{seconds:.2}")])
        .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
        .args(["-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0"])
        .args(["-H", "Content-Type: application/offset+octet-stream"])
        // -T streams the file (--data-binary would read all of it first).
        .arg("-T")
        .arg(work.join("huge.bin"))
        .arg(&href)
        .output()
        .expect("curl runs");
    assert!(!cut.status.success(), "the first attempt is cut off");
    let offset = || {
        let (status, head, _) = curl(&with_headers(
            &headers,
            &["-I", "-H", "Tus-Resumable: 1.0.0", &href],
        ));
        assert_eq!(status, 200, "{head}");
        head.lines()
            .find_map(|l| l.strip_prefix("upload-offset: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .expect("an Upload-Offset")
    };
    // The server may still be reading what it had buffered of the broken request, and
    // storing the last whole part of it: wait until it is done.
    for _ in 0..600 {
        if stat(&server, "lfs_resumable_uploads_running") == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(stat(&server, "lfs_resumable_uploads_running"), 0);
    let (stored, before) = (offset(), stat(&server, "lfs_bytes_received"));
    assert!(
        stored > 0 && stored < size,
        "part of it is stored: {stored} of {size}"
    );

    // git-lfs (lfs.tustransfers) asks where to go on, and sends only the rest.
    sb.git(
        &work,
        &[
            "-c",
            "lfs.tustransfers=true",
            "push",
            "-q",
            "-u",
            "origin",
            "main",
        ],
    );
    let sent = stat(&server, "lfs_bytes_received") - before;
    assert_eq!(sent, (size - stored) as u64, "resumed at {stored}");
    eprintln!(
        "resumable upload: {} MiB, cut at {} MiB, resumed and stored in {:.1} s",
        size >> 20,
        stored >> 20,
        started.elapsed().as_secs_f64()
    );

    if size > 1 << 30 {
        // Too big to keep twice more on disk (a clone holds it twice): the download is
        // hashed as it streams.
        std::fs::remove_file(work.join("huge.bin")).expect("remove");
        let script = format!(
            "curl -sSfL --path-as-is '{}/info/lfs/objects/{oid}' | sha256sum",
            server.url("big.git")
        );
        let out = Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh runs");
        let digest = String::from_utf8_lossy(&out.stdout);
        assert!(digest.starts_with(&oid), "{digest}");
        return;
    }
    let clone = sb.path("clone");
    sb.git(
        &sb.path(""),
        &[
            "clone",
            "-q",
            &server.url("big.git"),
            clone.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(sha256_file(&clone.join("huge.bin")), oid);
}

/// Two instances receive the same resumable upload at once: one advances it, the other
/// is refused (409) and leaves nothing behind; the object is whole.
fn two_instances_race_for_an_upload(backend: Backend) {
    let one = Server::start(&backend);
    let two = Server::start(&backend);
    let dir = tempfile::tempdir().expect("temp dir");
    let size = 40usize << 20;
    let data = common::random_bytes(size, 77);
    let file = dir.path().join("object");
    std::fs::write(&file, &data).expect("write");
    let oid = oid_of(&data);
    let (href, href_two, headers) = tus_links(&one, &two, &oid, size);
    assert_ne!(href, href_two, "{href}");
    // Slow enough that both have read the upload's state before either stores its
    // first part.
    let send = |href: &str| tus_patch(href, &headers, &file, 0, "8M").0;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| send(&href));
        let b = s.spawn(|| send(&href_two));
        (a.join().expect("one"), b.join().expect("two"))
    });
    let mut statuses = [a.clone(), b.clone()];
    statuses.sort();
    assert_eq!(statuses[1], "409", "one is refused: {a} {b}");
    assert_eq!(statuses[0], "204", "one stores it: {a} {b}");
    let (status, _, body) = curl(&with_headers(
        &[],
        &[&format!("{}/info/lfs/objects/{oid}", two.url("race.git"))],
    ));
    assert_eq!(status, 200);
    assert!(body == data, "the object is whole");
    if let Backend::Fs(root) = &backend {
        let uploads = walk_files(root.path())
            .into_iter()
            // (`.stowage-lock.` files are the filesystem store's own, empty.)
            .filter(|p| p.contains("lfs/uploads") && !p.contains("/.stowage-lock."))
            .collect::<Vec<_>>();
        assert!(uploads.is_empty(), "left behind: {uploads:?}");
    }
}

/// An upload stored in part is resumed by two instances at once: one goes on, the other
/// is refused (409) before it sends a part; the object is whole.
fn two_instances_race_to_resume_an_upload(backend: Backend) {
    let one = Server::start(&backend);
    let two = Server::start(&backend);
    let dir = tempfile::tempdir().expect("temp dir");
    let size = 48usize << 20;
    let data = common::random_bytes(size, 78);
    let oid = oid_of(&data);
    let (head, rest) = (dir.path().join("head"), dir.path().join("rest"));
    std::fs::write(&head, &data[..20 << 20]).expect("write");
    std::fs::write(&rest, &data[16 << 20..]).expect("write");
    let (href, href_two, headers) = tus_links(&one, &two, &oid, size);
    let send = |href: &str, file: &Path, offset: usize, rate: &str| {
        let (status, head) = tus_patch(href, &headers, file, offset, rate);
        format!("{head}{status}")
    };
    // A body that ends short of the object: one part is stored, and git-lfs is told
    // it is not done (it takes any 204 for done).
    let short = send(&href, &head, 0, "1G");
    assert!(short.ends_with("400"), "{short}");
    assert!(
        short.contains(&format!("upload-offset: {}", 16 << 20)),
        "{short}"
    );

    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| send(&href, &rest, 16 << 20, "8M"));
        let b = s.spawn(|| send(&href_two, &rest, 16 << 20, "8M"));
        (a.join().expect("one"), b.join().expect("two"))
    });
    let mut statuses = [a[a.len() - 3..].to_owned(), b[b.len() - 3..].to_owned()];
    statuses.sort();
    assert_eq!(statuses, ["204", "409"], "{a}\n{b}");
    let (status, _, body) = curl(&[&format!("{}/info/lfs/objects/{oid}", two.url("race.git"))]);
    assert_eq!(status, 200);
    assert!(body == data, "the object is whole");
}

/// The links of a tus upload of `oid` to `race.git` (created here) on servers `one`
/// and `two` of one store, and the headers to send with them.
fn tus_links(one: &Server, two: &Server, oid: &str, size: usize) -> (String, String, Vec<String>) {
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    sb.commit(&src, "f.txt", "x\n", "first");
    sb.git(&src, &["push", "-q", &one.url("race.git"), "main"]);
    let request = format!(
        r#"{{"operation":"upload","transfers":["tus"],"objects":[{{"oid":"{oid}","size":{size}}}]}}"#
    );
    let (status, _, answer) = batch(&one.url("race.git"), &request);
    assert_eq!(status, 200, "{answer}");
    let (href, headers) = action(&answer, "upload");
    let href_two = href.replace(&one.anon_base, &two.anon_base);
    (href, href_two, headers)
}

/// A tus PATCH of `file`, sent from `offset` at most at `rate` (curl's `--limit-rate`):
/// the status and the response head, in lowercase.
fn tus_patch(
    href: &str,
    headers: &[String],
    file: &Path,
    offset: usize,
    rate: &str,
) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "-w", "\n%{http_code}"])
        .args(["-X", "PATCH", "--limit-rate", rate])
        .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
        .args(["-H", "Tus-Resumable: 1.0.0"])
        .args(["-H", &format!("Upload-Offset: {offset}")])
        .args(["-H", "Content-Type: application/offset+octet-stream"])
        .arg("-T")
        .arg(file)
        .arg(href)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let (head, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().to_owned(), head.to_owned())
}

fn walk_files(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found
}
