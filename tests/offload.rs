//! Clones offloaded to the bucket on S3 (LocalStack), with the real git client:
//! `--packfile-uris` points a v2 full clone at the stored packs by signed link, and
//! `--bundle-uri` advertises the bundle compaction stores beside a pack of everything.
//! Both change what the server sends, never what the client ends up with.

mod common;

use std::path::Path;

use common::{
    Backend, Sandbox, Server, all_objects, client_version, get, on_fs, on_s3, random_bytes, stowage,
};

#[test]
fn packfile_uris_send_stored_packs_by_link() {
    on_s3(packfile_uris_scenario);
}

#[test]
fn bundle_uri_lists_the_bundle_of_compacted_packs() {
    on_s3(bundle_uri_scenario);
}

#[test]
fn offloading_needs_a_store_that_signs_links() {
    on_fs(|backend| {
        let out = stowage()
            .args(["serve", "--listen", "127.0.0.1:0", "--packfile-uris"])
            .args(["--store", &backend.url()])
            .output()
            .expect("stowage runs");
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("need a store that signs links"), "{said}");
    });
}

/// A repository of two pushes (two packs) with some incompressible content.
fn published(sb: &Sandbox, url: &str) -> std::path::PathBuf {
    let src = sb.init_repo("src");
    for (i, seed) in [(0, 1u64), (1, 2)] {
        std::fs::write(
            src.join(format!("data{i}.bin")),
            random_bytes(200_000, seed),
        )
        .expect("write");
        sb.commit(
            &src,
            &format!("f{i}.txt"),
            &format!("{i}\n"),
            &format!("c{i}"),
        );
        sb.git(&src, &["push", "-q", url, "main"]);
    }
    sb.git(&src, &["tag", "-a", "-m", "v1", "v1"]);
    sb.git(&src, &["push", "-q", url, "v1"]);
    src
}

/// Bytes the server sent in answers to upload-pack requests, from `/metrics`.
fn upload_pack_bytes(server: &Server) -> u64 {
    metric(
        server,
        "stowage_http_response_bytes_total{service=\"upload_pack\"}",
    )
}

fn metric(server: &Server, name: &str) -> u64 {
    let (status, body) = get(&format!("{}/metrics", server.base));
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn traced_clone(sb: &Sandbox, config: &[&str], url: &str, name: &str) -> String {
    let trace = sb.path(&format!("{name}.trace"));
    let mut cmd = sb.git_cmd(sb.dir.path());
    cmd.env("GIT_TRACE_PACKET", &trace)
        .arg("-c")
        .arg("protocol.version=2");
    for c in config {
        cmd.arg("-c").arg(c);
    }
    let out = cmd
        .args(["clone", "-q", "--mirror", url, name])
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(trace).unwrap_or_default()
}

fn same_repository(sb: &Sandbox, clone: &Path, src: &Path) {
    sb.git(clone, &["fsck", "--full", "--strict"]);
    assert_eq!(all_objects(sb, clone), all_objects(sb, src));
    assert_eq!(
        sb.git(clone, &["rev-parse", "main", "v1"]),
        sb.git(src, &["rev-parse", "main", "v1"])
    );
}

fn packfile_uris_scenario(backend: Backend) {
    let server = Server::start_with(&backend, &["--packfile-uris", "--offload-min-bytes", "0"]);
    let sb = Sandbox::new();
    let url = server.url("offload.git");
    let src = published(&sb, &url);

    let before = upload_pack_bytes(&server);
    let trace = traced_clone(&sb, &[], &url, "streamed");
    let streamed = upload_pack_bytes(&server) - before;
    assert!(
        !trace.contains("git< packfile-uris"),
        "asked for none, got none"
    );
    same_repository(&sb, &sb.path("streamed"), &src);

    let before = upload_pack_bytes(&server);
    let trace = traced_clone(&sb, &["fetch.uriProtocols=http,https"], &url, "linked");
    let linked = upload_pack_bytes(&server) - before;
    assert!(trace.contains("git< packfile-uris"), "{trace}");
    same_repository(&sb, &sb.path("linked"), &src);
    assert!(
        linked * 20 < streamed,
        "the packs came from the bucket: {linked} bytes sent, {streamed} without links"
    );
    assert!(
        metric(
            &server,
            "stowage_offload_links_total{kind=\"packfile-uri\"}"
        ) >= 2
    );

    // A fetch with something in common gets its pack as always.
    let work = sb.path("work");
    sb.git(sb.dir.path(), &["clone", "-q", &url, "work"]);
    let pushed = sb.commit(&work, "later.txt", "later\n", "later");
    sb.git(&work, &["push", "-q", "origin", "main"]);
    let linked = sb.path("linked");
    let out = sb
        .git_cmd(&linked)
        .args([
            "-c",
            "fetch.uriProtocols=http,https",
            "fetch",
            "-q",
            "origin",
        ])
        .output()
        .expect("git fetch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sb.git(&linked, &["rev-parse", "main"]).trim(), pushed);
    sb.git(&linked, &["fsck", "--full"]);
}

fn bundle_uri_scenario(backend: Backend) {
    let server = Server::start_with(
        &backend,
        &[
            "--bundle-uri",
            "--offload-min-bytes",
            "0",
            "--no-background-compaction",
        ],
    );
    let sb = Sandbox::new();
    let url = server.url("bundled.git");
    let src = published(&sb, &url);

    // No bundle before a compaction made one: the list is empty, the clone as always.
    let trace = traced_clone(&sb, &["transfer.bundleURI=true"], &url, "before");
    assert!(trace.contains("bundle-uri"), "advertised: {trace}");
    same_repository(&sb, &sb.path("before"), &src);

    // Two processes compact at once: each writes the bundle with Create and lists it by
    // compare-and-swap; one wins, the other finds its packs replaced (or its identical
    // pack listed) and changes nothing.
    let racing: Vec<_> = (0..2)
        .map(|_| {
            stowage()
                .args(["gc", "bundled.git", "--bundle-min-bytes", "0"])
                .args(["--store", &backend.url()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("stowage gc")
        })
        .collect();
    for gc in racing {
        let out = gc.wait_with_output().expect("stowage gc ends");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A commit after the bundle: the clone fetches it from the server.
    let pushed = sb.commit(&src, "after.txt", "after\n", "after the bundle");
    sb.git(&src, &["push", "-q", &url, "main"]);

    let before = upload_pack_bytes(&server);
    let trace = traced_clone(&sb, &[], &url, "plain");
    let streamed = upload_pack_bytes(&server) - before;
    same_repository(&sb, &sb.path("plain"), &src);

    let before = upload_pack_bytes(&server);
    let trace_b = traced_clone(&sb, &["transfer.bundleURI=true"], &url, "bundled");
    let bundled = upload_pack_bytes(&server) - before;
    let clone = sb.path("bundled");
    same_repository(&sb, &clone, &src);
    if client_version() < (2, 47) {
        // git 2.39 (the older client tested) takes no bundle URIs: it never asks, and
        // clones as always.
        assert!(!trace_b.contains("command=bundle-uri"), "{trace_b}");
        assert!(
            bundled * 2 > streamed,
            "{bundled} bytes, {streamed} without"
        );
        return;
    }
    assert!(trace_b.contains("bundle.version=1"), "{trace_b}");
    assert_eq!(sb.git(&clone, &["rev-parse", "main"]).trim(), pushed);
    assert!(
        bundled * 20 < streamed,
        "the bulk came from the bundle: {bundled} bytes sent, {streamed} without ({trace})"
    );
    assert!(metric(&server, "stowage_offload_links_total{kind=\"bundle-uri\"}") >= 1);

    let fsck = stowage()
        .args(["fsck", "bundled.git", "--store", &backend.url()])
        .output()
        .expect("stowage fsck");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    // A rewound ref leaves objects no ref reaches, which the bundle holds: no bundle is
    // listed until a prune has rewritten the packs.
    sb.git(&src, &["push", "-q", "-f", &url, "main~2:main"]);
    let trace = traced_clone(&sb, &["transfer.bundleURI=true"], &url, "rewound");
    assert!(!trace.contains("bundle.version=1"), "{trace}");
    let rewound = sb.path("rewound");
    sb.git(&rewound, &["fsck", "--full"]);
    assert_eq!(
        sb.git(&rewound, &["rev-parse", "main"]),
        sb.git(&src, &["rev-parse", "main~2"])
    );
}
