//! Objects no ref reaches are never served, and can be purged: the secret pushed by
//! mistake and force-pushed away is in no clone, no fetch by id, and, after
//! `stowage gc --prune-now`, in no stored byte.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Backend, Sandbox, Server, post_with, stowage};

on_every_backend!(
    a_force_pushed_secret_is_not_served_and_is_purged,
    shallow_lines_do_not_reach_unreachable_history,
    pruning_runs_in_the_background_after_the_grace_period,
    pruning_while_pushing_loses_no_acknowledged_push,
);

const SECRET: &str = "AKIA-THIS-IS-A-LEAKED-SECRET\n";

/// Every object in the packs of a clone, reachable or not.
fn stored_objects(sb: &Sandbox, repo: &Path) -> Vec<String> {
    sb.git(
        repo,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ],
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Whether any pack file of `repo` in the store holds object `id`.
fn stored_anywhere(backend: &Backend, repo: &str, id: &str) -> bool {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = stowage::store_url::open(&backend.url())
            .await
            .expect("store");
        let id = gix_hash::ObjectId::from_hex(id.as_bytes()).expect("id");
        let dir = tempfile::tempdir().expect("temp dir");
        let keys =
            stowage_store::ObjectStoreExt::list_all(store.as_ref(), &format!("{repo}.git/packs/"))
                .await
                .expect("list");
        for meta in keys {
            if !meta.key.as_str().ends_with(".idx") {
                continue;
            }
            let bytes = store.get(&meta.key).await.expect("index").bytes;
            let path = dir.path().join("pack.idx");
            std::fs::write(&path, &bytes).expect("write");
            let index = gix_pack::index::File::at(&path, gix_hash::Kind::Sha1).expect("index");
            if index.lookup(id).is_some() {
                return true;
            }
        }
        false
    })
}

fn manifest(backend: &Backend, repo: &str) -> serde_json::Value {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = stowage::store_url::open(&backend.url())
            .await
            .expect("store");
        let key = stowage_store::Key::new(format!("{repo}.git/manifest")).expect("key");
        serde_json::from_slice(&store.get(&key).await.expect("manifest").bytes).expect("json")
    })
}

/// A repository with a secret pushed and then force-pushed away; returns the source,
/// the secret commit and the secret blob.
fn leak_and_rewind(sb: &Sandbox, url: &str) -> (std::path::PathBuf, String, String) {
    let src = sb.init_repo("src");
    sb.commit(&src, "a.txt", "a\n", "first");
    sb.git(&src, &["push", "-q", url, "main"]);
    let leaked = sb.commit(&src, "config.txt", SECRET, "oops");
    let blob = sb
        .git(&src, &["rev-parse", "HEAD:config.txt"])
        .trim()
        .to_owned();
    sb.git(&src, &["push", "-q", url, "main"]);
    sb.git(&src, &["reset", "-q", "--hard", "HEAD~1"]);
    sb.commit(&src, "b.txt", "b\n", "without the secret");
    sb.git(&src, &["push", "-q", "-f", url, "main"]);
    (src, leaked, blob)
}

fn a_force_pushed_secret_is_not_served_and_is_purged(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let url = server.url("demo.git");
    let (src, leaked, blob) = leak_and_rewind(&sb, &url);
    let root = sb.dir.path();
    assert!(
        stored_anywhere(&backend, "demo", &blob),
        "the secret is stored"
    );
    assert!(manifest(&backend, "demo")["unreachable_since"].is_u64());

    // No clone gets it: full (v0 and v2), blob:none, mirror.
    for (i, args) in [
        vec!["-c", "protocol.version=2", "clone", "-q"],
        vec!["-c", "protocol.version=0", "clone", "-q"],
        vec!["clone", "-q", "--filter=blob:none"],
        vec!["clone", "-q", "--mirror"],
    ]
    .into_iter()
    .enumerate()
    {
        let dir = format!("clone-{i}");
        let mut all = args.clone();
        all.extend([url.as_str(), dir.as_str()]);
        sb.git(root, &all);
        let objects = stored_objects(&sb, &sb.path(&dir));
        assert!(
            !objects.contains(&blob) && !objects.contains(&leaked),
            "{args:?} received the secret"
        );
    }
    // Nor a fetch by id, nor object-info.
    let clone = sb.path("clone-0");
    for id in [&leaked, &blob] {
        let out = sb.git_output(&clone, &["fetch", "origin", id]);
        assert!(!out.status.success(), "fetched {id}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not our ref"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut body = common::pkt(b"command=object-info\n");
    body.extend_from_slice(b"0001");
    body.extend(common::pkt(b"size\n"));
    body.extend(common::pkt(format!("oid {blob}\n").as_bytes()));
    body.extend_from_slice(b"0000");
    let (_, answer) = post_with(
        &server.url("demo.git/git-upload-pack"),
        "application/x-git-upload-pack-request",
        &body,
        &["Git-Protocol: version=2"],
    );
    assert!(
        String::from_utf8_lossy(&answer).contains(&format!("{blob} \n")),
        "object-info gives no size for an unreachable object"
    );

    // Purged: no stored byte holds it; the repository is whole.
    let out = stowage()
        .args(["gc", "demo", "--prune-now", "--store", &backend.url()])
        .output()
        .expect("gc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("pruned"), "{said}");
    assert!(
        !stored_anywhere(&backend, "demo", &blob),
        "the secret is still stored"
    );
    assert!(!stored_anywhere(&backend, "demo", &leaked));
    let m = manifest(&backend, "demo");
    assert!(m["unreachable_since"].is_null());
    assert_eq!(m["prunes"], 1);
    let fsck = stowage()
        .args(["fsck", "demo", "--store", &backend.url()])
        .output()
        .expect("fsck");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // Clean again, a full clone is the stored pack as it is.
    sb.git(root, &["clone", "-q", &url, "after"]);
    let stored = m["packs"][0]["hash"].as_str().expect("pack").to_owned();
    let received = std::fs::read_dir(sb.path("after/.git/objects/pack"))
        .expect("pack dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .any(|name| name == format!("pack-{stored}.pack"));
    assert!(received, "the clone got the stored pack byte for byte");
    assert_eq!(
        sb.git(&sb.path("after"), &["rev-parse", "HEAD"]),
        sb.git(&src, &["rev-parse", "HEAD"])
    );
}

/// The pack of a v2 fetch answer, taken out of its side-band frames.
fn pack_of_v2_answer(answer: &[u8]) -> Vec<u8> {
    let mut rest = answer;
    let mut in_pack = false;
    let mut pack = Vec::new();
    while rest.len() >= 4 {
        let len = usize::from_str_radix(std::str::from_utf8(&rest[..4]).expect("hex"), 16)
            .expect("length");
        if len < 4 {
            rest = &rest[4..];
            continue;
        }
        let data = &rest[4..len];
        if data == b"packfile\n" {
            in_pack = true;
        } else if in_pack && data.first() == Some(&1) {
            pack.extend_from_slice(&data[1..]);
        }
        rest = &rest[len..];
    }
    pack
}

fn shallow_lines_do_not_reach_unreachable_history(backend: Backend) {
    let server = Server::start(&backend);
    let sb = Sandbox::new();
    let url = server.url("demo.git");
    let src = sb.init_repo("src");
    let base = sb.commit(&src, "a.txt", "a\n", "first");
    sb.git(&src, &["push", "-q", &url, "main"]);
    // The secret, a commit on top of it, both pushed, then force-pushed away.
    let leaked = sb.commit(&src, "config.txt", SECRET, "oops");
    let blob = sb
        .git(&src, &["rev-parse", "HEAD:config.txt"])
        .trim()
        .to_owned();
    let above = sb.commit(&src, "more.txt", "more\n", "above the secret");
    sb.git(&src, &["push", "-q", &url, "main"]);
    sb.git(&src, &["reset", "-q", "--hard", &base]);
    let main = sb.commit(&src, "b.txt", "b\n", "without the secret");
    sb.git(&src, &["push", "-q", "-f", &url, "main"]);
    // A client claiming the commit above the secret as its shallow boundary, asking to
    // deepen from there.
    let mut body = common::pkt(b"command=fetch\n");
    body.extend_from_slice(b"0001");
    for line in [
        format!("want {main}\n"),
        format!("shallow {above}\n"),
        "deepen 1\n".to_owned(),
        "deepen-relative\n".to_owned(),
        "no-progress\n".to_owned(),
        "done\n".to_owned(),
    ] {
        body.extend(common::pkt(line.as_bytes()));
    }
    body.extend_from_slice(b"0000");
    let (status, answer) = post_with(
        &server.url("demo.git/git-upload-pack"),
        "application/x-git-upload-pack-request",
        &body,
        &["Git-Protocol: version=2"],
    );
    assert_eq!(status, 200);
    let pack = pack_of_v2_answer(&answer);
    assert!(!pack.is_empty(), "{}", String::from_utf8_lossy(&answer));
    let check = sb.path("check.git");
    sb.git(
        sb.dir.path(),
        &["init", "-q", "--bare", check.to_str().expect("utf-8")],
    );
    std::fs::write(sb.path("answer.pack"), &pack).expect("write");
    let indexed = sb
        .git_cmd(&check)
        .args(["index-pack", "--stdin"])
        .stdin(std::fs::File::open(sb.path("answer.pack")).expect("pack"))
        .output()
        .expect("index-pack");
    assert!(
        indexed.status.success(),
        "{}",
        String::from_utf8_lossy(&indexed.stderr)
    );
    let received = stored_objects(&sb, &check);
    assert!(
        !received.contains(&blob) && !received.contains(&leaked),
        "deepen-relative from an unreachable shallow commit sent the secret"
    );
}

fn pruning_runs_in_the_background_after_the_grace_period(backend: Backend) {
    let server = Server::start_with(&backend, &["--gc-grace-secs", "1"]);
    let sb = Sandbox::new();
    let url = server.url("demo.git");
    let (src, _, blob) = leak_and_rewind(&sb, &url);
    std::thread::sleep(Duration::from_millis(1500));
    // The next push finds the prune due.
    sb.commit(&src, "c.txt", "c\n", "later");
    sb.git(&src, &["push", "-q", &url, "main"]);
    let mut pruned = false;
    for _ in 0..100 {
        let m = manifest(&backend, "demo");
        if m["prunes"].as_u64() == Some(1) && m["unreachable_since"].is_null() {
            pruned = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pruned, "the background prune ran");
    let packs = manifest(&backend, "demo")["packs"].clone();
    assert_eq!(packs.as_array().map(Vec::len), Some(1), "{packs}");
    // The listed pack no longer has it; the retired ones go after the grace period.
    let listed = packs[0]["hash"].as_str().expect("hash").to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let has = runtime.block_on(async {
        let store = stowage::store_url::open(&backend.url())
            .await
            .expect("store");
        let key =
            stowage_store::Key::new(format!("demo.git/packs/pack-{listed}.idx")).expect("key");
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("i.idx");
        std::fs::write(&path, store.get(&key).await.expect("idx").bytes).expect("write");
        let index = gix_pack::index::File::at(&path, gix_hash::Kind::Sha1).expect("index");
        index
            .lookup(gix_hash::ObjectId::from_hex(blob.as_bytes()).expect("id"))
            .is_some()
    });
    assert!(!has, "the live pack holds no unreachable object");
    sb.git(sb.dir.path(), &["clone", "-q", &url, "after"]);
}

fn pruning_while_pushing_loses_no_acknowledged_push(backend: Backend) {
    let server = Server::start_with(&backend, &["--no-background-compaction"]);
    let sb = Sandbox::new();
    let url = server.url("race.git");
    let src = sb.init_repo("src");
    sb.commit(&src, "a.txt", "a\n", "first");
    sb.git(&src, &["push", "-q", &url, "main"]);
    let rounds = 12;
    let acknowledged = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        // One client moves main forward; another keeps rewriting a branch (garbage).
        scope.spawn(|| {
            let dir = sb.path("forward");
            sb.git(
                sb.dir.path(),
                &["clone", "-q", &url, dir.to_str().expect("utf-8")],
            );
            for i in 0..rounds {
                let commit = sb.commit(&dir, &format!("f{i}.txt"), &format!("{i}\n"), "forward");
                if sb
                    .git_output(&dir, &["push", "-q", "origin", "main"])
                    .status
                    .success()
                {
                    acknowledged.lock().expect("lock").push(commit);
                } else {
                    // Refused (a prune landed meanwhile): the next push carries it.
                    let _ = sb.git_output(&dir, &["pull", "-q", "--rebase", "origin", "main"]);
                }
            }
        });
        scope.spawn(|| {
            let dir = sb.path("rewrite");
            sb.git(
                sb.dir.path(),
                &["clone", "-q", &url, dir.to_str().expect("utf-8")],
            );
            sb.git(&dir, &["checkout", "-q", "-b", "scratch"]);
            for i in 0..rounds {
                sb.git(&dir, &["reset", "-q", "--hard", "origin/main"]);
                sb.commit(
                    &dir,
                    &format!("s{i}.txt"),
                    &format!("scratch {i}\n"),
                    "scratch",
                );
                let _ = sb.git_output(&dir, &["push", "-q", "-f", "origin", "scratch"]);
                let _ = sb.git_output(&dir, &["fetch", "-q", "origin"]);
            }
        });
        scope.spawn(|| {
            for _ in 0..rounds / 2 {
                let _ = stowage()
                    .args(["gc", "race", "--prune-now", "--store", &backend.url()])
                    .output();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    });
    let check = sb.path("check");
    sb.git(
        sb.dir.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            &url,
            check.to_str().expect("utf-8"),
        ],
    );
    for commit in acknowledged.lock().expect("lock").iter() {
        let out = sb.git_output(&check, &["merge-base", "--is-ancestor", commit, "main"]);
        assert!(out.status.success(), "acknowledged {commit} was lost");
    }
    let fsck = stowage()
        .args(["fsck", "race", "--store", &backend.url()])
        .output()
        .expect("fsck");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let prunes = manifest(&backend, "race")["prunes"].as_u64().unwrap_or(0);
    eprintln!(
        "pruning while pushing: {prunes} prunes, {} of {rounds} pushes acknowledged",
        acknowledged.lock().expect("lock").len()
    );
    assert!(prunes > 0, "no prune landed");
}
