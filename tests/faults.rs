//! Store faults, one request at a time: a push with each of its store requests failed
//! in turn (transiently and for good), and compaction and garbage collection the same
//! way. Whatever fails, the client hears the truth, a ref moves only when the client
//! was told so, nothing half-written becomes visible, the next attempt works and fsck
//! finds nothing wrong.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Backend, Sandbox, Server, stat, stowage};
use stowage::repo::maintenance::{self, Plan};
use stowage::repo::{Caches, RepoConfig, RepoName, Repos};
use stowage::store_url::{Layers, open_layered};
use stowage_store::{FaultStore, RetryPolicy};

on_every_backend!(
    every_request_of_a_push_failed_in_turn,
    compaction_and_collection_survive_a_failure_at_every_step,
    a_crash_before_or_after_the_manifest_write,
);

const KINDS: [&str; 2] = ["transient", "permanent"];

fn fsck_clean(backend: &Backend, repo: &str) {
    let out = stowage()
        .args(["fsck", repo, "--store", &backend.url()])
        .output()
        .expect("stowage fsck");
    assert!(
        out.status.success(),
        "fsck {repo}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn remote_main(sb: &Sandbox, url: &str) -> String {
    sb.git(sb.dir.path(), &["ls-remote", url, "refs/heads/main"])
        .split('\t')
        .next()
        .unwrap_or("")
        .to_owned()
}

/// A repository with a first commit, and a second one not pushed yet.
fn source(sb: &Sandbox) -> (std::path::PathBuf, String, String) {
    let src = sb.init_repo("src");
    let first = sb.commit(&src, "a.txt", "a\n", "first");
    let content: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let second = sb.commit(&src, "b.txt", &content, "second");
    (src, first, second)
}

fn every_request_of_a_push_failed_in_turn(backend: Backend) {
    let clean = Server::start(&backend);
    let sb = Sandbox::new();
    let (src, first, second) = source(&sb);
    let seed = |repo: &str| {
        sb.git(
            &src,
            &[
                "push",
                "-q",
                &clean.url(&format!("{repo}.git")),
                &format!("{first}:refs/heads/main"),
            ],
        );
    };
    let quiet = "--no-background-compaction";

    // How many store requests the push makes, through a server of its own (its caches
    // empty, as every faulty server's are).
    seed("count");
    let counting = Server::start_with(&backend, &[quiet]);
    let before = stat(&counting, "store_requests_total");
    sb.git(&src, &["push", "-q", &counting.url("count.git"), "main"]);
    let requests = stat(&counting, "store_requests_total") - before;
    drop(counting);
    assert!(requests >= 5, "a push makes {requests} store requests");
    eprintln!("a push made {requests} store requests; failing each in turn");

    for kind in KINDS {
        let mut outcomes = Vec::new();
        for nth in 1..=requests + 1 {
            let repo = format!("{kind}-{nth}");
            seed(&repo);
            let spec = format!("key={repo}.git/*,nth={nth},error={kind}");
            let faulty = Server::start_with(&backend, &[quiet, "--inject-faults", &spec]);
            let out = sb.git_output(&src, &["push", &faulty.url(&format!("{repo}.git")), "main"]);
            drop(faulty);
            let told_ok = out.status.success();
            outcomes.push(if told_ok { "ok" } else { "error" });
            let url = clean.url(&format!("{repo}.git"));
            let now = remote_main(&sb, &url);
            let context = format!(
                "{kind} fault at request {nth}: push {}\n{}",
                if told_ok { "succeeded" } else { "failed" },
                String::from_utf8_lossy(&out.stderr)
            );
            // A ref moves if and only if the client was told so.
            assert_eq!(&now, if told_ok { &second } else { &first }, "{context}");
            if kind == "transient" {
                assert!(told_ok, "one transient fault is retried away: {context}");
            }
            fsck_clean(&backend, &repo);
            // The next push works.
            sb.git(&src, &["push", "-q", &url, "main"]);
            assert_eq!(remote_main(&sb, &url), second, "{context}");
            fsck_clean(&backend, &repo);
        }
        eprintln!(
            "push with a {kind} fault at request 1..={}: {outcomes:?}",
            requests + 1
        );
    }
}

fn a_crash_before_or_after_the_manifest_write(backend: Backend) {
    let clean = Server::start(&backend);
    let sb = Sandbox::new();
    let (src, first, second) = source(&sb);
    for (kind, moves) in [("crash", false), ("crash-after", true)] {
        let repo = format!("{kind}.git");
        sb.git(
            &src,
            &[
                "push",
                "-q",
                &clean.url(&repo),
                &format!("{first}:refs/heads/main"),
            ],
        );
        let spec = format!("op=put,key={kind}.git/manifest,nth=1,error={kind}");
        let dying = Server::start_with(&backend, &["--inject-faults", &spec]);
        let out = sb.git_output(&src, &["push", &dying.url(&repo), "main"]);
        drop(dying);
        assert!(
            !out.status.success(),
            "{kind}: the client is not told success"
        );
        // The push is in the repository exactly when its manifest write landed.
        let now = remote_main(&sb, &clean.url(&repo));
        assert_eq!(&now, if moves { &second } else { &first }, "{kind}");
        fsck_clean(&backend, kind);
        sb.git(&src, &["push", "-q", &clean.url(&repo), "main"]);
        assert_eq!(remote_main(&sb, &clean.url(&repo)), second);
    }
}

/// Requests in a quick retry policy: a test need not wait for real backoffs.
fn quick() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
        ..RetryPolicy::default()
    }
}

async fn repos_over(store: std::sync::Arc<dyn stowage_store::ObjectStore>) -> Repos {
    let retrying = stowage_store::RetryStore::new(store, quick());
    Repos::new(
        std::sync::Arc::new(retrying),
        Caches::new(16 << 20, 16 << 20, 16 << 20),
        RepoConfig {
            compact_after_push: false,
            ..RepoConfig::default()
        },
    )
}

async fn clean_repos(backend: &Backend) -> Repos {
    let (store, _) = open_layered(&backend.url(), &Layers::default())
        .await
        .expect("the store opens");
    repos_over(store).await
}

/// Repositories over the store with the faults of `spec` (retried as in the server),
/// and the fault layer, to ask whether any fired.
async fn faulty_repos(
    backend: &Backend,
    spec: &str,
) -> (
    Repos,
    std::sync::Arc<FaultStore<std::sync::Arc<dyn stowage_store::ObjectStore>>>,
) {
    let store = stowage::store_url::open(&backend.url())
        .await
        .expect("the store opens");
    let faults = std::sync::Arc::new(FaultStore::new(store, spec).expect("spec"));
    (repos_over(faults.clone()).await, faults)
}

/// A repository of three packs (three pushes), and the clone that made them.
fn three_packs(sb: &Sandbox, server: &Server, repo: &str, dir: &Path) {
    sb.git(sb.dir.path(), &["init", "-q", dir.to_str().expect("utf-8")]);
    for i in 0..3 {
        sb.commit(
            dir,
            &format!("f{i}.txt"),
            &format!("{repo} {i}\n"),
            &format!("c{i}"),
        );
        sb.git(
            dir,
            &["push", "-q", &server.url(&format!("{repo}.git")), "main"],
        );
    }
}

fn compaction_and_collection_survive_a_failure_at_every_step(backend: Backend) {
    let server = Server::start_with(&backend, &["--no-background-compaction"]);
    let sb = Sandbox::new();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let clean = runtime.block_on(clean_repos(&backend));
    let packs = |repo: &RepoName| {
        runtime
            .block_on(clean.snapshot(repo))
            .expect("manifest")
            .expect("exists")
            .manifest
            .packs
            .len()
    };
    let check = |repo: &str, dir: &Path| {
        fsck_clean(&backend, repo);
        let url = server.url(&format!("{repo}.git"));
        assert_eq!(
            remote_main(&sb, &url),
            sb.git(dir, &["rev-parse", "HEAD"]).trim()
        );
        let clone = sb.path(&format!("clone-{repo}"));
        let _ = std::fs::remove_dir_all(&clone);
        sb.git(
            sb.dir.path(),
            &["clone", "-q", &url, clone.to_str().expect("utf-8")],
        );
    };

    for kind in KINDS {
        // Compaction: a failure at request n, for every n until one run meets none.
        for nth in 1.. {
            assert!(nth < 60, "compaction kept meeting faults");
            let name = format!("compact-{kind}-{nth}");
            let repo = RepoName::new(&name).expect("name");
            let dir = sb.path(&name);
            three_packs(&sb, &server, &name, &dir);
            let spec = format!("key={name}.git/*,nth={nth},error={kind}");
            let (faulty, faults) = runtime.block_on(faulty_repos(&backend, &spec));
            let result = runtime.block_on(maintenance::compact(&faulty, &repo, Plan::All));
            let fired = faults.injected() > 0;
            check(&name, &dir);
            if kind == "transient" {
                assert!(
                    result.is_ok(),
                    "a transient fault is retried away: {result:?}"
                );
            }
            if !fired {
                assert!(result.as_ref().is_ok_and(|r| r.is_some()), "{result:?}");
                assert_eq!(packs(&repo), 1);
                eprintln!(
                    "compaction: a {kind} fault at each of its {} requests",
                    nth - 1
                );
                break;
            }
            // A later run finishes the job.
            runtime
                .block_on(maintenance::compact(&clean, &repo, Plan::All))
                .expect("compaction without faults");
            assert_eq!(packs(&repo), 1, "{kind} at {nth}");
            check(&name, &dir);
        }

        // Garbage collection after a compaction, the same way.
        for nth in 1.. {
            assert!(nth < 60, "collection kept meeting faults");
            let name = format!("gc-{kind}-{nth}");
            let repo = RepoName::new(&name).expect("name");
            let dir = sb.path(&name);
            three_packs(&sb, &server, &name, &dir);
            runtime
                .block_on(maintenance::compact(&clean, &repo, Plan::All))
                .expect("compaction");
            let spec = format!("key={name}.git/*,nth={nth},error={kind}");
            let (faulty, faults) = runtime.block_on(faulty_repos(&backend, &spec));
            let result =
                runtime.block_on(maintenance::collect_garbage(&faulty, &repo, Duration::ZERO));
            let fired = faults.injected() > 0;
            check(&name, &dir);
            if kind == "transient" {
                assert!(
                    result.is_ok(),
                    "a transient fault is retried away: {result:?}"
                );
            }
            if !fired {
                assert_eq!(result.expect("no fault").deleted.len(), 6);
                eprintln!(
                    "collection: a {kind} fault at each of its {} requests",
                    nth - 1
                );
                break;
            }
            runtime
                .block_on(maintenance::collect_garbage(&clean, &repo, Duration::ZERO))
                .expect("collection without faults");
            let left = runtime
                .block_on(stowage_store::ObjectStoreExt::list_all(
                    clean.store.as_ref(),
                    &format!("{name}.git/packs/"),
                ))
                .expect("list");
            assert_eq!(
                left.len(),
                2,
                "only the live pack's two files remain: {left:?}"
            );
            check(&name, &dir);
        }
    }
}
