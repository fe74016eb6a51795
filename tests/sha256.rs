//! sha256 repositories end to end with the real git client: the first push (or
//! `stowage repo create --object-format sha256`) fixes a repository's format; clones in
//! every protocol version, shallow and partial clones, incremental pushes and fetches,
//! compaction and fsck; a client of the other format is refused as git refuses it.

mod common;

use std::path::{Path, PathBuf};

use common::{Backend, Sandbox, Server, all_objects, cli, client_version, stowage};

/// Whether the client reads an advertisement in the first object format it lists and
/// clones an empty repository in the server's format (git 2.47 does; git 2.39, the
/// older client tested, reads it in its own format and clones an empty repository as
/// sha1).
fn takes_the_servers_format() -> bool {
    client_version() >= (2, 47)
}

on_every_backend!(
    sha256_repositories_round_trip,
    a_repository_keeps_the_format_it_was_created_with,
    first_pushes_in_two_formats_race
);

/// A sha256 repository with directories, a branch, a merge and an annotated tag.
fn sha256_source(sb: &Sandbox, name: &str) -> PathBuf {
    let src = sb.path(name);
    std::fs::create_dir_all(&src).expect("dir");
    sb.git(&src, &["init", "-q", "--object-format=sha256"]);
    for i in 0..4 {
        let content: String = (0..200).map(|l| format!("line {l} of {i}\n")).collect();
        sb.commit(
            &src,
            &format!("d{}/f.txt", i % 2),
            &content,
            &format!("c{i}"),
        );
    }
    sb.git(&src, &["checkout", "-q", "-b", "side", "HEAD~2"]);
    sb.commit(&src, "side.txt", "side\n", "side");
    sb.git(&src, &["checkout", "-q", "main"]);
    sb.git(&src, &["merge", "-q", "--no-ff", "-m", "merge", "side"]);
    sb.git(&src, &["tag", "-a", "-m", "release", "v1"]);
    src
}

fn format_of(sb: &Sandbox, repo: &Path) -> String {
    sb.git(repo, &["rev-parse", "--show-object-format"])
        .trim()
        .to_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256_repositories_round_trip(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let src = sha256_source(&sb, "src");
    let url = server.url("wide.git");
    if !takes_the_servers_format() {
        // Such a client cannot read the advertisement of a repository a push creates
        // (`unexpected capabilities^{}`): the repository is made first.
        cli(
            &backend,
            &["repo", "create", "wide", "--object-format", "sha256"],
        );
    }
    sb.git(&src, &["push", "-q", &url, "main", "side", "v1"]);

    let listed = sb.git(sb.dir.path(), &["ls-remote", &url]);
    let main = sb.git(&src, &["rev-parse", "main"]).trim().to_owned();
    assert_eq!(main.len(), 64);
    assert!(
        listed.contains(&format!("{main}\trefs/heads/main")),
        "{listed}"
    );

    for version in ["0", "1", "2"] {
        let v = format!("protocol.version={version}");
        let name = format!("clone-v{version}");
        sb.git(
            sb.dir.path(),
            &["-c", &v, "clone", "-q", "--mirror", &url, &name],
        );
        let clone = sb.path(&name);
        assert_eq!(format_of(&sb, &clone), "sha256", "v{version}");
        sb.git(&clone, &["fsck", "--full", "--strict"]);
        assert_eq!(
            all_objects(&sb, &clone),
            all_objects(&sb, &src),
            "v{version}"
        );

        // Shallow and partial clones.
        let shallow = format!("shallow-v{version}");
        sb.git(
            sb.dir.path(),
            &["-c", &v, "clone", "-q", "--depth=1", &url, &shallow],
        );
        let count = sb.git(&sb.path(&shallow), &["rev-list", "--count", "HEAD"]);
        assert_eq!(count.trim(), "1", "v{version}: one commit");
        let partial = format!("partial-v{version}");
        sb.git(
            sb.dir.path(),
            &[
                "-c",
                &v,
                "clone",
                "-q",
                "--filter=blob:none",
                "--no-checkout",
                &url,
                &partial,
            ],
        );
        let partial = sb.path(&partial);
        let missing = sb.git(
            &partial,
            &["rev-list", "--objects", "--all", "--missing=print"],
        );
        assert!(
            missing.lines().any(|l| l.starts_with('?')),
            "blobs are left out"
        );
        // The checkout fetches them, lazily.
        sb.git(&partial, &["-c", &v, "checkout", "-q", "main"]);
        sb.git(&partial, &["fsck"]);
    }

    // An incremental push (a thin pack on objects the server has) and a fetch.
    let work = sb.path("work");
    sb.git(sb.dir.path(), &["clone", "-q", &url, "work"]);
    let content: String = (0..200)
        .map(|l| format!("line {l} of 0, changed\n"))
        .collect();
    let pushed = sb.commit(&work, "d0/f.txt", &content, "change");
    sb.git(&work, &["push", "-q", "origin", "main"]);
    let mirror = sb.path("clone-v2");
    sb.git(&mirror, &["fetch", "-q", "origin"]);
    assert_eq!(sb.git(&mirror, &["rev-parse", "main"]).trim(), pushed);
    sb.git(&mirror, &["fsck", "--full", "--strict"]);

    // Compaction and the server's fsck.
    let gc = stowage()
        .args(["gc", "wide.git", "--store", &backend.url()])
        .output()
        .expect("stowage gc runs");
    assert!(gc.status.success(), "{}", stderr(&gc));
    let fsck = stowage()
        .args(["fsck", "wide.git", "--store", &backend.url()])
        .output()
        .expect("stowage fsck runs");
    let said = String::from_utf8_lossy(&fsck.stdout);
    assert!(fsck.status.success(), "{said}{}", stderr(&fsck));
    assert!(
        said.contains(": 1 packs, "),
        "compacted to one pack: {said}"
    );
    sb.git(
        sb.dir.path(),
        &["clone", "-q", "--mirror", &url, "after-gc"],
    );
    assert_eq!(
        all_objects(&sb, &sb.path("after-gc")),
        all_objects(&sb, &work)
    );

    // A sha1 repository cannot push here, and cannot fetch from here.
    let narrow = sb.init_repo("narrow");
    sb.commit(&narrow, "a.txt", "a\n", "sha1");
    let out = sb.git_output(&narrow, &["push", &url, "main:refs/heads/narrow"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not support this repository's hash algorithm"),
        "{}",
        stderr(&out)
    );
    for version in ["0", "2"] {
        let v = format!("protocol.version={version}");
        let out = sb.git_output(&narrow, &["-c", &v, "fetch", &url, "main"]);
        assert!(!out.status.success(), "v{version}");
        let said = stderr(&out);
        assert!(
            said.contains("mismatched algorithms")
                || said.contains("does not support this repository's object format"),
            "v{version}: {said}"
        );
    }
    let listed_after = sb.git(sb.dir.path(), &["ls-remote", &url]);
    assert!(
        !listed_after.contains("refs/heads/narrow"),
        "{listed_after}"
    );
}

fn a_repository_keeps_the_format_it_was_created_with(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let said = cli(
        &backend,
        &["repo", "create", "made.git", "--object-format", "sha256"],
    );
    assert!(said.contains("sha256"), "{said}");
    let made = server.url("made.git");

    // An empty sha256 repository clones as one: the clone takes its format.
    sb.git(sb.dir.path(), &["clone", "-q", &made, "empty"]);
    if takes_the_servers_format() {
        assert_eq!(format_of(&sb, &sb.path("empty")), "sha256");
    }

    // A sha1 push to it is refused by git, before it sends anything.
    let narrow = sb.init_repo("narrow");
    sb.commit(&narrow, "a.txt", "a\n", "sha1");
    let out = sb.git_output(&narrow, &["push", &made, "main"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not support this repository's hash algorithm"));
    let src = sha256_source(&sb, "src");
    sb.git(&src, &["push", "-q", &made, "main"]);
    sb.git(sb.dir.path(), &["clone", "-q", &made, "filled"]);
    assert_eq!(
        sb.git(&sb.path("filled"), &["rev-parse", "HEAD"]),
        sb.git(&src, &["rev-parse", "main"])
    );

    // The first push of a sha1 repository fixes sha1: a sha256 one is refused after.
    let url = server.url("narrow.git");
    sb.git(&narrow, &["push", "-q", &url, "main"]);
    let out = sb.git_output(&src, &["push", &url, "main:refs/heads/wide"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not support this repository's hash algorithm"));
    let listed = sb.git(sb.dir.path(), &["ls-remote", &url]);
    assert_eq!(listed.lines().count(), 2, "HEAD and main only: {listed}");
}

/// A sha1 and a sha256 push that both create one repository, through two servers at
/// once: one creates it, the other is refused (by git from the advertisement, or by the
/// server when the manifest swap finds the repository made meanwhile).
fn first_pushes_in_two_formats_race(backend: Backend) {
    let (a, b) = (Server::start(&backend), Server::start(&backend));
    let sb = Sandbox::new();
    let wide = sha256_source(&sb, "wide");
    let narrow = sb.init_repo("narrow");
    sb.commit(&narrow, "a.txt", "a\n", "sha1");
    for round in 0..3 {
        let name = format!("raced-{round}.git");
        let pushes: Vec<_> = [(&wide, &a), (&narrow, &b)]
            .into_iter()
            .map(|(src, server)| {
                sb.git_cmd(src)
                    .args(["push", &server.url(&name), "main"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("git push")
            })
            .collect();
        let won: Vec<bool> = pushes
            .into_iter()
            .map(|p| p.wait_with_output().expect("push ends").status.success())
            .collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {won:?}"
        );
        let winner = if won[0] { &wide } else { &narrow };
        let clone = format!("clone-{round}");
        sb.git(sb.dir.path(), &["clone", "-q", &a.url(&name), &clone]);
        let clone = sb.path(&clone);
        if takes_the_servers_format() {
            assert_eq!(format_of(&sb, &clone), format_of(&sb, winner));
        }
        assert_eq!(
            sb.git(&clone, &["rev-parse", "HEAD"]),
            sb.git(winner, &["rev-parse", "main"])
        );
        sb.git(&clone, &["fsck", "--full"]);
    }
}
