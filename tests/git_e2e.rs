//! End to end: the real `git` client against `stowage serve`, on the filesystem and S3
//! backends.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::thread;

use common::{Backend, Sandbox, Server, all_objects, stat, stowage};

on_every_backend!(
    push_new_repository_and_ls_remote,
    clone_with_every_protocol_version,
    incremental_and_no_op_fetch,
    fast_forward_forced_and_deleting_pushes,
    clone_of_an_empty_repository,
    racing_pushes_lose_no_update,
    racing_pushes_through_two_servers,
    sixteen_concurrent_clones,
    atomic_pushes_options_tags_and_head,
    refs_by_name_and_session_ids,
    clones_through_a_local_pack_cache,
);

/// A source repository: main with 4 commits, feature branches `dev` and `topic/x`, a
/// lightweight tag `v0.1` and an annotated tag `v1.0`.
fn source_repo(sb: &Sandbox) -> std::path::PathBuf {
    let src = sb.init_repo("src");
    for i in 1..=4 {
        sb.commit(
            &src,
            &format!("dir{}/file{i}.txt", i % 2),
            &format!("content {i}\n"),
            &format!("commit {i}"),
        );
    }
    sb.git(&src, &["branch", "dev", "HEAD~2"]);
    sb.git(&src, &["checkout", "-q", "-b", "topic/x", "HEAD~1"]);
    sb.commit(&src, "topic.txt", "topic\n", "topic work");
    sb.git(&src, &["checkout", "-q", "main"]);
    sb.git(&src, &["tag", "v0.1", "HEAD~3"]);
    sb.git(&src, &["tag", "-a", "-m", "release 1.0", "v1.0", "HEAD~1"]);
    src
}

fn push_all(sb: &Sandbox, src: &Path, url: &str) {
    sb.git(
        src,
        &[
            "push",
            "-q",
            url,
            "refs/heads/*:refs/heads/*",
            "refs/tags/*:refs/tags/*",
        ],
    );
}

/// `git show-ref -d` style lines of a local repository: every ref and peeled tag.
fn local_refs(sb: &Sandbox, repo: &Path) -> BTreeSet<String> {
    sb.git(repo, &["show-ref", "-d"])
        .lines()
        .map(|l| l.replace(' ', "\t"))
        .collect()
}

fn ls_remote(sb: &Sandbox, cwd: &Path, url: &str, version: &str) -> BTreeSet<String> {
    sb.git(
        cwd,
        &[
            "-c",
            &format!("protocol.version={version}"),
            "ls-remote",
            url,
        ],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

fn push_new_repository_and_ls_remote(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = source_repo(&sb);
    let url = server.url("team/demo.git");
    push_all(&sb, &src, &url);

    let mut expected = local_refs(&sb, &src);
    let head = sb.git(&src, &["rev-parse", "main"]);
    expected.insert(format!("{}\tHEAD", head.trim()));
    for version in ["0", "2"] {
        assert_eq!(
            ls_remote(&sb, &src, &url, version),
            expected,
            "protocol v{version}"
        );
    }
    // The same repository without `.git` in the URL.
    assert_eq!(
        ls_remote(&sb, &src, &server.url("team/demo"), "2"),
        expected
    );
    let listed = stowage()
        .args(["repo", "list", "--store", &backend.url()])
        .output()
        .expect("repo list");
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "team/demo");
}

fn clone_with_every_protocol_version(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = source_repo(&sb);
    let url = server.url("demo.git");
    push_all(&sb, &src, &url);
    let source_objects = all_objects(&sb, &src);

    for version in ["0", "1", "2"] {
        let name = format!("clone-v{version}");
        sb.git(
            sb.dir.path(),
            &[
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                "-q",
                "--mirror",
                &url,
                &name,
            ],
        );
        let clone = sb.path(&name);
        sb.git(&clone, &["fsck", "--full", "--strict"]);
        assert_eq!(
            local_refs(&sb, &clone),
            local_refs(&sb, &src),
            "refs after a v{version} clone"
        );
        assert_eq!(
            all_objects(&sb, &clone),
            source_objects,
            "objects after a v{version} clone"
        );
    }
    // Progress reaches the user on side-band 2, only when asked for.
    for version in ["0", "2"] {
        let v = format!("protocol.version={version}");
        let loud = sb.git_output(
            sb.dir.path(),
            &[
                "-c",
                &v,
                "clone",
                "--progress",
                "--bare",
                &url,
                &format!("loud-{version}"),
            ],
        );
        assert!(
            String::from_utf8_lossy(&loud.stderr).contains("remote: Enumerating objects: "),
            "v{version}"
        );
        let quiet = sb.git_output(
            sb.dir.path(),
            &[
                "-c",
                &v,
                "clone",
                "-q",
                "--bare",
                &url,
                &format!("quiet-{version}"),
            ],
        );
        assert!(
            !String::from_utf8_lossy(&quiet.stderr).contains("remote:"),
            "v{version}"
        );
    }
    // An ordinary clone checks out HEAD's branch.
    sb.git(sb.dir.path(), &["clone", "-q", &url, "work"]);
    let branch = sb.git(&sb.path("work"), &["symbolic-ref", "HEAD"]);
    assert_eq!(branch.trim(), "refs/heads/main");
    assert_eq!(
        std::fs::read_to_string(sb.path("work/dir1/file3.txt")).expect("checked out"),
        "content 3\n"
    );
}

fn pack_count(repo: &Path) -> usize {
    std::fs::read_dir(repo.join(".git/objects/pack"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".pack"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// Number of objects in the newest pack of `repo`.
/// The objects in the newest pack of `repo`.
fn newest_pack_objects(sb: &Sandbox, repo: &Path) -> BTreeSet<String> {
    let dir = repo.join(".git/objects/pack");
    let newest = std::fs::read_dir(&dir)
        .expect("pack dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).expect("mtime"))
        .expect("a pack");
    let out = sb.git(
        repo,
        &["verify-pack", "-v", &newest.path().display().to_string()],
    );
    out.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let id = parts.next().filter(|id| id.len() == 40)?;
            let kind = parts.next()?;
            ["commit", "tree", "blob", "tag"]
                .contains(&kind)
                .then(|| id.to_owned())
        })
        .collect()
}

fn incremental_and_no_op_fetch(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = source_repo(&sb);
    let url = server.url("demo.git");
    push_all(&sb, &src, &url);

    for version in ["0", "2"] {
        let name = format!("clone-v{version}");
        sb.git(sb.dir.path(), &["clone", "-q", &url, &name]);
        let clone = sb.path(&name);
        let v = format!("protocol.version={version}");

        // A no-op fetch receives no pack.
        let before = pack_count(&clone);
        sb.git(
            &clone,
            &[
                "-c",
                &v,
                "-c",
                "fetch.unpackLimit=1",
                "fetch",
                "-q",
                "origin",
            ],
        );
        assert_eq!(
            pack_count(&clone),
            before,
            "no-op fetch (v{version}) wrote a pack"
        );

        // Two new commits touching one file each: 2 commits + 2 root trees + 2 subtrees
        // + 2 blobs travel, nothing else.
        let tip = {
            sb.commit(
                &src,
                &format!("dir0/new-{version}-a.txt"),
                &format!("a {version}\n"),
                "new a",
            );
            sb.commit(
                &src,
                &format!("dir1/new-{version}-b.txt"),
                &format!("b {version}\n"),
                "new b",
            )
        };
        sb.git(&src, &["push", "-q", &url, "main"]);
        let had: BTreeSet<String> = all_objects(&sb, &clone).into_iter().collect();
        sb.git(
            &clone,
            &[
                "-c",
                &v,
                "-c",
                "fetch.unpackLimit=1",
                "fetch",
                "-q",
                "origin",
            ],
        );
        assert_eq!(sb.git(&clone, &["rev-parse", "origin/main"]).trim(), tip);
        assert_eq!(pack_count(&clone), before + 1);
        // The pack is thin (trees sent as deltas on the client's trees): git completes
        // it with those bases, at most the 2 root trees and 2 subtrees the new ones
        // replace.
        let received = newest_pack_objects(&sb, &clone);
        assert_eq!(
            received.difference(&had).count(),
            8,
            "only the new objects travel (v{version})"
        );
        assert!(
            received.len() <= 8 + 4,
            "{} objects in the received pack (v{version})",
            received.len()
        );
        sb.git(&clone, &["fsck", "--full"]);
    }
}

fn fast_forward_forced_and_deleting_pushes(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = source_repo(&sb);
    let url = server.url("demo.git");
    push_all(&sb, &src, &url);
    let remote = |name: &str| {
        sb.git(&src, &["ls-remote", &url, name])
            .split('\t')
            .next()
            .unwrap_or("")
            .to_owned()
    };

    // Fast-forward.
    let ff = sb.commit(&src, "ff.txt", "ff\n", "fast-forward");
    sb.git(&src, &["push", "-q", &url, "main"]);
    assert_eq!(remote("refs/heads/main"), ff);

    // A non-fast-forward push is refused without --force, accepted with it.
    sb.git(&src, &["reset", "-q", "--hard", "HEAD~2"]);
    let rewritten = sb.commit(&src, "rewrite.txt", "r\n", "rewritten history");
    let refused = sb.git_output(&src, &["push", &url, "main"]);
    assert!(
        !refused.status.success(),
        "a non-fast-forward push needs --force"
    );
    assert_eq!(remote("refs/heads/main"), ff);
    sb.git(&src, &["push", "-q", "--force", &url, "main"]);
    assert_eq!(remote("refs/heads/main"), rewritten);

    // Deleting a branch and a tag.
    sb.git(&src, &["push", "-q", &url, ":dev", ":refs/tags/v1.0"]);
    let refs = ls_remote(&sb, &src, &url, "2");
    assert!(
        !refs.iter().any(|l| l.ends_with("refs/heads/dev")),
        "{refs:?}"
    );
    assert!(
        !refs.iter().any(|l| l.contains("refs/tags/v1.0")),
        "{refs:?}"
    );
    assert!(refs.iter().any(|l| l.ends_with("refs/tags/v0.1")));

    // A clone after all that is complete and consistent.
    sb.git(sb.dir.path(), &["clone", "-q", "--mirror", &url, "after"]);
    sb.git(&sb.path("after"), &["fsck", "--full"]);
    assert_eq!(
        sb.git(&sb.path("after"), &["rev-parse", "main"]).trim(),
        rewritten
    );

    // With --deny-non-fast-forwards, even a forced rewrite is refused.
    let strict = Server::start_with(&backend, &["--deny-non-fast-forwards"]);
    let strict_url = strict.url("demo.git");
    sb.git(&src, &["reset", "-q", "--hard", "HEAD~1"]);
    sb.commit(&src, "again.txt", "again\n", "rewritten again");
    let denied = sb.git_output(&src, &["push", "--force", &strict_url, "main"]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("non-fast-forward"));
    assert_eq!(remote("refs/heads/main"), rewritten);
}

fn clone_of_an_empty_repository(backend: Backend) {
    let created = stowage()
        .args(["repo", "create", "empty", "--store", &backend.url()])
        .output()
        .expect("repo create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    for version in ["0", "2"] {
        let name = format!("empty-v{version}");
        let out = sb.git_output(
            sb.dir.path(),
            &[
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                &server.url("empty.git"),
                &name,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("empty repository"));
    }
    // The first push into it works, and HEAD is main.
    let work = sb.path("empty-v2");
    sb.commit(&work, "first.txt", "1\n", "first");
    sb.git(&work, &["push", "-q", "origin", "main"]);
    let refs = ls_remote(&sb, &work, &server.url("empty.git"), "2");
    assert_eq!(refs.len(), 2, "{refs:?}");
}

/// Clients racing to push onto one branch: each round, exactly one wins and the rest
/// are refused; the losers rebase and retry until every commit is in.
fn race(sb: &Sandbox, urls: &[String], clients: usize) {
    let seed = sb.init_repo("seed");
    sb.commit(&seed, "base.txt", "base\n", "base");
    sb.git(&seed, &["push", "-q", &urls[0], "main"]);
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let name = format!("client{i}");
            sb.git(
                sb.dir.path(),
                &["clone", "-q", &urls[i % urls.len()], &name],
            );
            let path = sb.path(&name);
            sb.commit(
                &path,
                &format!("client{i}.txt"),
                &format!("{i}\n"),
                &format!("work of client {i}"),
            );
            path
        })
        .collect();
    let mut pending: Vec<usize> = (0..clients).collect();
    let mut rounds = 0;
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds <= clients, "more rounds than clients");
        let outcomes: Vec<(usize, bool)> = thread::scope(|scope| {
            let handles: Vec<_> = pending
                .iter()
                .map(|&i| {
                    let path = &workers[i];
                    scope.spawn(move || {
                        (
                            i,
                            sb.git_output(path, &["push", "origin", "main"])
                                .status
                                .success(),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("push thread"))
                .collect()
        });
        let winners: Vec<usize> = outcomes.iter().filter(|o| o.1).map(|o| o.0).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {rounds}: exactly one push wins, got {winners:?}"
        );
        pending.retain(|i| !winners.contains(i));
        for &i in &pending {
            sb.git(&workers[i], &["pull", "-q", "--rebase", "origin", "main"]);
        }
    }
    sb.git(sb.dir.path(), &["clone", "-q", &urls[0], "final"]);
    let log = sb.git(&sb.path("final"), &["log", "--format=%s", "main"]);
    for i in 0..clients {
        assert!(
            log.contains(&format!("work of client {i}")),
            "client {i}'s commit is lost:\n{log}"
        );
    }
    sb.git(&sb.path("final"), &["fsck", "--full"]);
}

fn racing_pushes_lose_no_update(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    race(&sb, &[server.url("race.git")], 8);
}

fn racing_pushes_through_two_servers(backend: Backend) {
    let a = Server::start(&backend);
    let b = Server::start(&backend);
    let sb = Sandbox::new();
    race(&sb, &[a.url("race.git"), b.url("race.git")], 8);
}

fn sixteen_concurrent_clones(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = source_repo(&sb);
    let url = server.url("demo.git");
    push_all(&sb, &src, &url);
    let expected = all_objects(&sb, &src);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (sb, url) = (&sb, &url);
                let expected = &expected;
                scope.spawn(move || {
                    let name = format!("c{i}");
                    let version = if i % 2 == 0 { "2" } else { "0" };
                    sb.git(
                        sb.dir.path(),
                        &[
                            "-c",
                            &format!("protocol.version={version}"),
                            "clone",
                            "-q",
                            "--mirror",
                            url,
                            &name,
                        ],
                    );
                    sb.git(&sb.path(&name), &["fsck", "--full"]);
                    assert_eq!(&all_objects(sb, &sb.path(&name)), expected);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("clone thread");
        }
    });
}

fn atomic_pushes_options_tags_and_head(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();

    // A first push of one branch that is not main makes it HEAD.
    let src = sb.init_repo("src");
    sb.git(&src, &["checkout", "-q", "-b", "trunk"]);
    let first = sb.commit(&src, "a.txt", "a\n", "first");
    let url = server.url("solo.git");
    sb.git(&src, &["push", "-q", &url, "trunk"]);
    let symref = sb.git(&src, &["ls-remote", "--symref", &url, "HEAD"]);
    assert!(
        symref.starts_with("ref: refs/heads/trunk\tHEAD"),
        "{symref}"
    );
    sb.git(sb.dir.path(), &["clone", "-q", &url, "clone"]);
    let clone = sb.path("clone");
    assert_eq!(
        sb.git(&clone, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/trunk"
    );

    // An atomic push where one ref cannot move changes nothing.
    sb.git(&clone, &["checkout", "-q", "-b", "other"]);
    sb.commit(&clone, "b.txt", "b\n", "other work");
    sb.git(&clone, &["push", "-q", "origin", "other"]);
    sb.commit(&src, "c.txt", "c\n", "diverged");
    sb.git(&src, &["branch", "fresh"]);
    let refused = sb.git_output(
        &src,
        &["push", "--atomic", &url, "trunk", "fresh", "HEAD:other"],
    );
    assert!(!refused.status.success());
    let refs = sb.git(&src, &["ls-remote", &url]);
    assert!(
        !refs.contains("refs/heads/fresh"),
        "atomic push applied a ref: {refs}"
    );
    assert!(
        refs.contains(&format!("{first}\trefs/heads/trunk")),
        "{refs}"
    );

    // Refs pointing at objects the repository already has (an empty pack).
    sb.git(
        &clone,
        &[
            "push",
            "-q",
            "origin",
            "trunk:refs/heads/copy",
            "trunk:refs/tags/light",
        ],
    );
    let refs = sb.git(&src, &["ls-remote", &url]);
    assert!(
        refs.contains(&format!("{first}\trefs/heads/copy")),
        "{refs}"
    );
    assert!(
        refs.contains(&format!("{first}\trefs/tags/light")),
        "{refs}"
    );

    // Push options are accepted.
    let out = sb.git_output(
        &src,
        &[
            "push", "-o", "ci.skip", "-o", "note=x y", &url, "trunk", "fresh",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A fetch follows an annotated tag that points into what it fetches.
    sb.git(&src, &["tag", "-a", "-m", "release", "v2.0", "trunk"]);
    sb.git(&src, &["push", "-q", &url, "v2.0"]);
    for version in ["0", "2"] {
        let _ = sb.git_output(&clone, &["tag", "-d", "v2.0"]);
        sb.git(
            &clone,
            &[
                "-c",
                &format!("protocol.version={version}"),
                "fetch",
                "-q",
                "origin",
            ],
        );
        assert!(
            sb.git(&clone, &["tag", "-l"]).contains("v2.0"),
            "the tag came with a v{version} fetch"
        );
    }

    // `stowage repo delete` removes it.
    let deleted = stowage()
        .args(["repo", "delete", "solo", "--store", &backend.url()])
        .output()
        .expect("repo delete");
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(!sb.git_output(&src, &["ls-remote", &url]).status.success());
}

/// A v2 fetch request for refs by name (`want-ref`), as raw pkt-lines.
fn want_ref_request(names: &[&str]) -> Vec<u8> {
    let mut body = common::pkt(b"command=fetch\n");
    body.extend_from_slice(b"0001");
    for name in names {
        body.extend(common::pkt(format!("want-ref {name}\n").as_bytes()));
    }
    body.extend(common::pkt(b"done\n"));
    body.extend_from_slice(b"0000");
    body
}

/// With `--allow-ref-in-want` git fetches branches by name (`want-ref`, answered in a
/// `wanted-refs` section); with `--advertise-session-id` every answer carries a
/// session id. Without the option a `want-ref` is refused as git refuses it.
fn refs_by_name_and_session_ids(backend: Backend) {
    let sb = Sandbox::new();
    let src = source_repo(&sb);
    let server = Server::start_with(&backend, &["--allow-ref-in-want", "--advertise-session-id"]);
    let url = server.url("named.git");
    push_all(&sb, &src, &url);

    let trace = sb.path("clone.trace");
    let out = sb
        .git_cmd(sb.dir.path())
        .env("GIT_TRACE_PACKET", &trace)
        .args(["clone", "-q", &url, "named"])
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).expect("trace");
    for expected in [
        "fetch=shallow wait-for-done filter ref-in-want",
        "> want-ref refs/heads/main",
        "< wanted-refs",
        "< session-id=stowage-",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} not in the trace:\n{text}"
        );
    }
    let clone = sb.path("named");
    let head = sb.git(&src, &["rev-parse", "main"]);
    assert_eq!(sb.git(&clone, &["rev-parse", "origin/main"]), head);
    assert_eq!(all_objects(&sb, &clone), all_objects(&sb, &src));

    // An incremental fetch by name.
    let next = sb.commit(&src, "later.txt", "later\n", "later");
    sb.git(&src, &["push", "-q", &url, "main"]);
    let trace = sb.path("fetch.trace");
    let out = sb
        .git_cmd(&clone)
        .env("GIT_TRACE_PACKET", &trace)
        .args(["fetch", "-q", "origin"])
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read_to_string(&trace)
            .expect("trace")
            .contains("> want-ref refs/heads/main")
    );
    assert_eq!(sb.git(&clone, &["rev-parse", "origin/main"]).trim(), next);

    // A name the repository does not have refuses the request, with git's words.
    let (status, body) = common::post_with(
        &format!("{url}/git-upload-pack"),
        "application/x-git-upload-pack-request",
        &want_ref_request(&["refs/heads/main", "refs/heads/nope"]),
        &["Git-Protocol: version=2"],
    );
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("ERR unknown ref refs/heads/nope"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    drop(server);

    // Off by default, as in git.
    let server = Server::start(&backend);
    let url = server.url("named.git");
    let (_, body) = common::post_with(
        &format!("{url}/git-upload-pack"),
        "application/x-git-upload-pack-request",
        &want_ref_request(&["refs/heads/main"]),
        &["Git-Protocol: version=2"],
    );
    assert!(
        String::from_utf8_lossy(&body)
            .contains("ERR upload-pack: unexpected line: 'want-ref refs/heads/main'"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (_, adv) = common::get(&format!("{url}/info/refs?service=git-upload-pack"));
    assert!(!String::from_utf8_lossy(&adv).contains("session-id"));
    // The clone still works without the options.
    sb.git(sb.dir.path(), &["clone", "-q", &url, "plain"]);
    assert_eq!(
        sb.git(&sb.path("plain"), &["rev-parse", "origin/main"])
            .trim(),
        next
    );
}

/// One push creating 10,000 refs (branches and tags on a few commits), listed in full
/// by both protocol versions, fetched by a mirror clone, then half of them deleted by
/// one push. On the filesystem only: git's HTTP push spends minutes of client CPU on
/// 10,000 refs (more than the square of their number), and the manifest is the same
/// object on every store.
#[test]
fn ten_thousand_refs_in_one_push() {
    let backend = Backend::fs();
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = source_repo(&sb);
    let url = server.url("many-refs.git");
    push_all(&sb, &src, &url);
    let commits: Vec<String> = sb
        .git(&src, &["rev-list", "main"])
        .lines()
        .map(str::to_owned)
        .collect();
    let names: Vec<String> = (0..10_000)
        .map(|i| {
            if i % 2 == 0 {
                format!("refs/heads/many/b{i:05}")
            } else {
                format!("refs/tags/many-t{i:05}")
            }
        })
        .collect();
    let mut stdin = String::new();
    for (i, name) in names.iter().enumerate() {
        stdin.push_str(&format!("create {name} {}\n", commits[i % commits.len()]));
    }
    update_refs(&sb, &src, &stdin);

    push_all(&sb, &src, &url);
    let mut expected = local_refs(&sb, &src);
    let head = sb.git(&src, &["rev-parse", "main"]);
    expected.insert(format!("{}\tHEAD", head.trim()));
    for version in ["0", "2"] {
        let listed = ls_remote(&sb, &src, &url, version);
        assert_eq!(listed.len(), expected.len(), "protocol v{version}");
        assert_eq!(listed, expected, "protocol v{version}");
    }
    let mirror = sb.path("mirror.git");
    sb.git(
        &sb.path(""),
        &[
            "clone",
            "-q",
            "--mirror",
            &url,
            mirror.to_str().expect("path"),
        ],
    );
    assert_eq!(local_refs(&sb, &mirror), local_refs(&sb, &src));

    // Half of them deleted by one push (deleted locally first: a deletion has no
    // source for git to match against local refs).
    let mut stdin = String::new();
    for name in names.iter().step_by(2) {
        stdin.push_str(&format!("delete {name}\n"));
    }
    update_refs(&sb, &src, &stdin);
    let mut delete = vec!["push".to_owned(), "-q".to_owned(), url.clone()];
    delete.extend(names.iter().step_by(2).map(|n| format!(":{n}")));
    let args: Vec<&str> = delete.iter().map(String::as_str).collect();
    sb.git(&src, &args);
    let listed = ls_remote(&sb, &src, &url, "2");
    assert_eq!(listed.len(), expected.len() - 5_000);
    let mut expected = local_refs(&sb, &src);
    expected.insert(format!("{}\tHEAD", head.trim()));
    assert_eq!(listed, expected);
}

/// Runs `git update-ref --stdin` with `commands`.
fn update_refs(sb: &Sandbox, repo: &Path, commands: &str) {
    let mut update = sb.git_cmd(repo);
    update
        .args(["update-ref", "--stdin"])
        .stdin(std::process::Stdio::piped());
    let mut child = update.spawn().expect("git update-ref");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), commands.as_bytes())
        .expect("write refs");
    assert!(child.wait().expect("update-ref").success());
}

/// With `--pack-cache-dir`, packs read from the store are copied to the directory and
/// later clones and fetches read them from there, with the same results.
fn clones_through_a_local_pack_cache(backend: Backend) {
    let sb = Sandbox::new();
    let cache_dir = sb.path("pack-cache");
    let server = Server::start_with(
        &backend,
        &["--pack-cache-dir", cache_dir.to_str().expect("path")],
    );
    let src = source_repo(&sb);
    let url = server.url("cached.git");
    push_all(&sb, &src, &url);

    let first = sb.path("first.git");
    sb.git(
        &sb.path(""),
        &["clone", "-q", "--bare", &url, first.to_str().expect("path")],
    );
    // The clone streamed the pack; its copy is made in the background.
    let mut waited = 0;
    while stat(&server, "disk_cache_bytes") == 0 && waited < 100 {
        thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    assert!(stat(&server, "disk_cache_bytes") > 0, "the pack was copied");
    let hits = stat(&server, "disk_cache_hits");
    let second = sb.path("second.git");
    sb.git(
        &sb.path(""),
        &[
            "clone",
            "-q",
            "--bare",
            &url,
            second.to_str().expect("path"),
        ],
    );
    assert!(
        stat(&server, "disk_cache_hits") > hits,
        "read from the directory"
    );
    assert_eq!(all_objects(&sb, &first), all_objects(&sb, &src));
    assert_eq!(all_objects(&sb, &second), all_objects(&sb, &src));

    // A new push and a fetch of it go through the same layer.
    sb.commit(&src, "later.txt", "later\n", "later");
    sb.git(&src, &["push", "-q", &url, "main"]);
    sb.git(&second, &["fetch", "-q", &url, "main:main"]);
    assert_eq!(
        sb.git(&second, &["rev-parse", "main"]),
        sb.git(&src, &["rev-parse", "main"])
    );
}
