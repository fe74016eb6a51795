//! Hostile pushes and requests: objects git's fsck refuses, and every limit, each with
//! the message git shows its user; none of them changes a ref or stops the server.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use common::{Backend, Sandbox, Server, stowage};

on_every_backend!(pushed_objects_are_checked_as_git_fsck_checks_them,);

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

    // With the checks off, git's own server would take them; so does stowage.
    let lax = Server::start_with(&backend, &["--no-fsck-objects"]);
    let (_, zero_padded) = &cases[0];
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
