//! Compaction, garbage collection and fsck, driven through `stowage serve`, the
//! `stowage gc` / `stowage fsck` commands and the real git client, on the filesystem
//! and S3 backends.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, Server, all_objects, stowage};

on_every_backend!(
    pushes_compact_in_the_background,
    gc_merges_and_deletes_only_old_unlisted_packs,
    pushes_racing_compactions_are_kept,
);

/// What `stowage fsck` says: (exit success, live packs, full output).
fn fsck(backend: &Backend, repo: &str) -> (bool, usize, String) {
    let out = stowage()
        .args(["fsck", repo, "--store", &backend.url()])
        .output()
        .expect("stowage fsck runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let packs = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{repo}: ")))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    (out.status.success(), packs, text)
}

/// Runs `stowage gc`; returns its output.
fn gc(backend: &Backend, repo: &str, extra: &[&str]) -> String {
    let out = stowage()
        .args(["gc", repo, "--store", &backend.url()])
        .args(extra)
        .output()
        .expect("stowage gc runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stowage gc failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `n` commits on main of `src`, each pushed on its own.
fn push_one_by_one(sb: &Sandbox, src: &Path, url: &str, n: usize, tag: &str) {
    for i in 0..n {
        sb.commit(
            src,
            &format!("d{}/f{}.txt", i % 3, i % 7),
            &format!("{tag} {i}\n"),
            &format!("{tag} {i}"),
        );
        sb.git(src, &["push", "-q", url, "main"]);
    }
}

/// The clone of `url` has every object of `src` and passes git's fsck.
fn assert_clone_matches(sb: &Sandbox, url: &str, src: &Path, name: &str) {
    sb.git(sb.dir.path(), &["clone", "-q", "--mirror", url, name]);
    let clone = sb.path(name);
    sb.git(&clone, &["fsck", "--full", "--strict"]);
    assert_eq!(all_objects(sb, &clone), all_objects(sb, src));
    assert_eq!(
        sb.git(&clone, &["rev-parse", "main"]),
        sb.git(src, &["rev-parse", "main"])
    );
}

fn pushes_compact_in_the_background(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    let url = server.url("busy.git");
    push_one_by_one(&sb, &src, &url, 48, "push");
    // Compaction runs after each push, in the background: wait for it to settle.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ok, packs, report) = loop {
        let (ok, packs, report) = fsck(&backend, "busy");
        if packs <= 6 || Instant::now() > deadline {
            break (ok, packs, report);
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert!(ok, "{report}");
    // 48 pushes of 3 to 6 objects: a geometric progression has at most about
    // log2(48) + 1 packs.
    assert!(packs <= 6, "{packs} live packs after 48 pushes:\n{report}");
    assert_clone_matches(&sb, &url, &src, "after");
    // Incremental fetches still work against the merged packs.
    push_one_by_one(&sb, &src, &url, 2, "more");
    let clone = sb.path("after");
    sb.git(&clone, &["fetch", "-q", "origin", "+main:main"]);
    assert_eq!(
        sb.git(&clone, &["rev-parse", "main"]),
        sb.git(&src, &["rev-parse", "main"])
    );
}

fn gc_merges_and_deletes_only_old_unlisted_packs(backend: Backend) {
    let server = Server::start_with(&backend, &["--no-background-compaction"]);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    let url = server.url("quiet.git");
    push_one_by_one(&sb, &src, &url, 6, "c");
    sb.git(&src, &["tag", "-a", "-m", "v1", "v1"]);
    sb.git(&src, &["push", "-q", &url, "v1"]);
    let (ok, packs, report) = fsck(&backend, "quiet");
    assert!(ok && packs == 7, "{report}");

    // Everything into one pack; the replaced packs are young, so all are kept.
    let out = gc(&backend, "quiet", &[]);
    assert!(out.contains("merged 7 packs"), "{out}");
    assert!(
        out.contains("deleted 0 unlisted pack files, kept 14"),
        "{out}"
    );
    let (ok, packs, report) = fsck(&backend, "quiet");
    assert!(ok && packs == 1, "{report}");
    assert_clone_matches(&sb, &url, &src, "one-pack");

    // With no grace, the 7 replaced packs (14 files) go; the listed pack stays.
    let out = gc(&backend, "quiet", &["--grace-secs", "0"]);
    assert!(out.contains("nothing to merge"), "{out}");
    assert!(
        out.contains("deleted 14 unlisted pack files, kept 0"),
        "{out}"
    );
    let (ok, packs, report) = fsck(&backend, "quiet");
    assert!(ok && packs == 1, "{report}");
    assert_clone_matches(&sb, &url, &src, "after-gc");
    // Nothing left to delete: gc never touches a listed pack.
    let out = gc(&backend, "quiet", &["--grace-secs", "0"]);
    assert!(
        out.contains("deleted 0 unlisted pack files, kept 0"),
        "{out}"
    );
    assert_clone_matches(&sb, &url, &src, "after-second-gc");
}

/// Pushes land while compactions (in the server and from `stowage gc` with a grace
/// period of a few seconds) replace the packs under them, and garbage collection deletes
/// the replaced ones: no push is lost, no listed pack is deleted.
fn pushes_racing_compactions_are_kept(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    let url = server.url("race.git");
    push_one_by_one(&sb, &src, &url, 4, "base");
    let base = sb.git(&src, &["rev-parse", "main"]).trim().to_owned();
    let writers = 3;
    let rounds = 6;
    thread::scope(|scope| {
        for w in 0..writers {
            let (sb, url, base) = (&sb, &url, &base);
            scope.spawn(move || {
                let repo = sb.path(&format!("w{w}"));
                sb.git(sb.dir.path(), &["clone", "-q", url, &format!("w{w}")]);
                sb.git(
                    &repo,
                    &["checkout", "-q", "-b", &format!("writer{w}"), base],
                );
                for i in 0..rounds {
                    sb.commit(&repo, &format!("w{w}.txt"), &format!("{i}\n"), "write");
                    sb.git(&repo, &["push", "-q", "origin", &format!("writer{w}")]);
                }
            });
        }
        let backend = &backend;
        let collector = scope.spawn(move || {
            let mut deleted = 0;
            for _ in 0..8 {
                let out = gc(backend, "race", &["--grace-secs", "3"]);
                deleted += out
                    .split("deleted ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .expect("gc says how many files it deleted");
                thread::sleep(Duration::from_millis(500));
            }
            deleted
        });
        let deleted = collector.join().expect("gc thread");
        assert!(
            deleted > 0,
            "garbage collection deleted nothing during the race"
        );
    });
    let (ok, _, report) = fsck(&backend, "race");
    assert!(ok, "{report}");
    // Quiet now: nothing is in flight, so no grace is needed.
    let out = gc(&backend, "race", &["--grace-secs", "0"]);
    assert!(out.contains("deleted"), "{out}");
    let (ok, packs, report) = fsck(&backend, "race");
    assert!(ok && packs == 1, "{report}");
    let clone = sb.path("check");
    sb.git(sb.dir.path(), &["clone", "-q", "--mirror", &url, "check"]);
    sb.git(&clone, &["fsck", "--full"]);
    for w in 0..writers {
        let pushed = sb.git(&sb.path(&format!("w{w}")), &["rev-parse", "HEAD"]);
        assert_eq!(
            sb.git(&clone, &["rev-parse", &format!("writer{w}")]),
            pushed,
            "writer {w}'s last push"
        );
    }
}

/// fsck finds damage: a changed byte in a pack, a missing index, a ref to an object
/// that is not there (filesystem only: the test edits the stored files directly).
#[test]
fn fsck_reports_damage() {
    let backend = Backend::fs();
    let Backend::Fs(dir) = &backend else {
        unreachable!()
    };
    let server = Server::start_with(&backend, &["--no-background-compaction"]);
    let sb = Sandbox::new();
    let src = sb.init_repo("src");
    let url = server.url("hurt.git");
    push_one_by_one(&sb, &src, &url, 3, "c");
    let (ok, _, report) = fsck(&backend, "hurt");
    assert!(ok, "{report}");
    drop(server);

    let packs = dir.path().join("hurt.git/packs");
    let mut files: Vec<_> = std::fs::read_dir(&packs)
        .expect("packs")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let pack = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .expect("a pack")
        .clone();
    let mut bytes = std::fs::read(&pack).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&pack, &bytes).expect("write");
    let (ok, _, report) = fsck(&backend, "hurt");
    assert!(!ok, "{report}");
    assert!(report.contains("checksum mismatch"), "{report}");
    bytes[middle] ^= 0x40;
    std::fs::write(&pack, &bytes).expect("restore");
    assert!(fsck(&backend, "hurt").0);

    let index = pack.with_extension("idx");
    let saved = std::fs::read(&index).expect("idx");
    std::fs::remove_file(&index).expect("remove");
    let (ok, _, report) = fsck(&backend, "hurt");
    assert!(!ok && report.contains("is missing"), "{report}");
    std::fs::write(&index, saved).expect("restore");

    let manifest_path = dir.path().join("hurt.git/manifest");
    let manifest = std::fs::read_to_string(&manifest_path).expect("manifest");
    let main = sb.git(&src, &["rev-parse", "main"]).trim().to_owned();
    let broken = manifest.replace(&main, &"e".repeat(40));
    std::fs::write(&manifest_path, broken).expect("write");
    let (ok, _, report) = fsck(&backend, "hurt");
    assert!(!ok, "{report}");
    assert!(
        report.contains(&format!(
            "ref refs/heads/main points to {}, which is missing",
            "e".repeat(40)
        )),
        "{report}"
    );
}
