//! Protocol conformance: every scenario runs twice, once against stowage and once
//! against `git http-backend` (git's own Smart HTTP server, run as CGI by a small bridge
//! in `common/cgi.rs`), with `GIT_TRACE_PACKET` on the client. Both servers are given the
//! same repository (built with fixed dates, so object ids are the same), the traces are
//! normalised (see [`normalise_trace`]) and compared packet by packet, in both
//! directions, as are the results: refs, the shallow file, every object in the client
//! repository and what git prints. Each scenario runs on a sha1 and on a sha256
//! repository.
//!
//! What still differs is listed in [`EXCEPTIONS`], each with its reason; those marked
//! `STOWAGE-GAP` are differences stowage should close. Any other difference fails the
//! scenario with a diff of the two normalised traces (`-` git http-backend, `+` stowage).
//!
//! git http-backend serves its repository with `uploadpack.allowFilter` (stowage always
//! serves filters); scenarios set more where they need it ([`Side::reference_config`]).
//! The store is the filesystem: the protocol does not depend on it.
//!
//! `cargo test --test conformance`; with `STOWAGE_CONFORMANCE_DUMP=<dir>` every
//! scenario's normalised steps are written there, one file per server.

#[path = "common/cgi.rs"]
mod cgi;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Backend, Sandbox, Server};

/// The name of the repository on both servers.
const REPO: &str = "repo.git";

/// A known difference between the two servers' normalised traces or results.
#[derive(Debug)]
struct Exception {
    /// The scenario it applies to: a name, `name*`, `*suffix` or `*` for all. One that
    /// names scenarios (does not start with `*`) must be seen in each of them, so that
    /// none outlives the difference it explains.
    scenario: &'static str,
    /// The step it applies to (as `"clone: packets"`), a pattern as `scenario`.
    step: &'static str,
    /// The line (without its `who<` / `who>` prefix) as it is with git http-backend; a
    /// trailing `*` matches any rest. Empty when only stowage has a line.
    reference: &'static str,
    /// What stowage has instead; empty when stowage has no such line. With an empty
    /// `reference`, a pattern (trailing `*`) for lines stowage may have in addition.
    stowage: &'static str,
    /// Why the difference is there. `STOWAGE-GAP:` marks one stowage should close.
    reason: &'static str,
}

/// Differences that remain. Capability lists are split one capability a line (`+ cap`)
/// by the normalisation, so that each capability is its own exception.
const EXCEPTIONS: &[Exception] = &[
    // v0 upload-pack advertisement.
    Exception {
        scenario: "*",
        step: "*",
        reference: "",
        stowage: "+ allow-tip-sha1-in-want",
        reason: "stowage serves any object reachable from a ref (what partial clones \
                 need to fetch missing objects over v0); git does only with \
                 uploadpack.allowTipSHA1InWant",
    },
    Exception {
        scenario: "*",
        step: "*",
        reference: "",
        stowage: "+ allow-reachable-sha1-in-want",
        reason: "as allow-tip-sha1-in-want; git needs uploadpack.allowReachableSHA1InWant",
    },
    // v0 receive-pack advertisement.
    Exception {
        scenario: "*",
        step: "*",
        reference: "",
        stowage: "+ push-options",
        reason: "stowage accepts push options; git advertises them only with \
                 receive.advertisePushOptions",
    },
];

// ---------------------------------------------------------------------------------
// Scenarios

/// Declares a test per protocol version (0, 1 and 2) for each `fn scenario(side,
/// version)`; the scenario is named `<fn>-v<version>` (for [`Exception::scenario`]).
macro_rules! every_version {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn v0() {
                    super::conform(concat!(stringify!($scenario), "-v0"), |side| {
                        super::$scenario(side, "0")
                    });
                }
                #[test]
                fn v1() {
                    super::conform(concat!(stringify!($scenario), "-v1"), |side| {
                        super::$scenario(side, "1")
                    });
                }
                #[test]
                fn v2() {
                    super::conform(concat!(stringify!($scenario), "-v2"), |side| {
                        super::$scenario(side, "2")
                    });
                }
            }
        )*
    };
}

every_version!(
    ls_remote,
    clone,
    clone_empty,
    incremental_fetch,
    tag_following,
    single_branch_clone,
    shallow_depth_1,
    shallow_depth_2_across_a_merge,
    shallow_deepen,
    shallow_since,
    shallow_exclude,
    shallow_unshallow,
    filter_blob_none,
    push,
    push_atomic,
);

// Filters in protocol v2 only (v0 has `filter_blob_none`).
#[test]
fn filter_blob_limit() {
    conform("filter_blob_limit", |side| filter(side, "blob:limit=1k"));
}

#[test]
fn filter_tree_0() {
    conform("filter_tree_0", |side| filter(side, "tree:0"));
}

#[test]
fn filter_object_type_commit() {
    conform("filter_object_type_commit", |side| {
        filter(side, "object:type=commit")
    });
}

#[test]
fn filter_combine() {
    conform("filter_combine", |side| {
        filter(side, "combine:blob:none+tree:1")
    });
}

#[test]
fn filter_sparse() {
    conform("filter_sparse", |side| {
        let src = published(side);
        side.commit(&src, ".sparse", "big*\n!big7.bin\n", 10);
        side.publish(&src, &["main"]);
        let root = side.root();
        let url = side.url();
        for (name, spec) in [
            ("sparse", "--filter=sparse:oid=main:.sparse"),
            (
                "combined",
                "--filter=combine:sparse%3Aoid%3Dmain%3A.sparse+blob:limit=7k",
            ),
        ] {
            let args = [
                "-c",
                "protocol.version=2",
                "clone",
                "--no-checkout",
                spec,
                &url,
                name,
            ];
            side.traced(name, &root, &args);
            side.results(name, &root.join(name));
        }
    });
}

/// `-c protocol.version=<v>`.
fn pv(version: &str) -> String {
    format!("protocol.version={version}")
}

/// The source repository published to the server with all its branches and tags.
fn published(side: &mut Side) -> PathBuf {
    let src = side.source();
    side.publish(&src, &["main", "side", "--tags"]);
    src
}

/// A traced `git clone <extra> URL <name>` in protocol `version`; returns the clone.
fn clone_traced(side: &mut Side, version: &str, extra: &[&str], name: &str) -> PathBuf {
    let root = side.root();
    let v = pv(version);
    let url = side.url();
    let mut args = vec!["-c", &v, "clone"];
    args.extend_from_slice(extra);
    args.extend([url.as_str(), name]);
    side.traced("clone", &root, &args);
    root.join(name)
}

fn ls_remote(side: &mut Side, version: &str) {
    published(side);
    let root = side.root();
    let (v, url) = (pv(version), side.url());
    side.traced("ls-remote", &root, &["-c", &v, "ls-remote", &url]);
    side.traced("symref", &root, &["-c", &v, "ls-remote", "--symref", &url]);
    side.traced("heads", &root, &["-c", &v, "ls-remote", "--heads", &url]);
    side.traced("pattern", &root, &["-c", &v, "ls-remote", &url, "v1"]);
}

fn clone(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(side, version, &[], "clone");
    side.results("clone", &clone);
}

/// A repository with no commits yet: HEAD is unborn.
fn clone_empty(side: &mut Side, version: &str) {
    let clone = clone_traced(side, version, &[], "clone");
    side.results("clone", &clone);
}

/// New commits, a new branch and a new annotated tag after a clone; then a fetch with
/// nothing new.
fn incremental_fetch(side: &mut Side, version: &str) {
    let src = published(side);
    let clone = clone_traced(side, version, &[], "clone");
    side.commit(&src, "later.txt", "later\n", 20);
    side.commit(&src, "later.txt", "later 2\n", 21);
    side.dated(&src, 21, &["tag", "-a", "-m", "version 2", "v2"]);
    side.sb.git(&src, &["branch", "feature", "HEAD~1"]);
    side.publish(&src, &["main", "feature", "v2"]);
    let v = pv(version);
    side.traced("fetch", &clone, &["-c", &v, "fetch", "origin"]);
    side.results("fetch", &clone);
    side.traced("no-op fetch", &clone, &["-c", &v, "fetch", "origin"]);
}

/// Tags reach a client by following (`include-tag`: annotated and lightweight tags on
/// what is fetched, and only those) and by `--tags`.
fn tag_following(side: &mut Side, version: &str) {
    let src = published(side);
    let clone = clone_traced(side, version, &[], "clone");
    side.sb.git(&src, &["checkout", "-q", "side"]);
    side.commit(&src, "side.txt", "side 3\n", 23);
    side.dated(&src, 23, &["tag", "-a", "-m", "on side", "v2"]);
    side.sb.git(&src, &["tag", "light2"]);
    side.sb
        .git(&src, &["checkout", "-q", "-b", "other", "main"]);
    side.commit(&src, "other.txt", "other\n", 24);
    side.dated(&src, 24, &["tag", "-a", "-m", "elsewhere", "elsewhere"]);
    side.publish(&src, &["side", "other", "v2", "light2", "elsewhere"]);
    let v = pv(version);
    side.traced("fetch side", &clone, &["-c", &v, "fetch", "origin", "side"]);
    side.results("fetch side", &clone);
    side.traced(
        "fetch --tags",
        &clone,
        &["-c", &v, "fetch", "--tags", "origin"],
    );
    side.results("fetch --tags", &clone);
}

/// A clone of one branch gets that branch and the tags on its history.
fn single_branch_clone(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(
        side,
        version,
        &["--single-branch", "--branch", "side"],
        "clone",
    );
    side.results("clone", &clone);
}

fn shallow_depth_1(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(side, version, &["--depth", "1"], "clone");
    side.results("clone", &clone);
}

/// main's tip is a merge: two parents are cut.
fn shallow_depth_2_across_a_merge(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(
        side,
        version,
        &["--depth", "2", "--no-single-branch"],
        "clone",
    );
    side.results("clone", &clone);
}

fn shallow_deepen(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(side, version, &["--depth", "1"], "clone");
    let v = pv(version);
    side.traced("deepen", &clone, &["-c", &v, "fetch", "--deepen=2"]);
    side.results("deepen", &clone);
}

fn shallow_since(side: &mut Side, version: &str) {
    published(side);
    let since = format!("--shallow-since=@{}", 1_600_000_000 + 5 * 86_400);
    let clone = clone_traced(side, version, &[&since], "clone");
    side.results("clone", &clone);
}

fn shallow_exclude(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(side, version, &["--shallow-exclude=side"], "clone");
    side.results("clone", &clone);
}

fn shallow_unshallow(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(side, version, &["--depth", "1"], "clone");
    let v = pv(version);
    side.traced("unshallow", &clone, &["-c", &v, "fetch", "--unshallow"]);
    side.results("unshallow", &clone);
}

fn filter_blob_none(side: &mut Side, version: &str) {
    // Fetching the missing blobs wants objects no ref points at; over v0 git allows
    // that only when told to (stowage always does).
    side.reference_config("uploadpack.allowTipSHA1InWant", "true");
    side.reference_config("uploadpack.allowReachableSHA1InWant", "true");
    published(side);
    let clone = clone_traced(
        side,
        version,
        &["--no-checkout", "--filter=blob:none"],
        "clone",
    );
    side.results("clone", &clone);
    // The checkout fetches the missing blobs.
    let v = pv(version);
    side.traced(
        "checkout",
        &clone,
        &["-c", &v, "checkout", "-q", "-f", "main"],
    );
    side.results("checkout", &clone);
}

/// A partial clone in protocol v2, without checkout (which would fetch more).
fn filter(side: &mut Side, spec: &str) {
    published(side);
    let filter = format!("--filter={spec}");
    let clone = clone_traced(side, "2", &["--no-checkout", &filter], "clone");
    side.results("clone", &clone);
}

/// A new branch, an update, tags, a forced rewind and a delete, one push each.
fn push(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(side, version, &[], "clone");
    let v = pv(version);
    side.commit(&clone, "pushed.txt", "pushed\n", 30);
    side.sb.git(&clone, &["branch", "topic", "HEAD~1"]);
    side.dated(&clone, 30, &["tag", "-a", "-m", "pushed", "v3"]);
    side.sb.git(&clone, &["tag", "light3", "HEAD~1"]);
    side.traced(
        "push",
        &clone,
        &["-c", &v, "push", "origin", "main", "topic", "v3", "light3"],
    );
    side.remote_refs("push");
    side.traced(
        "force",
        &clone,
        &["-c", &v, "push", "-f", "origin", "main~1:main"],
    );
    side.remote_refs("force");
    side.traced(
        "delete",
        &clone,
        &["-c", &v, "push", "origin", "--delete", "topic", "light3"],
    );
    side.remote_refs("delete");
}

/// An atomic push of two branches, then one the client refuses as a whole.
fn push_atomic(side: &mut Side, version: &str) {
    published(side);
    let clone = clone_traced(side, version, &[], "clone");
    let v = pv(version);
    side.commit(&clone, "atomic.txt", "atomic\n", 31);
    side.sb.git(&clone, &["branch", "-f", "side", "HEAD"]);
    side.traced(
        "atomic",
        &clone,
        &[
            "-c",
            &v,
            "push",
            "--atomic",
            "origin",
            "main",
            "side",
            "main:refs/heads/new",
        ],
    );
    side.remote_refs("atomic");
    // side moves back: not a fast-forward, so the client refuses the whole push.
    side.sb.git(&clone, &["branch", "-f", "side", "HEAD~2"]);
    side.commit(&clone, "atomic.txt", "atomic 2\n", 32);
    let out = side.traced(
        "refused",
        &clone,
        &["-c", &v, "push", "--atomic", "origin", "main", "side"],
    );
    assert!(
        !out.status.success(),
        "a non-fast-forward atomic push fails"
    );
    side.remote_refs("refused");
}

/// Two v2 features git http-backend offers when configured to: `ref-in-want`
/// (`uploadpack.allowRefInWant`) and `session-id` (`transfer.advertiseSID`, which the
/// client sets too).
#[test]
fn ref_in_want_and_session_id() {
    conform("ref_in_want_and_session_id-v2", |side| {
        side.reference_config("uploadpack.allowRefInWant", "true");
        side.reference_config("transfer.advertiseSID", "true");
        let src = published(side);
        let clone = clone_traced(side, "2", &["-c", "transfer.advertiseSID=true"], "clone");
        side.commit(&src, "later.txt", "later\n", 20);
        side.publish(&src, &["main"]);
        side.traced(
            "fetch",
            &clone,
            &[
                "-c",
                "protocol.version=2",
                "-c",
                "transfer.advertiseSID=true",
                "fetch",
                "origin",
            ],
        );
        side.results("fetch", &clone);
    });
}

/// A push whose pack is over 1 MiB: git sends the request body chunked.
#[test]
fn push_large() {
    conform("push_large", |side| {
        published(side);
        let clone = clone_traced(side, "0", &[], "clone");
        // Incompressible and the same on every run: a linear congruential generator.
        let mut state: u32 = 1;
        let noise: Vec<u8> = (0..1_500_000)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as u8
            })
            .collect();
        std::fs::write(clone.join("noise.bin"), noise).expect("write");
        side.sb.git(&clone, &["add", "-A"]);
        side.dated(&clone, 40, &["commit", "-q", "-m", "noise"]);
        side.traced("push", &clone, &["push", "origin", "main"]);
        side.remote_refs("push");
    });
}

/// Every exception says why it is there.
#[test]
fn exceptions_have_reasons() {
    for e in EXCEPTIONS {
        assert!(!e.reason.trim().is_empty(), "{e:?}");
        assert!(!(e.reference.is_empty() && e.stowage.is_empty()), "{e:?}");
    }
}

#[test]
fn normalisation() {
    let trace = "\
12:00:00.000001 pkt-line.c:86           packet:          git< 1111111111111111111111111111111111111111 HEAD\\0b a agent=git/9 session-id=xyz
12:00:00.000002 pkt-line.c:86           packet:        clone< \\2Counting objects
12:00:00.000003 pkt-line.c:86           packet:        clone< shallow 2222222222222222222222222222222222222222
12:00:00.000004 pkt-line.c:86           packet:        clone< shallow 1111111111111111111111111111111111111111
12:00:00.000005 pkt-line.c:86           packet:     sideband< \\1000eunpack ok
12:00:00.000006 pkt-line.c:86           packet:        clone> want 3333333333333333333333333333333333333333 z y
";
    assert_eq!(
        normalise_trace(trace),
        [
            "clone< shallow 1111111111111111111111111111111111111111",
            "clone< shallow 2222222222222222222222222222222222222222",
            "clone> want 3333333333333333333333333333333333333333",
            "clone> + y",
            "clone> + z",
            "git< 1111111111111111111111111111111111111111 HEAD",
            "git< + a",
            "git< + agent=git/9",
            "git< + b",
            "git< + session-id=<id>",
        ]
    );
}

// ---------------------------------------------------------------------------------
// Running a scenario on both servers

/// Which server a run talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `git http-backend`, the reference.
    Git,
    Stowage,
}

/// The server behind a run, kept alive for the run's length.
#[derive(Debug)]
enum Remote {
    Git(cgi::GitHttpBackend),
    Stowage {
        server: Server,
        /// The store's directory, removed when dropped.
        store: Backend,
        /// Options the server runs with.
        options: Vec<&'static str>,
    },
}

/// One named step of a scenario: a traced git command or a look at a repository.
#[derive(Debug)]
struct Step {
    label: String,
    lines: Vec<String>,
}

/// One run of a scenario against one server: its sandbox and what it recorded.
#[derive(Debug)]
struct Side {
    sb: Sandbox,
    /// The repository's object format: `sha1` or `sha256`.
    format: &'static str,
    remote: Remote,
    steps: Vec<Step>,
    traces: usize,
}

impl Side {
    fn start(kind: Kind, format: &'static str) -> Side {
        let sb = Sandbox::new();
        let remote = match kind {
            Kind::Git => {
                let root = sb.path("served");
                std::fs::create_dir_all(&root).expect("served dir");
                let format_flag = format!("--object-format={format}");
                sb.git(&root, &["init", "-q", "--bare", &format_flag, REPO]);
                // Filters are off by default in git; stowage always serves them.
                sb.git(
                    &root.join(REPO),
                    &["config", "uploadpack.allowFilter", "true"],
                );
                Remote::Git(cgi::GitHttpBackend::start(&root, &sb.path("home")))
            }
            Kind::Stowage => {
                let backend = Backend::fs();
                let created = common::stowage()
                    .args(["repo", "create", REPO.trim_end_matches(".git")])
                    .args(["--object-format", format])
                    .args(["--store", &backend.url()])
                    .output()
                    .expect("stowage repo create");
                assert!(
                    created.status.success(),
                    "{}",
                    String::from_utf8_lossy(&created.stderr)
                );
                // git http-backend has no access control of its own: compare with
                // stowage's off too.
                let options = vec!["--no-auth"];
                Remote::Stowage {
                    server: Server::start_with(&backend, &options),
                    store: backend,
                    options,
                }
            }
        };
        Side {
            sb,
            format,
            remote,
            steps: Vec::new(),
            traces: 0,
        }
    }

    fn base(&self) -> &str {
        match &self.remote {
            Remote::Git(server) => &server.base,
            Remote::Stowage { server, .. } => &server.base,
        }
    }

    /// The repository's URL.
    fn url(&self) -> String {
        format!("{}/{REPO}", self.base())
    }

    /// The sandbox directory, where clients are created.
    fn root(&self) -> PathBuf {
        self.sb.dir.path().to_owned()
    }

    /// Sets `key` in the configuration of git http-backend's repository; for stowage,
    /// turns on the option named after it (restarting the server), if it has one.
    fn reference_config(&mut self, key: &str, value: &str) {
        match &mut self.remote {
            Remote::Git(_) => {
                let repo = self.sb.path("served").join(REPO);
                self.sb.git(&repo, &["config", key, value]);
            }
            Remote::Stowage {
                server,
                store,
                options,
            } => {
                let option = match (key, value) {
                    ("uploadpack.allowRefInWant", "true") => "--allow-ref-in-want",
                    ("transfer.advertiseSID", "true") => "--advertise-session-id",
                    _ => return,
                };
                options.push(option);
                *server = Server::start_with(store, options);
            }
        }
    }

    /// Runs git with `date` (days into the history) as author and committer date.
    fn dated(&self, repo: &Path, day: i64, args: &[&str]) {
        let date = format!("@{} +0000", 1_600_000_000 + day * 86_400);
        let out = self
            .sb
            .git_cmd(repo)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Commits `content` to `file` on day `day`.
    fn commit(&self, repo: &Path, file: &str, content: &str, day: i64) {
        std::fs::write(repo.join(file), content).expect("write");
        self.sb.git(repo, &["add", "-A"]);
        self.dated(
            repo,
            day,
            &["commit", "-q", "-m", &format!("{file} on day {day}")],
        );
    }

    /// The source repository: `main` whose tip merges `side`, files of several sizes
    /// (big ones over 1 KiB), an annotated tag `v1` on main and a lightweight tag `light`
    /// on side. Object ids are fixed.
    fn source(&self) -> PathBuf {
        let src = self.sb.path("src");
        std::fs::create_dir_all(&src).expect("dir");
        let format_flag = format!("--object-format={}", self.format);
        self.sb.git(&src, &["init", "-q", &format_flag]);
        for day in 1..=3 {
            self.commit(&src, &format!("f{day}.txt"), &format!("v{day}\n"), day);
        }
        self.sb
            .git(&src, &["checkout", "-q", "-b", "side", "HEAD~1"]);
        self.commit(&src, "side.txt", "side\n", 4);
        self.commit(&src, "side.txt", "side 2\n", 5);
        self.sb.git(&src, &["tag", "light"]);
        self.sb.git(&src, &["checkout", "-q", "main"]);
        for day in 6..=8 {
            let big = format!("{}\n", "x".repeat(900 * day as usize));
            self.commit(&src, &format!("big{day}.bin"), &big, day);
        }
        self.dated(&src, 8, &["tag", "-a", "-m", "version 1", "v1", "HEAD~1"]);
        self.dated(
            &src,
            9,
            &["merge", "-q", "--no-ff", "-m", "merge side", "side"],
        );
        src
    }

    /// Pushes `refspecs` of `src` to the server, untraced.
    fn publish(&self, src: &Path, refspecs: &[&str]) {
        let mut args = vec!["push", "-q", "-f"];
        let url = self.url();
        args.push(&url);
        args.extend_from_slice(refspecs);
        self.sb.git(src, &args);
    }

    /// Runs git traced in `cwd` and records the normalised trace, what it printed and
    /// how it exited, as step `label`.
    fn traced(&mut self, label: &str, cwd: &Path, args: &[&str]) -> Output {
        self.traces += 1;
        let trace = self.sb.path(&format!("trace-{}", self.traces));
        let out = self
            .sb
            .git_cmd(cwd)
            .env("GIT_TRACE_PACKET", &trace)
            .args(args)
            .output()
            .expect("git runs");
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        self.record(&format!("{label}: packets"), normalise_trace(&text));
        let mut printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .map(|line| self.local(line))
            .collect();
        printed.push(format!("exit: {}", out.status.code().unwrap_or(-1)));
        self.record(&format!("{label}: output"), printed);
        out
    }

    /// Records the refs, shallow boundary and objects of the client repository `repo`.
    fn results(&mut self, label: &str, repo: &Path) {
        let refs = self.sb.git(
            repo,
            &[
                "for-each-ref",
                "--format=%(objectname) %(refname) %(symref)",
            ],
        );
        self.record(&format!("{label}: refs"), lines(&refs, false));
        let git_dir = self.sb.git(repo, &["rev-parse", "--absolute-git-dir"]);
        let shallow =
            std::fs::read_to_string(Path::new(git_dir.trim()).join("shallow")).unwrap_or_default();
        self.record(&format!("{label}: shallow"), lines(&shallow, true));
        let objects = self
            .sb
            .git(repo, &["cat-file", "--batch-all-objects", "--batch-check"]);
        self.record(&format!("{label}: objects"), lines(&objects, true));
    }

    /// Records the refs the server has, as `git ls-remote` (untraced) lists them.
    fn remote_refs(&mut self, label: &str) {
        let root = self.root();
        let refs = self.sb.git(&root, &["ls-remote", "--symref", &self.url()]);
        self.record(&format!("{label}: remote refs"), lines(&refs, false));
    }

    fn record(&mut self, label: &str, lines: Vec<String>) {
        self.steps.push(Step {
            label: label.to_owned(),
            lines,
        });
    }

    /// `line` with this run's server address and sandbox path made neutral.
    fn local(&self, line: &str) -> String {
        line.replace(self.base(), "<server>")
            .replace(&self.sb.dir.path().display().to_string(), "<sandbox>")
    }
}

fn lines(text: &str, sorted: bool) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
    if sorted {
        lines.sort();
    }
    lines
}

/// Runs `scenario` against git http-backend and against stowage and compares what was
/// recorded, step by step, after [`EXCEPTIONS`].
/// Runs `scenario` against both servers, on a sha1 and on a sha256 repository (named
/// `<name>-sha256` for [`Exception::scenario`]), and compares.
fn conform(name: &str, scenario: impl Fn(&mut Side)) {
    conform_in("sha1", name, &scenario);
    conform_in("sha256", &format!("{name}-sha256"), &scenario);
}

fn conform_in(format: &'static str, name: &str, scenario: &impl Fn(&mut Side)) {
    let mut reference = Side::start(Kind::Git, format);
    scenario(&mut reference);
    let mut stowage = Side::start(Kind::Stowage, format);
    scenario(&mut stowage);
    if let Some(dir) = std::env::var_os("STOWAGE_CONFORMANCE_DUMP") {
        // Both runs' normalised steps, for reading whole traces side by side.
        for (side, run) in [("git", &reference), ("stowage", &stowage)] {
            let text: String = run
                .steps
                .iter()
                .map(|step| format!("### {}\n{}\n", step.label, step.lines.join("\n")))
                .collect();
            let path = Path::new(&dir).join(format!("{name}.{side}.txt"));
            std::fs::write(path, text).expect("write dump");
        }
    }
    assert_eq!(reference.steps.len(), stowage.steps.len(), "{name}: steps");

    let exceptions: Vec<&Exception> = EXCEPTIONS
        .iter()
        .filter(|e| matches(e.scenario, name))
        .collect();
    let mut seen = vec![false; exceptions.len()];
    let mut failures = String::new();
    for (ours, theirs) in stowage.steps.iter().zip(&reference.steps) {
        assert_eq!(ours.label, theirs.label, "{name}: steps");
        let label = ours.label.as_str();
        let in_step = |e: &&&Exception| matches(e.step, label);
        let step: Vec<&Exception> = exceptions.iter().filter(in_step).copied().collect();
        let mut step_seen = vec![false; step.len()];
        let expected = expect(&theirs.lines, &step, &mut step_seen);
        let actual = drop_extras(&ours.lines, &expected, &step, &mut step_seen);
        for (e, seen_here) in step.iter().zip(step_seen) {
            if seen_here && let Some(k) = exceptions.iter().position(|x| std::ptr::eq(*x, *e)) {
                seen[k] = true;
            }
        }
        if expected != actual {
            failures.push_str(&format!(
                "--- {name} / {} (- git http-backend, + stowage)\n{}\n",
                ours.label,
                diff(&expected, &actual)
            ));
        }
    }
    for (exception, seen) in exceptions.iter().zip(seen) {
        if !exception.scenario.starts_with('*') && !seen {
            failures.push_str(&format!(
                "--- {name}: exception no longer needed (stowage now matches?): \
                 {:?} / {:?} -> {:?}: {}\n",
                exception.step, exception.reference, exception.stowage, exception.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{name} differs:\n{failures}");
}

/// Splits a normalised line into its `who<` / `who>` prefix and the rest.
fn payload(line: &str) -> (&str, &str) {
    match line.split_once(' ') {
        Some((who, rest)) if who.ends_with('<') || who.ends_with('>') => (who, rest),
        _ => ("", line),
    }
}

/// `pattern` is a text, `prefix*`, `*suffix` or `*`.
fn matches(pattern: &str, text: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        text.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        text.ends_with(suffix)
    } else {
        pattern == text
    }
}

/// The reference lines as stowage is expected to have them: each line an exception
/// names is replaced by stowage's line, or dropped when stowage has none.
/// An exception that drops a v2 response section header (`wanted-refs`) drops the
/// whole section, through the delimiter that ends it.
fn expect(reference: &[String], exceptions: &[&Exception], seen: &mut [bool]) -> Vec<String> {
    const SECTIONS: &[&str] = &["wanted-refs", "shallow-info", "acknowledgments"];
    let mut out = Vec::new();
    let mut skipping: Option<&str> = None;
    'lines: for line in reference {
        let (who, rest) = payload(line);
        if skipping == Some(who) {
            if rest == "0001" {
                skipping = None;
            }
            continue;
        }
        for (i, e) in exceptions.iter().enumerate() {
            if !e.reference.is_empty() && matches(e.reference, rest) {
                seen[i] = true;
                if !e.stowage.is_empty() {
                    out.push(join(who, e.stowage));
                } else if SECTIONS.contains(&rest) {
                    skipping = Some(who);
                }
                continue 'lines;
            }
        }
        out.push(line.clone());
    }
    out
}

/// Stowage's lines without the extra ones an exception allows: lines matching its
/// `stowage` pattern beyond those the expected lines have too (where a scenario
/// configures git http-backend to send them as well, they are still compared).
fn drop_extras(
    stowage: &[String],
    expected: &[String],
    exceptions: &[&Exception],
    seen: &mut [bool],
) -> Vec<String> {
    let mut unmatched: BTreeMap<&str, usize> = BTreeMap::new();
    for line in expected {
        *unmatched.entry(line.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    'lines: for line in stowage {
        if let Some(count) = unmatched.get_mut(line.as_str())
            && *count > 0
        {
            *count -= 1;
            out.push(line.clone());
            continue;
        }
        let (_, rest) = payload(line);
        for (i, e) in exceptions.iter().enumerate() {
            if e.reference.is_empty() && matches(e.stowage, rest) {
                seen[i] = true;
                continue 'lines;
            }
        }
        out.push(line.clone());
    }
    out
}

fn join(who: &str, rest: &str) -> String {
    if who.is_empty() {
        rest.to_owned()
    } else {
        format!("{who} {rest}")
    }
}

// ---------------------------------------------------------------------------------
// Normalisation

/// The agent strings both servers and the client send (the client may be another git
/// than the reference server's), replaced by `<agent>`.
fn agents() -> &'static [String] {
    static AGENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    AGENTS.get_or_init(|| {
        let client = common::git_version_of(&common::git_binary());
        let server = common::git_version_of("git");
        vec![
            format!("agent=git/{client}"),
            format!("agent=git/{server}"),
            format!("agent=stowage/{}", env!("CARGO_PKG_VERSION")),
        ]
    })
}

/// Turns a `GIT_TRACE_PACKET` file into comparable lines `who< packet` / `who> packet`.
///
/// - The time and source-location prefix is dropped.
/// - Agent strings become `agent=<agent>`, session ids `session-id=<id>`.
/// - Progress (sideband 2) is dropped: its text is the server's own. So are sideband 1
///   packets as the demultiplexer sees them: how a stream is cut into sideband packets
///   is not part of the protocol, and the pkt-lines inside (a push report) are traced
///   again when read. Pack data is already cut by git at `PACK ...`.
/// - Capability lists (after `\0` in v0 advertisements and push commands, after the
///   first `want`) are split one capability a line (`+ cap`), sorted: their order does
///   not matter.
/// - Runs of `shallow` and of `unshallow` lines are sorted (see [`sort_shallow_runs`]),
///   and so are the lines of a `wanted-refs` section (see [`sort_wanted_refs`]).
/// - Lines are grouped by who traced them (`clone`, `fetch-pack`, `git`, `sideband`),
///   each group in trace order: the processes of one git command trace to the same
///   file concurrently, so only the order within one of them is reproducible.
fn normalise_trace(trace: &str) -> Vec<String> {
    let agents = agents();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in trace.lines() {
        let Some((_, packet)) = line.split_once("packet:") else {
            continue;
        };
        let packet = packet.trim_start();
        let (who, mut rest) = packet.split_once(' ').unwrap_or((packet, ""));
        if rest.starts_with("\\2") || (who == "sideband<" && rest.starts_with("\\1")) {
            continue;
        }
        let mut owned = rest.to_owned();
        for agent in agents {
            owned = owned.replace(agent.as_str(), "agent=<agent>");
        }
        owned = owned
            .split(' ')
            .map(|word| match word.split_once("session-id=") {
                Some((before, _)) => format!("{before}session-id=<id>"),
                None => word.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        rest = &owned;
        let group = groups.entry(who.to_owned()).or_default();
        let (head, caps) = split_capabilities(rest);
        group.push(join(who, head));
        for cap in caps {
            group.push(format!("{who} + {cap}"));
        }
    }
    for group in groups.values_mut() {
        sort_shallow_runs(group);
        sort_wanted_refs(group);
    }
    groups.into_values().flatten().collect()
}

/// Sorts each run of `shallow <oid>` lines and each run of `unshallow <oid>` lines: they
/// name a set of commits, whose order means nothing (git sends them in the order its
/// walk meets them).
fn sort_shallow_runs(lines: &mut [String]) {
    let keyword = |line: &String| {
        let (_, rest) = payload(line);
        ["shallow ", "unshallow "]
            .into_iter()
            .find(|k| rest.starts_with(k))
    };
    let mut start = 0;
    while start < lines.len() {
        let kind = keyword(&lines[start]);
        let mut end = start + 1;
        while end < lines.len() && kind.is_some() && keyword(&lines[end]) == kind {
            end += 1;
        }
        lines[start..end].sort();
        start = end;
    }
}

/// Sorts the lines of each `wanted-refs` section (up to its delimiter): git keeps the
/// wanted refs in a hash map, so it answers them in no particular order.
fn sort_wanted_refs(lines: &mut [String]) {
    let mut i = 0;
    while i < lines.len() {
        if payload(&lines[i]).1 != "wanted-refs" {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && payload(&lines[end]).1 != "0001" {
            end += 1;
        }
        lines[start..end].sort();
        i = end;
    }
}

/// Splits the capabilities off a v0 ref advertisement line, push command or first
/// `want`; returns the line and its sorted capabilities.
fn split_capabilities(packet: &str) -> (&str, Vec<&str>) {
    let is_oid = |s: &str| s.len() >= 41 && s[..40].bytes().all(|b| b.is_ascii_hexdigit());
    let (head, caps) = if let Some((head, caps)) = packet.split_once("\\0")
        && is_oid(head)
    {
        (head, caps)
    } else if let Some(want) = packet.strip_prefix("want ")
        && want.len() > 41
        && is_oid(want)
    {
        packet.split_at(5 + 40)
    } else {
        return (packet, Vec::new());
    };
    let mut caps: Vec<&str> = caps.split_whitespace().collect();
    caps.sort_unstable();
    (head.trim_end(), caps)
}

/// A line diff of `a` (`-`) and `b` (`+`), by longest common subsequence.
fn diff(a: &[String], b: &[String]) -> String {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', &a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', &b[j]));
            j += 1;
        } else {
            ops.push(('-', &a[i]));
            i += 1;
        }
    }
    // Unchanged lines more than three away from a change are left out.
    const CONTEXT: usize = 3;
    let near = |k: usize| {
        ops[k.saturating_sub(CONTEXT)..(k + CONTEXT + 1).min(ops.len())]
            .iter()
            .any(|(op, _)| *op != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if *op == ' ' && !near(k) {
            if !skipped {
                out.push_str("  ...\n");
            }
            skipped = true;
            continue;
        }
        skipped = false;
        out.push_str(&format!("{op} {line}\n"));
    }
    out
}
