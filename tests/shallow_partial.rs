//! Shallow and partial clones, compared with what git's own upload-pack (the engine
//! behind git http-backend) gives for the same repository over file://.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Backend, Sandbox, Server, stat};

on_every_backend!(
    shallow_clones_match_git,
    partial_clones_match_git,
    sparse_clones_match_git,
    repeated_shallow_clones_use_the_object_cache
);

/// Commits `file` with a fixed date, `day` days into the history.
fn commit_at(sb: &Sandbox, repo: &Path, file: &str, content: &str, message: &str, day: i64) {
    std::fs::write(repo.join(file), content).expect("write");
    sb.git(repo, &["add", "-A"]);
    let date = format!("@{} +0000", 1_600_000_000 + day * 86_400);
    let out = sb
        .git_cmd(repo)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .args(["commit", "-q", "-m", message])
        .output()
        .expect("git commit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A dated history with a merge, so depth is counted along several paths.
fn history(sb: &Sandbox) -> std::path::PathBuf {
    let src = sb.init_repo("src");
    sb.git(&src, &["config", "uploadpack.allowFilter", "true"]);
    for i in 1..=6 {
        commit_at(
            sb,
            &src,
            &format!("f{}.txt", i % 3),
            &format!("v{i}\n"),
            &format!("main {i}"),
            i,
        );
    }
    sb.git(&src, &["checkout", "-q", "-b", "side", "HEAD~3"]);
    commit_at(sb, &src, "side.txt", "side\n", "side 1", 7);
    commit_at(sb, &src, "side.txt", "side 2\n", "side 2", 8);
    sb.git(&src, &["checkout", "-q", "main"]);
    let date = format!("@{} +0000", 1_600_000_000 + 9 * 86_400);
    let merged = sb
        .git_cmd(&src)
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .args(["merge", "-q", "--no-ff", "-m", "merge side", "side"])
        .output()
        .expect("merge");
    assert!(merged.status.success());
    for i in 10..=12 {
        let big = format!("{}\n", "x".repeat(2000 * i as usize));
        commit_at(
            sb,
            &src,
            &format!("big{i}.bin"),
            &big,
            &format!("main {i}"),
            i,
        );
    }
    src
}

fn set(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

fn shallow_file(repo: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(repo.join(".git/shallow"))
        .map(|s| set(&s))
        .unwrap_or_default()
}

fn shallow_clones_match_git(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = history(&sb);
    let url = server.url("deep.git");
    sb.git(&src, &["push", "-q", &url, "main", "side"]);
    let reference = format!("file://{}", src.display());

    for version in ["0", "2"] {
        let v = format!("protocol.version={version}");
        for depth in ["1", "2", "4", "6"] {
            let ours = format!("ours-v{version}-d{depth}");
            let theirs = format!("ref-v{version}-d{depth}");
            sb.git(
                sb.dir.path(),
                &["-c", &v, "clone", "-q", "--depth", depth, &url, &ours],
            );
            sb.git(
                sb.dir.path(),
                &[
                    "-c", &v, "clone", "-q", "--depth", depth, &reference, &theirs,
                ],
            );
            let (ours, theirs) = (sb.path(&ours), sb.path(&theirs));
            sb.git(&ours, &["fsck", "--full"]);
            assert_eq!(
                shallow_file(&ours),
                shallow_file(&theirs),
                "v{version} depth {depth}: shallow commits"
            );
            assert_eq!(
                set(&sb.git(&ours, &["rev-list", "--all"])),
                set(&sb.git(&theirs, &["rev-list", "--all"])),
                "v{version} depth {depth}: commits"
            );
        }
        // Deepening an existing shallow clone, then unshallowing it.
        let ours = sb.path(&format!("ours-v{version}-d1"));
        let theirs = sb.path(&format!("ref-v{version}-d1"));
        for (repo, remote) in [(&ours, &url), (&theirs, &reference)] {
            sb.git(
                repo,
                &["-c", &v, "fetch", "-q", "--depth", "3", remote, "main"],
            );
        }
        assert_eq!(
            shallow_file(&ours),
            shallow_file(&theirs),
            "v{version}: after fetch --depth 3"
        );
        sb.git(
            &ours,
            &["-c", &v, "fetch", "-q", "--unshallow", &url, "main"],
        );
        assert!(shallow_file(&ours).is_empty());
        sb.git(&ours, &["fsck", "--full"]);
        assert_eq!(
            sb.git(&ours, &["rev-list", "--count", "FETCH_HEAD"]).trim(),
            sb.git(&src, &["rev-list", "--count", "main"]).trim()
        );
        // By date, by excluded ref, and deepening relative to the current boundary.
        let cases: [(&str, Vec<String>); 3] = [
            (
                "since",
                vec![format!("--shallow-since=@{}", 1_600_000_000 + 5 * 86_400)],
            ),
            (
                "exclude",
                vec![
                    "--shallow-exclude=side".to_owned(),
                    "--no-single-branch".to_owned(),
                ],
            ),
            (
                "exclude-tagless",
                vec!["--shallow-exclude=refs/heads/side".to_owned()],
            ),
        ];
        for (name, args) in cases {
            let ours = sb.path(&format!("ours-v{version}-{name}"));
            let theirs = sb.path(&format!("ref-v{version}-{name}"));
            for (dest, remote) in [(&ours, &url), (&theirs, &reference)] {
                let mut cmd = vec!["-c", &v, "clone", "-q"];
                cmd.extend(args.iter().map(String::as_str));
                let dest = dest.display().to_string();
                cmd.extend([remote.as_str(), dest.as_str()]);
                sb.git(sb.dir.path(), &cmd);
            }
            sb.git(&ours, &["fsck", "--full"]);
            assert_eq!(
                shallow_file(&ours),
                shallow_file(&theirs),
                "v{version} {name}: shallow commits"
            );
            assert_eq!(
                set(&sb.git(&ours, &["rev-list", "--all"])),
                set(&sb.git(&theirs, &["rev-list", "--all"])),
                "v{version} {name}: commits"
            );
        }
        // A shallow clone that does not deepen still fetches new work.
        let shallow = sb.path(&format!("ours-v{version}-d4"));
        commit_at(
            &sb,
            &src,
            &format!("later-{version}.txt"),
            "later\n",
            "later work",
            20,
        );
        sb.git(&src, &["push", "-q", &url, "main"]);
        sb.git(&shallow, &["-c", &v, "fetch", "-q", "origin"]);
        sb.git(&shallow, &["-c", &v, "fetch", "-q", "--tags", "origin"]);
        sb.git(&shallow, &["fsck", "--full"]);
        assert_eq!(
            sb.git(&shallow, &["rev-parse", "origin/main"]),
            sb.git(&src, &["rev-parse", "main"])
        );
        // A shallow request that selects nothing is refused, as git does.
        let future = format!("--shallow-since=@{}", 4_000_000_000u64);
        let dest = format!("none-{version}");
        let out = sb.git_output(sb.dir.path(), &["-c", &v, "clone", &future, &url, &dest]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no commits selected"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let ours = sb.path(&format!("ours-v{version}-d2"));
        let theirs = sb.path(&format!("ref-v{version}-d2"));
        for (repo, remote) in [(&ours, &url), (&theirs, &reference)] {
            sb.git(
                repo,
                &["-c", &v, "fetch", "-q", "--deepen", "2", remote, "main"],
            );
        }
        assert_eq!(
            shallow_file(&ours),
            shallow_file(&theirs),
            "v{version}: after fetch --deepen 2"
        );
        sb.git(&ours, &["fsck", "--full"]);
    }
}

/// Objects a partial clone lacks.
fn missing(sb: &Sandbox, repo: &Path) -> BTreeSet<String> {
    sb.git(repo, &["rev-list", "--objects", "--all", "--missing=print"])
        .lines()
        .filter_map(|l| l.strip_prefix('?'))
        .map(str::to_owned)
        .collect()
}

/// Objects a repository holds.
fn present(sb: &Sandbox, repo: &Path) -> BTreeSet<String> {
    set(&sb.git(
        repo,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ],
    ))
}

fn partial_clones_match_git(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = history(&sb);
    let url = server.url("partial.git");
    sb.git(&src, &["push", "-q", &url, "main", "side"]);
    let reference = format!("file://{}", src.display());

    for version in ["0", "2"] {
        let v = format!("protocol.version={version}");
        for filter in [
            "blob:none",
            "blob:limit=5k",
            "blob:limit=16000",
            "tree:0",
            "tree:1",
            "tree:2",
            "combine:blob:limit=5k+tree:2",
        ] {
            let ours = sb.path(&format!(
                "ours-{version}-{}",
                filter.replace([':', '='], "-")
            ));
            let theirs = sb.path(&format!(
                "ref-{version}-{}",
                filter.replace([':', '='], "-")
            ));
            for (dest, remote) in [(&ours, &url), (&theirs, &reference)] {
                sb.git(
                    sb.dir.path(),
                    &[
                        "-c",
                        &v,
                        "clone",
                        "-q",
                        "--no-checkout",
                        &format!("--filter={filter}"),
                        remote,
                        &dest.display().to_string(),
                    ],
                );
            }
            let lacking = missing(&sb, &ours);
            if ["blob:none", "blob:limit=5k", "tree:0", "tree:1"].contains(&filter) {
                assert!(!lacking.is_empty(), "{filter}: something was left out");
            }
            assert_eq!(
                lacking,
                missing(&sb, &theirs),
                "v{version} {filter}: the same objects are left out"
            );
            // Later reads fetch what is missing, lazily.
            sb.git(&ours, &["-c", &v, "checkout", "-q", "main"]);
            sb.git(&ours, &["-c", &v, "log", "-p", "-q", "--all"]);
            sb.git(&ours, &["-c", &v, "fsck"]);
        }
        // Only blobs: commits come only when wanted by name, as git does it.
        let ours = sb.path(&format!("ours-{version}-blobs"));
        let theirs = sb.path(&format!("ref-{version}-blobs"));
        for (dest, remote) in [(&ours, &url), (&theirs, &reference)] {
            let dest = dest.display().to_string();
            let filter = "--filter=object:type=blob";
            sb.git(
                sb.dir.path(),
                &["-c", &v, "clone", "-q", "--bare", filter, remote, &dest],
            );
        }
        // The clone lacks the commits a walk starts from: what it holds is compared
        // (git before 2.40 cannot list what is missing past a missing commit).
        assert_eq!(
            present(&sb, &ours),
            present(&sb, &theirs),
            "v{version} object:type=blob"
        );
    }
}

/// A tree of directories, the same directory at two paths, and two sparse-checkout
/// files: a cone-mode one and a gitignore-style one.
fn directories(sb: &Sandbox) -> std::path::PathBuf {
    let src = history(sb);
    for (file, content) in [
        ("README.md", "readme\n"),
        ("secret.md", "secret\n"),
        ("src/lib.rs", "lib\n"),
        ("src/core/mod.rs", "core\n"),
        ("src/extra/x.rs", "extra\n"),
        ("docs/guide.md", "guide\n"),
        ("docs/img/logo.svg", "<svg/>\n"),
        ("lib/a.c", "a\n"),
        ("lib/b.c", "b\n"),
        ("vendor/lib/a.c", "a\n"),
        ("vendor/lib/b.c", "b\n"),
        (".cone", "/*\n!/*/\n/docs/\n/src/\n!/src/*/\n/src/core/\n"),
        (
            ".sparse",
            "# documentation and vendored code\n*.md\n!secret.md\n/vendor/\n",
        ),
    ] {
        let path = src.join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
        std::fs::write(path, content).expect("write");
    }
    commit_at(sb, &src, "big12.bin", "small now\n", "directories", 13);
    src
}

fn sparse_clones_match_git(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = directories(&sb);
    let url = server.url("sparse.git");
    sb.git(&src, &["push", "-q", &url, "main", "side"]);
    let reference = format!("file://{}", src.display());
    let cone = sb.git(&src, &["rev-parse", "main:.cone"]);
    let cone = format!("sparse:oid={}", cone.trim());

    for version in ["0", "2"] {
        let v = format!("protocol.version={version}");
        for filters in [
            vec!["sparse:oid=main:.sparse"],
            vec![cone.as_str()],
            vec!["sparse:oid=refs/heads/main:.cone"],
            vec!["sparse:oid=main:.cone", "tree:2"],
            vec!["sparse:oid=main:.cone", "blob:limit=5"],
            vec!["sparse:oid=main:.sparse", "blob:limit=5"],
        ] {
            let name = filters.join("-").replace([':', '=', '/'], "-");
            let ours = sb.path(&format!("ours-{version}-{name}"));
            let theirs = sb.path(&format!("ref-{version}-{name}"));
            for (dest, remote) in [(&ours, &url), (&theirs, &reference)] {
                let mut args = vec!["-c", &v, "clone", "-q", "--no-checkout"];
                let flags: Vec<String> = filters.iter().map(|f| format!("--filter={f}")).collect();
                args.extend(flags.iter().map(String::as_str));
                let dest = dest.display().to_string();
                args.extend([remote.as_str(), dest.as_str()]);
                sb.git(sb.dir.path(), &args);
            }
            let lacking = missing(&sb, &ours);
            assert!(!lacking.is_empty(), "{name}: something was left out");
            let mut git_lacks = missing(&sb, &theirs);
            if filters == ["sparse:oid=main:.sparse", "blob:limit=5"] {
                // git's combine: leaves out the small blobs of `lib/`, which `.sparse`
                // selects only as `vendor/lib/`: the blob:limit part saw them first at
                // `lib/` and does not look again. stowage sends them.
                for blob in ["main:lib/a.c", "main:lib/b.c"] {
                    let id = sb.git(&src, &["rev-parse", blob]).trim().to_owned();
                    assert!(git_lacks.remove(&id), "{blob} is what git leaves out");
                }
            }
            assert_eq!(
                lacking, git_lacks,
                "v{version} {name}: the same objects are left out"
            );
            sb.git(&ours, &["-c", &v, "checkout", "-q", "main"]);
            sb.git(&ours, &["-c", &v, "fsck"]);
        }
        for (filter, says) in [
            (
                "sparse:oid=main:nothing-here",
                "unable to access sparse blob in 'main:nothing-here'",
            ),
            ("sparse:oid=main:src", "unable to parse sparse filter data"),
            ("sparse:oid=nosuchref:.cone", "unable to access sparse blob"),
        ] {
            let dest = sb.path(&format!("refused-{version}-{}", filter.len()));
            let filter = format!("--filter={filter}");
            let dest = dest.display().to_string();
            let out = sb.git_output(sb.dir.path(), &["-c", &v, "clone", &filter, &url, &dest]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{filter}: refused, not ignored");
            assert!(stderr.contains(says), "{filter}: {stderr}");
        }
    }
}

/// The object cache counters of `/-/stats`: (hits, misses).
fn object_cache(server: &Server) -> (u64, u64) {
    (
        stat(server, "object_cache_hits"),
        stat(server, "object_cache_misses"),
    )
}

/// A second shallow clone of the same tip reads the trees and commit the first one
/// decoded from the object cache, and gets the same objects.
fn repeated_shallow_clones_use_the_object_cache(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = history(&sb);
    let url = server.url("cached.git");
    sb.git(&src, &["push", "-q", &url, "main", "side"]);

    let mut objects = Vec::new();
    let mut counts = vec![object_cache(&server)];
    for name in ["first", "second"] {
        sb.git(
            sb.dir.path(),
            &["clone", "-q", "--bare", "--depth", "1", &url, name],
        );
        objects.push(common::all_objects(&sb, &sb.path(name)));
        counts.push(object_cache(&server));
    }
    assert_eq!(objects[0], objects[1]);
    let (hits_first, misses_first) = (counts[1].0 - counts[0].0, counts[1].1 - counts[0].1);
    let (hits_second, misses_second) = (counts[2].0 - counts[1].0, counts[2].1 - counts[1].1);
    assert!(misses_first > 0, "the first clone decodes: {counts:?}");
    assert_eq!(
        misses_second, 0,
        "the second clone decodes nothing: {counts:?}"
    );
    assert!(hits_second > hits_first, "{counts:?}");
}
