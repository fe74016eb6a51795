//! Shallow and partial clones, compared with what git's own upload-pack (the engine
//! behind git http-backend) gives for the same repository over file://.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Backend, Sandbox, Server};

on_every_backend!(shallow_clones_match_git, partial_clones_match_git);

/// A history with a merge, so depth is counted along several paths.
fn history(sb: &Sandbox) -> std::path::PathBuf {
    let src = sb.init_repo("src");
    sb.git(&src, &["config", "uploadpack.allowFilter", "true"]);
    for i in 1..=6 {
        sb.commit(
            &src,
            &format!("f{}.txt", i % 3),
            &format!("v{i}\n"),
            &format!("main {i}"),
        );
    }
    sb.git(&src, &["checkout", "-q", "-b", "side", "HEAD~3"]);
    sb.commit(&src, "side.txt", "side\n", "side 1");
    sb.commit(&src, "side.txt", "side 2\n", "side 2");
    sb.git(&src, &["checkout", "-q", "main"]);
    sb.git(
        &src,
        &["merge", "-q", "--no-ff", "-m", "merge side", "side"],
    );
    for i in 7..=9 {
        let big = format!("{}\n", "x".repeat(2000 * i));
        sb.commit(&src, &format!("big{i}.bin"), &big, &format!("main {i}"));
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
        // What is not supported yet says so: v0 clients see that `deepen-since` is not
        // advertised, v2 clients get the server's refusal.
        let out = sb.git_output(
            sb.dir.path(),
            &[
                "-c",
                &v,
                "clone",
                "--shallow-since=2000-01-01",
                &url,
                &format!("since-{version}"),
            ],
        );
        assert!(!out.status.success());
        assert!(
            {
                let err = String::from_utf8_lossy(&out.stderr);
                err.contains("deepen-since is not supported")
                    || err.contains("Server does not support --shallow-since")
            },
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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

fn partial_clones_match_git(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = history(&sb);
    let url = server.url("partial.git");
    sb.git(&src, &["push", "-q", &url, "main", "side"]);
    let reference = format!("file://{}", src.display());

    for version in ["0", "2"] {
        let v = format!("protocol.version={version}");
        for filter in ["blob:none", "blob:limit=5k", "blob:limit=16000"] {
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
            assert!(
                !lacking.is_empty() || filter == "blob:limit=16000",
                "{filter}: something was left out"
            );
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
        let out = sb.git_output(
            sb.dir.path(),
            &[
                "-c",
                &v,
                "clone",
                "--filter=tree:0",
                &url,
                &format!("tree-{version}"),
            ],
        );
        assert!(
            !out.status.success(),
            "an unsupported filter is refused, not ignored"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not supported"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
