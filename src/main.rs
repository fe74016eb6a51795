//! The `stowage` command: `serve`, and `config` to show the settings it would run with;
//! `user`, `token` and `repo` to manage users, tokens, repositories and their access;
//! `gc` and `fsck`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use stowage::access::manage;
use stowage::access::refs::Protection;
use stowage::access::state::{Target, TokenSpec};
use stowage::access::{Access, AccessConfig, Bootstrap, Role};
use stowage::disk_cache::DiskCacheStore;
use stowage::http::ConnectionLimits;
use stowage::http::{self, Options};
use stowage::protocol::{Features, RequestLimits};
use stowage::repo::maintenance::{self, Plan};
use stowage::repo::{Caches, RepoConfig, RepoName, Repos};
use stowage::store_url::{Layers, open_layered};
use stowage_store::retry::RetryStats;

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "A Git server whose repositories live in object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines (on standard error) are written: `text`, or `json` (one object per
    /// line, for log collectors). Colours only on a terminal.
    #[arg(long, global = true, value_enum, default_value_t = stowage::telemetry::LogFormat::Text)]
    log_format: stowage::telemetry::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve git over HTTP.
    Serve(Box<Serve>),
    /// Print the settings `serve` would run with, the same flags given, as TOML for a
    /// settings file, each with where it came from (flag, env, file, default); secrets
    /// masked. Starts no server and reads no store.
    Config(Box<Serve>),
    /// Manage repositories, their visibility, grants and protected refs.
    #[command(subcommand)]
    Repo(Repo),
    /// Manage a repository's webhooks and see their deliveries.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage a user's personal access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Merge a repository's packs (all into one, or geometrically) and delete pack
    /// files no manifest lists that are older than the grace period.
    Gc(Gc),
    /// Check a repository: manifest, packs, indexes, objects, closure and refs. Exits
    /// non-zero on any fault.
    Fsck {
        name: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Debug, Args)]
struct Gc {
    name: String,
    #[command(flatten)]
    store: StoreArg,
    /// Merge only the packs that break a geometric progression (what runs after
    /// pushes), instead of all packs into one.
    #[arg(long)]
    geometric: bool,
    /// Keep unlisted pack files younger than this many seconds (requests that began
    /// before a compaction may still read them); also how long objects no ref reaches
    /// stay before they are pruned.
    #[arg(long, default_value_t = 3600)]
    grace_secs: u64,
    /// Drop every object no ref reaches now, and delete the packs that held them now:
    /// after a secret was pushed by mistake and force-pushed away. Requests reading
    /// those packs at that moment fail.
    #[arg(long, conflicts_with = "geometric")]
    prune_now: bool,
    /// Also store a pack of everything of at least this many bytes as a git bundle,
    /// for servers run with `--bundle-uri`.
    #[arg(long, value_name = "N")]
    bundle_min_bytes: Option<u64>,
}

#[derive(Debug, Args)]
struct StoreArg {
    /// Where repositories live: file://PATH, s3://bucket[/prefix] or memory://.
    #[arg(
        long,
        env = "STOWAGE_STORE",
        default_value = "file://./data",
        global = true
    )]
    store: String,
}

#[derive(Debug, Args)]
struct Serve {
    /// A settings file (TOML) that holds any of these flags by its long name
    /// (`max-request-mb = 64`); flags and environment variables outrank it.
    #[arg(long, env = "STOWAGE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArg,
    /// Refuse pushes to repositories that do not exist (by default a push creates it).
    #[arg(long)]
    no_auto_create: bool,
    /// Refuse pushes that are not fast-forwards (by default forced pushes are accepted,
    /// as git http-backend does).
    #[arg(long)]
    deny_non_fast_forwards: bool,
    /// Memory for parsed pack indexes, in MiB.
    #[arg(long, default_value_t = 256)]
    index_cache_mb: u64,
    /// Memory for pack data, in MiB.
    #[arg(long, default_value_t = 512)]
    pack_cache_mb: u64,
    /// Memory for decoded trees and commits, in MiB.
    #[arg(long, default_value_t = 64)]
    object_cache_mb: u64,
    /// A local directory for copies of pack files and indexes read from the store
    /// (none by default).
    #[arg(long)]
    pack_cache_dir: Option<PathBuf>,
    /// Disk space for --pack-cache-dir, in MiB.
    #[arg(long, default_value_t = 10 << 10)]
    pack_cache_dir_mb: u64,
    /// Largest pack one push may send, in MiB.
    #[arg(long, default_value_t = 64 << 10)]
    max_push_mb: u64,
    #[command(flatten)]
    limits: LimitArgs,
    /// Where received packs are indexed before they are stored.
    #[arg(long, env = "STOWAGE_TMP_DIR")]
    tmp_dir: Option<PathBuf>,
    /// Accept refs by name in protocol v2 fetches (`want-ref`, git's
    /// `uploadpack.allowRefInWant`).
    #[arg(long)]
    allow_ref_in_want: bool,
    /// Advertise a session id per answer (git's `transfer.advertiseSID`).
    #[arg(long)]
    advertise_session_id: bool,
    /// In a protocol v2 full clone of a client that asks for them
    /// (`fetch.uriProtocols`), point at stored packs by signed link to the store instead
    /// of streaming them (git's `uploadpack.blobPackfileUri`). Needs a store that signs
    /// links (S3).
    #[arg(long)]
    packfile_uris: bool,
    /// Write a git bundle beside each large pack compaction makes, and advertise them
    /// by signed link to protocol v2 clients that take bundle URIs
    /// (`transfer.bundleURI`). Needs a store that signs links (S3).
    #[arg(long)]
    bundle_uri: bool,
    /// Smallest stored pack given by link (`--packfile-uris`), and smallest compacted
    /// pack given a bundle (`--bundle-uri`).
    #[arg(long, value_name = "N", default_value_t = 1 << 20)]
    offload_min_bytes: u64,
    /// How long a link of `--packfile-uris` or `--bundle-uri` is good for.
    #[arg(long, value_name = "N", default_value_t = 3600)]
    offload_link_secs: u64,
    /// Do not compact repositories in the background after pushes.
    #[arg(long)]
    no_background_compaction: bool,
    /// Keep pack files that no manifest lists for this many seconds before deleting
    /// them.
    #[arg(long, default_value_t = 3600)]
    gc_grace_secs: u64,
    /// Delay every store request by this many milliseconds (benchmarks: a local disk
    /// made to answer like a remote store).
    #[arg(long, default_value_t = 0)]
    inject_latency_ms: u64,
    /// Fail the store requests SPEC chooses (a test tool: see README, "Failure").
    #[arg(long, value_name = "SPEC")]
    inject_faults: Option<String>,
    /// Accept pushed objects without checking them as git's transfer.fsckObjects does.
    #[arg(long)]
    no_fsck_objects: bool,
    /// Do not refuse pushes for this finding of the object checks (a git fsck message
    /// id such as zeroPaddedFilemode; repeatable), as git's receive.fsck.<id>=ignore.
    #[arg(long, value_name = "MSG_ID")]
    fsck_ignore: Vec<String>,

    /// Turn access control off: every request may read and write every repository.
    #[arg(long)]
    no_auth: bool,
    /// Take the user name from this request header, set by an authenticating reverse
    /// proxy in front of the server (as git http-backend takes REMOTE_USER). Only for a
    /// server that the proxy alone can reach.
    #[arg(long, value_name = "HEADER")]
    trust_proxy_user: Option<String>,
    /// Where the proxy of --trust-proxy-user connects from: an address or a network
    /// (CIDR); repeatable. The header from anywhere else is refused.
    #[arg(long, value_name = "ADDR", default_values = ["127.0.0.1/32", "::1/128"])]
    trusted_proxy_addr: Vec<String>,
    /// The URL clients reach this server by (https://git.example.com behind a proxy),
    /// for the links of Git LFS answers; by default the request's Host, over
    /// https:// when --tls-cert is given and http:// otherwise.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// On SIGTERM or SIGINT, how long open requests (a push still uploading among them)
    /// may run on before the process exits; new connections are refused at once.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
    /// Serve /metrics and the probes (/-/health, /-/ready) on this address too, without
    /// authentication (bind it where only the scraper reaches); /metrics then leaves the
    /// main listener. Without it, /metrics is on the main listener for server admins.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Record no request, git, store, admission or maintenance metrics (/metrics still
    /// shows the cache, retry and LFS counts it reads when scraped).
    #[arg(long)]
    no_metrics: bool,
    /// Run this executable once per push, after its pack is checked and before any ref
    /// moves, with git's pre-receive contract (README, "Hooks"): exit 0 accepts, any
    /// other status refuses every command of the push.
    #[arg(long, value_name = "PATH")]
    pre_receive_hook: Option<PathBuf>,
    /// How long the pre-receive hook may run; past it the push is refused.
    #[arg(long, value_name = "N", default_value_t = 30)]
    hook_timeout_secs: u64,
    #[command(flatten)]
    admission: AdmissionArgs,
    #[command(flatten)]
    webhooks: WebhookArgs,
    #[cfg(feature = "tls")]
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    lfs: LfsArgs,
}

/// Admission control of pack requests (README, "Operations").
#[derive(Debug, Args)]
struct AdmissionArgs {
    /// Pack-generating and pack-receiving requests (fetches, clones, pushes) running at
    /// once on one repository.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_concurrent_per_repo: usize,
    /// Such requests that may wait for a place on one repository (0: refuse at once
    /// when it is full); more get 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_queue_per_repo: usize,
    /// Such requests running at once in the whole process.
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_concurrent: usize,
    /// Such requests that may wait for a place in the process; more get 503 with
    /// Retry-After.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_queue: usize,
    /// The longest a request waits for its places before it is refused.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_queue_wait_ms: u64,
}

/// Webhook deliveries (README, "Webhooks").
#[derive(Debug, Args)]
struct WebhookArgs {
    /// Let webhooks reach loopback, private, link-local and other non-public
    /// addresses (refused by default, so that a hook cannot reach the server's own
    /// network or a cloud metadata service).
    #[arg(long)]
    webhook_allow_private: bool,
    /// The time limit of one delivery attempt.
    #[arg(long, value_name = "N", default_value_t = 10)]
    webhook_timeout_secs: u64,
    /// How long a delivery that fails is retried (with exponential backoff) before it
    /// is given up.
    #[arg(long, value_name = "N", default_value_t = 24)]
    webhook_retry_hours: u64,
    /// How often each instance looks in the store for deliveries no instance is
    /// working on (left by one that stopped, or asked for with `stowage hook
    /// redeliver`).
    #[arg(long, value_name = "N", default_value_t = 10)]
    webhook_sweep_secs: u64,
    /// How long ended deliveries (and their attempts) are kept for `stowage hook
    /// deliveries`.
    #[arg(long, value_name = "N", default_value_t = 30)]
    webhook_keep_days: u64,
}

/// HTTPS without a proxy (README, "HTTPS").
#[cfg(feature = "tls")]
#[derive(Debug, Args)]
struct TlsArgs {
    /// Serve HTTPS with the certificate chain in this PEM file (the server's own
    /// certificate first); reloaded when it changes. Needs --tls-key.
    #[arg(
        long,
        env = "STOWAGE_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key, a PEM file (PKCS#8, PKCS#1 or SEC1); reloaded
    /// when it changes. Needs --tls-cert.
    #[arg(
        long,
        env = "STOWAGE_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

/// Git LFS (README, "Git LFS").
#[derive(Debug, Args)]
struct LfsArgs {
    /// Largest LFS object accepted, in MiB (a batch answers a bigger one with 422).
    #[arg(long, default_value_t = 64 << 10)]
    lfs_max_object_mb: u64,
    /// Most objects one LFS batch request may name (more: 413).
    #[arg(long, default_value_t = 1000)]
    lfs_max_batch_objects: usize,
    /// Largest LFS batch request body, in KiB (more: 413).
    #[arg(long, default_value_t = 1024)]
    lfs_max_batch_kb: usize,
    /// On S3, let clients send and fetch LFS objects straight to and from the bucket
    /// with presigned URLs (`--lfs-direct=false`: through the server).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    lfs_direct: bool,
    /// How long the links of LFS batch answers are good for, in seconds.
    #[arg(long, default_value_t = 900)]
    lfs_link_secs: u64,
    /// Most LFS locks one repository may hold (every push to it reads them).
    #[arg(long, default_value_t = 10_000)]
    lfs_max_locks: usize,
}

/// What one request or connection may ask of the server (README, "Limits").
#[derive(Debug, Args)]
struct LimitArgs {
    /// Largest fetch negotiation request, after decompression, in MiB.
    #[arg(long, default_value_t = 64)]
    max_request_mb: usize,
    /// Most pkt-lines in one fetch request.
    #[arg(long, default_value_t = 2_000_000)]
    max_pkt_lines: usize,
    /// Most wants in one fetch request.
    #[arg(long, default_value_t = 1_000_000)]
    max_wants: usize,
    /// Most haves in one fetch request.
    #[arg(long, default_value_t = 1_000_000)]
    max_haves: usize,
    /// Deepest shallow fetch (`deepen N`); git asks 2147483647 to unshallow.
    #[arg(long, default_value_t = i32::MAX as u32)]
    max_depth: u32,
    /// Longest filter spec, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_filter_bytes: usize,
    /// Most ref updates in one push.
    #[arg(long, default_value_t = 100_000)]
    max_push_commands: usize,
    /// Most push options in one push.
    #[arg(long, default_value_t = 100)]
    max_push_options: usize,
    /// Longest ref name a push may set, in bytes.
    #[arg(long, default_value_t = 1024)]
    max_ref_name_bytes: usize,
    /// Largest object (or delta) a push may carry, inflated, in MiB.
    #[arg(long, default_value_t = 4096)]
    max_object_mb: usize,
    /// Longest delta chain a pushed pack may hold.
    #[arg(long, default_value_t = 4095)]
    max_delta_depth: u32,
    /// Deepest nesting of trees a push may bring (git's core.maxTreeDepth).
    #[arg(long, default_value_t = 2048)]
    max_tree_depth: u32,
    /// Largest request head (start line and headers), in KiB; bigger ones get 431.
    #[arg(long, default_value_t = 64)]
    max_header_kb: usize,
    /// Seconds a client has to send a request's headers (also how long an idle
    /// connection stays open).
    #[arg(long, default_value_t = 30)]
    header_timeout_secs: u64,
    /// Bytes per second a request body must bring at least (0: no minimum).
    #[arg(long, default_value_t = 1024)]
    min_request_rate: u64,
    /// Seconds over which that rate is measured.
    #[arg(long, default_value_t = 30)]
    request_rate_window_secs: u64,
    /// Seconds a response may wait on a client that reads none of it (a clone whose
    /// client stopped reading) before the connection is closed (0: no limit).
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
}

#[derive(Debug, Subcommand)]
enum Repo {
    /// Create an empty repository (private unless --public).
    Create {
        name: String,
        /// Anyone may read it, without credentials.
        #[arg(long)]
        public: bool,
        /// The hash of its objects, fixed for good: as `git init --object-format`.
        #[arg(long, value_name = "FORMAT", default_value = "sha1", value_parser = ["sha1", "sha256"])]
        object_format: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Make a repository public (anyone may read it) or private.
    Visibility {
        name: String,
        #[arg(value_parser = ["public", "private"])]
        visibility: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Give a user a role (read, write or admin) on a repository, or on every
    /// repository under a prefix ending in `/` (`org/`).
    Grant {
        name: String,
        user: String,
        #[arg(value_parser = ["read", "write", "admin"])]
        role: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Take a user's grant on a repository or prefix away.
    Ungrant {
        name: String,
        user: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Protect refs matching PATTERN (`main`, `release/*`, `refs/tags/v*`): no
    /// force-pushes or deletions unless allowed.
    Protect {
        name: String,
        pattern: String,
        #[arg(long)]
        allow_force_push: bool,
        #[arg(long)]
        allow_delete: bool,
        /// Only admins of the repository may push to matching refs.
        #[arg(long)]
        admins_only: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Remove the protection of PATTERN.
    Unprotect {
        name: String,
        pattern: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List repositories.
    List {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Delete a repository and everything in it.
    Delete {
        name: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Debug, Subcommand)]
enum HookCommand {
    /// Add a webhook to repository NAME: each push POSTs one event per ref to URL
    /// (README, "Webhooks"). Prints the hook's id.
    Add {
        name: String,
        url: String,
        /// Sign each delivery with this key (`X-Hub-Signature-256`); from the
        /// environment, it stays out of the process list.
        #[arg(
            long,
            value_name = "S",
            env = "STOWAGE_WEBHOOK_SECRET",
            hide_env_values = true
        )]
        secret: Option<String>,
        /// The events it gets (`push`; may be repeated).
        #[arg(long = "event", value_name = "EVENT", default_value = "push")]
        events: Vec<String>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List NAME's webhooks: id, events, whether signed, URL.
    List {
        name: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Remove webhook ID from NAME (its pending deliveries are given up).
    Remove {
        name: String,
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List NAME's deliveries, newest first; ID a hook's id: only that hook's; ID a
    /// delivery's id: that delivery in full (every attempt with its status, duration
    /// and response excerpt, and the body sent).
    Deliveries {
        name: String,
        id: Option<String>,
        /// At most this many (newest first).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Send delivery DELIVERY of NAME again (same id and body); a running server
    /// sends it within --webhook-sweep-secs.
    Redeliver {
        name: String,
        delivery: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user (a server admin with --admin).
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List users.
    List {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Remove a user, with their tokens and grants.
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token for USER and print it (shown only this once).
    Create {
        user: String,
        /// The token may read what its user may read, and write nothing.
        #[arg(long)]
        read_only: bool,
        /// The token stops working after this many days.
        #[arg(long, value_name = "N")]
        expires_days: Option<u64>,
        /// What the token is for.
        #[arg(long, value_name = "TEXT", default_value = "")]
        note: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List USER's tokens: id, created, expiry, scope, note (never the token).
    List {
        user: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Revoke one of USER's tokens by its id.
    Revoke {
        user: String,
        id: String,
        #[command(flatten)]
        store: StoreArg,
    },
}

/// The repositories of `store`, which retries transient faults.
async fn repos(store: &str, config: RepoConfig, caches: Caches) -> anyhow::Result<Repos> {
    let (store, _) = open_layered(store, &Layers::default()).await?;
    Ok(Repos::new(store, caches, config))
}

/// [`repos`] with the `layers` given, and packs copied to `disk_cache` (directory,
/// bytes) when given; also returns the disk cache and the retry counts, for stats.
async fn repos_for_serving(
    store: &str,
    config: RepoConfig,
    caches: Caches,
    layers: &Layers,
    disk_cache: Option<(PathBuf, u64)>,
) -> anyhow::Result<(Repos, Option<DiskCacheStore>, RetryStats)> {
    let (mut store, retries) = open_layered(store, layers).await?;
    let mut cache = None;
    if let Some((dir, bytes)) = disk_cache {
        let cached = DiskCacheStore::open(store, &dir, bytes)
            .await
            .with_context(|| format!("cannot use {} as a pack cache", dir.display()))?;
        store = std::sync::Arc::new(cached.clone());
        cache = Some(cached);
    }
    Ok((Repos::new(store, caches, config), cache, retries))
}

/// The store's own requests for LFS, if it offers them (S3): objects in parts for
/// resumable uploads, and with `links`, direct transfers: downloads always, uploads
/// only if the store refuses a body whose declared SHA-256 is wrong (so that no client
/// can put other bytes under an oid).
async fn lfs_direct(url: &str, links: bool) -> anyhow::Result<Option<stowage::lfs::Direct>> {
    let Some(access) = stowage::store_url::direct_access(url).await? else {
        return Ok(None);
    };
    if !links {
        return Ok(Some(stowage::lfs::Direct {
            access,
            downloads: false,
            uploads: false,
        }));
    }
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).context("random bytes")?;
    let scratch = stowage_store::Key::new(format!(".lfs/checksum-probe-{}", hex::encode(id)))
        .context("probe key")?;
    let uploads = access
        .refuses_wrong_checksums(&scratch)
        .await
        .context("probing the store's checksum checks")?;
    if !uploads {
        tracing::warn!(
            "the store accepts bodies with a wrong x-amz-checksum-sha256: LFS uploads go \
             through this server"
        );
    }
    Ok(Some(stowage::lfs::Direct {
        access,
        downloads: true,
        uploads,
    }))
}

fn small_caches() -> Caches {
    Caches::new(64 << 20, 64 << 20, 16 << 20)
}

/// The repositories and the access state of `store`, for a management command.
async fn managed(store: &str) -> anyhow::Result<(Repos, Access)> {
    let repos = repos(store, RepoConfig::default(), small_caches()).await?;
    let access = Access::new(repos.store.clone(), AccessConfig::default());
    Ok((repos, access))
}

/// What the server prints when it starts: how access control stands, and for a new
/// store, the first admin's token and how to push with it.
fn print_start(access: Option<&Bootstrap>, base: &str) {
    match access {
        None => println!(
            "WARNING: access control is off (--no-auth): anyone who can reach {base} may read \
             and write every repository."
        ),
        Some(Bootstrap::Created(token)) => {
            let token = token.expose();
            let with_token = base.replacen("://", &format!("://admin:{token}@"), 1);
            let as_admin = base.replacen("://", "://admin@", 1);
            println!(
                "Access control is on. This store had no users, so the server admin \"admin\" was \
                 created with this token (shown only this once; keep it):\n\n    {token}\n\n\
                 Push a first repository from any git repository:\n\n    \
                 git push {with_token}/demo.git main\n\n\
                 then clone it (give the token when git asks for the password; \
                 `git config --global credential.helper store` makes git remember it):\n\n    \
                 git clone {as_admin}/demo.git\n\n\
                 Add users and tokens with `stowage user add NAME` and `stowage token create \
                 NAME`; give access with `stowage repo grant`."
            );
        }
        Some(Bootstrap::Existing { users, admins }) => {
            println!(
                "Access control is on (users: {users}, server admins: {admins}). A new \
                 token: stowage token create USER"
            );
            if *admins == 0 {
                println!(
                    "WARNING: no server admin: make one with `stowage user add NAME --admin`."
                );
            }
        }
    }
}

async fn run_access_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::User(UserCommand::Add { name, admin, store }) => {
            let (_, access) = managed(&store.store).await?;
            manage::add_user(&access, &name, admin).await?;
            println!("added {}{name}", if admin { "server admin " } else { "" });
        }
        Command::User(UserCommand::List { store }) => {
            let (_, access) = managed(&store.store).await?;
            let view = access.reload().await?;
            for (name, user) in &view.state.users {
                println!(
                    "{name}\t{}\t{} tokens",
                    if user.admin { "admin" } else { "user" },
                    user.tokens.len()
                );
            }
        }
        Command::User(UserCommand::Remove { name, store }) => {
            let (_, access) = managed(&store.store).await?;
            manage::remove_user(&access, &name).await?;
            println!("removed {name}");
        }
        Command::Token(TokenCommand::Create {
            user,
            read_only,
            expires_days,
            note,
            store,
        }) => {
            let (_, access) = managed(&store.store).await?;
            let spec = TokenSpec {
                read_only,
                expires_days,
                note,
            };
            let (secret, _) = manage::create_token(&access, &user, &spec).await?;
            println!("{}", secret.expose());
        }
        Command::Token(TokenCommand::List { user, store }) => {
            let (_, access) = managed(&store.store).await?;
            let view = access.reload().await?;
            for t in &view.state.user(&user)?.tokens {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    t.id,
                    manage::format_time(t.created),
                    t.expires
                        .map(|e| format!("expires {}", manage::format_time(e)))
                        .unwrap_or_else(|| "never expires".into()),
                    if t.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    t.note
                );
            }
        }
        Command::Token(TokenCommand::Revoke { user, id, store }) => {
            let (_, access) = managed(&store.store).await?;
            manage::revoke_token(&access, &user, &id).await?;
            println!("revoked {id}");
        }
        Command::Repo(Repo::Create {
            name,
            public,
            object_format,
            store,
        }) => {
            let name = RepoName::new(&name)?;
            let format = object_format
                .parse::<gix_hash::Kind>()
                .map_err(anyhow::Error::msg)?;
            let (repos, access) = managed(&store.store).await?;
            manage::create_repo(&access, &repos, &name, format, public, None).await?;
            println!("created {name} ({object_format})");
        }
        Command::Repo(Repo::Delete { name, store }) => {
            let name = RepoName::new(&name)?;
            let (repos, access) = managed(&store.store).await?;
            manage::delete_repo(&access, &repos, &name).await?;
            println!("deleted {name}");
        }
        Command::Repo(Repo::Visibility {
            name,
            visibility,
            store,
        }) => {
            let name = RepoName::new(&name)?;
            let (repos, access) = managed(&store.store).await?;
            manage::set_visibility(&access, &repos, &name, visibility == "public").await?;
            println!("{name} is {visibility}");
        }
        Command::Repo(Repo::Grant {
            name,
            user,
            role,
            store,
        }) => {
            let target = Target::parse(&name)?;
            let role = Role::parse(&role)?;
            let (repos, access) = managed(&store.store).await?;
            manage::grant(&access, &repos, &target, &user, role).await?;
            println!("granted {} on {target} to {user}", role.as_str());
        }
        Command::Repo(Repo::Ungrant { name, user, store }) => {
            let target = Target::parse(&name)?;
            let (_, access) = managed(&store.store).await?;
            manage::ungrant(&access, &target, &user).await?;
            println!("{user} has no grant on {target} any more");
        }
        Command::Repo(Repo::Protect {
            name,
            pattern,
            allow_force_push,
            allow_delete,
            admins_only,
            store,
        }) => {
            let name = RepoName::new(&name)?;
            let mut protection = Protection::new(&pattern)?;
            protection.allow_force_push = allow_force_push;
            protection.allow_delete = allow_delete;
            protection.admins_only = admins_only;
            let (repos, access) = managed(&store.store).await?;
            manage::protect(&access, &repos, &name, protection).await?;
            println!("protected {pattern} in {name}");
        }
        Command::Repo(Repo::Unprotect {
            name,
            pattern,
            store,
        }) => {
            let name = RepoName::new(&name)?;
            let (_, access) = managed(&store.store).await?;
            manage::unprotect(&access, &name, &pattern).await?;
            println!("unprotected {pattern} in {name}");
        }
        _ => unreachable!("only access commands come here"),
    }
    Ok(())
}

async fn run_hook_command(command: HookCommand) -> anyhow::Result<()> {
    use stowage::hooks::outbox;
    match command {
        HookCommand::Add {
            name,
            url,
            secret,
            events,
            store,
        } => {
            let name = RepoName::new(&name)?;
            let (repos, access) = managed(&store.store).await?;
            let hook = manage::add_webhook(&access, &repos, &name, &url, secret, events).await?;
            println!("{}", hook.id);
        }
        HookCommand::List { name, store } => {
            let name = RepoName::new(&name)?;
            let (_, access) = managed(&store.store).await?;
            let view = access.reload().await?;
            for hook in view.state.settings(&name).webhooks {
                println!(
                    "{}\t{}\t{}\t{}",
                    hook.id,
                    hook.events.join(","),
                    if hook.secret.is_some() {
                        "signed"
                    } else {
                        "unsigned"
                    },
                    hook.url
                );
            }
        }
        HookCommand::Remove { name, id, store } => {
            let name = RepoName::new(&name)?;
            let (_, access) = managed(&store.store).await?;
            manage::remove_webhook(&access, &name, &id).await?;
            println!("removed webhook {id} of {name}");
        }
        HookCommand::Deliveries {
            name,
            id,
            limit,
            store,
        } => {
            let name = RepoName::new(&name)?;
            let (repos, _) = managed(&store.store).await?;
            if let Some(delivery) = id.as_ref().filter(|id| id.contains('.')) {
                outbox::check_id(delivery).map_err(anyhow::Error::msg)?;
                let key = outbox::key(&name, delivery);
                let Some(found) = outbox::read(repos.store.as_ref(), &key).await? else {
                    anyhow::bail!("{name} has no delivery {delivery}");
                };
                println!("{}", serde_json::to_string_pretty(&found.delivery)?);
                return Ok(());
            }
            let found = outbox::list(
                repos.store.as_ref(),
                &name,
                None,
                id.as_deref(),
                Some(limit),
            )
            .await?;
            for d in found.iter().map(|r| &r.delivery) {
                let last = d.attempts.last();
                println!(
                    "{}\t{}\t{}\t{}\t{} attempts\t{}",
                    d.id,
                    manage::format_time(d.created / 1000),
                    d.ref_name,
                    d.status.as_str(),
                    d.tries,
                    match last {
                        Some(a) => match (a.status, &a.error) {
                            (Some(status), _) =>
                                format!("last: HTTP {status} in {} ms", a.duration_ms),
                            (None, Some(error)) => format!("last: {error}"),
                            (None, None) => String::new(),
                        },
                        None => d.reason.clone().unwrap_or_default(),
                    }
                );
            }
        }
        HookCommand::Redeliver {
            name,
            delivery,
            store,
        } => {
            let name = RepoName::new(&name)?;
            outbox::check_id(&delivery).map_err(anyhow::Error::msg)?;
            let (repos, _) = managed(&store.store).await?;
            let retry_for = stowage::hooks::WebhookConfig::default().retry_for;
            match outbox::redeliver(
                repos.store.as_ref(),
                &name,
                &delivery,
                stowage::hooks::now_ms(),
                retry_for.as_millis() as u64,
            )
            .await?
            {
                Some(_) => println!("queued {delivery} for delivery"),
                None => anyhow::bail!("{name} has no delivery {delivery}"),
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let parsed = match stowage::config::parse(Cli::command(), std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(stowage::config::Error::CommandLine(e)) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    let cli = Cli::from_arg_matches(&parsed.matches).unwrap_or_else(|e| e.exit());
    stowage::telemetry::init(cli.log_format);
    match cli.command {
        Command::Config(_) => print!("{}", parsed.describe("stowage serve")),
        Command::Serve(args) => {
            if let Some(file) = parsed.file() {
                tracing::info!(
                    file = %file.display(),
                    in_force = parsed.file_settings_in_force(),
                    "read the settings file"
                );
            }
            // Certificate files first: a bad one stops the start before anything else.
            #[cfg(feature = "tls")]
            let tls = match (&args.tls.tls_cert, &args.tls.tls_key) {
                (Some(cert), Some(key)) => {
                    Some(http::tls::Tls::load(cert, key).context("cannot serve HTTPS")?)
                }
                _ => None,
            };
            #[cfg(feature = "tls")]
            let scheme = if tls.is_some() { "https" } else { "http" };
            #[cfg(not(feature = "tls"))]
            let scheme = "http";
            let config = RepoConfig {
                auto_create: !args.no_auto_create,
                deny_non_fast_forwards: args.deny_non_fast_forwards,
                tmp_dir: args.tmp_dir.unwrap_or_else(std::env::temp_dir),
                max_pack_bytes: args.max_push_mb << 20,
                compact_after_push: !args.no_background_compaction,
                gc_grace: std::time::Duration::from_secs(args.gc_grace_secs),
                fsck_objects: !args.no_fsck_objects,
                fsck_ignore: args.fsck_ignore.clone(),
                max_object_bytes: args.limits.max_object_mb << 20,
                max_delta_depth: args.limits.max_delta_depth,
                max_tree_depth: args.limits.max_tree_depth,
                max_ref_name_bytes: args.limits.max_ref_name_bytes,
                bundle_min_bytes: args.bundle_uri.then_some(args.offload_min_bytes),
                pre_receive: args.pre_receive_hook.clone().map(|path| {
                    stowage::repo::hook::PreReceive {
                        path,
                        timeout: std::time::Duration::from_secs(args.hook_timeout_secs.max(1)),
                    }
                }),
            };
            let caches = Caches::new(
                args.index_cache_mb << 20,
                args.pack_cache_mb << 20,
                args.object_cache_mb << 20,
            );
            let layers = Layers {
                latency: std::time::Duration::from_millis(args.inject_latency_ms),
                faults: args.inject_faults.clone(),
                ..Layers::default()
            };
            if let Some(spec) = &layers.faults {
                tracing::warn!(spec, "injecting store faults (a test tool)");
            }
            let disk_cache = args
                .pack_cache_dir
                .map(|dir| (dir, args.pack_cache_dir_mb << 20));
            let (repos, disk_cache, retries) =
                repos_for_serving(&args.store.store, config, caches, &layers, disk_cache).await?;
            // Scratch directories a killed server left behind.
            match stowage::repo::scratch::sweep(&repos.config.tmp_dir) {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "removed abandoned scratch directories"),
                Err(e) => tracing::warn!(error = %e, "could not sweep the scratch directory"),
            }
            let trust_proxy_user = args
                .trust_proxy_user
                .map(|h| axum::http::HeaderName::try_from(h.to_ascii_lowercase()))
                .transpose()
                .context("--trust-proxy-user needs a valid header name")?;
            let access = Access::new(
                repos.store.clone(),
                AccessConfig {
                    enabled: !args.no_auth,
                    ..AccessConfig::default()
                },
            );
            let lfs_direct = lfs_direct(&args.store.store, args.lfs.lfs_direct).await?;
            let offload = match (&lfs_direct, args.packfile_uris || args.bundle_uri) {
                (_, false) => None,
                (None, true) => anyhow::bail!(
                    "--packfile-uris and --bundle-uri need a store that signs links (S3)"
                ),
                (Some(direct), true) => Some(stowage::protocol::Offload {
                    access: direct.access.clone(),
                    packfile_uris: args.packfile_uris,
                    bundle_uri: args.bundle_uri,
                    min_bytes: args.offload_min_bytes,
                    lifetime: std::time::Duration::from_secs(args.offload_link_secs.max(1)),
                }),
            };
            if let Some(url) = &args.public_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                anyhow::bail!("--public-url must start with http:// or https://");
            }
            let trusted_proxies = args
                .trusted_proxy_addr
                .iter()
                .map(|a| {
                    a.parse::<ipnet::IpNet>()
                        .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .with_context(|| format!("--trusted-proxy-addr {a:?} is not an address"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            // Read the access state now: a store that cannot be read stops the start,
            // and the first requests find it cached.
            let bootstrap = if args.no_auth {
                access
                    .reload()
                    .await
                    .context("cannot read the access state")?;
                None
            } else {
                Some(
                    access
                        .bootstrap()
                        .await
                        .context("cannot read the access state")?,
                )
            };
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            stowage::metrics::set_enabled(!args.no_metrics);
            let metrics_listener = match args.metrics_listen {
                Some(address) => {
                    let listener = tokio::net::TcpListener::bind(address)
                        .await
                        .with_context(|| format!("cannot listen on {address} for metrics"))?;
                    // Tests and scripts read the address from this line.
                    println!("metrics on http://{}/metrics", listener.local_addr()?);
                    Some(listener)
                }
                None => None,
            };
            let local = listener.local_addr()?;
            if args.no_auth {
                tracing::warn!(listen = %local, scheme, store = %args.store.store, auth = "off", "serving without access control");
            } else {
                tracing::info!(listen = %local, scheme, store = %args.store.store, "serving");
            }
            // An address that listens everywhere is reached at the loopback one.
            let mut reach = local;
            if reach.ip().is_unspecified() {
                reach.set_ip(match reach.ip() {
                    std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            print_start(bootstrap.as_ref(), &format!("{scheme}://{reach}"));
            // Tests and scripts read the address from this line.
            println!("listening on {scheme}://{local}");
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .context("listening for SIGTERM")?;
            let shutdown = async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            };
            let options = Options {
                features: Features {
                    ref_in_want: args.allow_ref_in_want,
                    advertise_session_id: args.advertise_session_id,
                    offload,
                },
                disk_cache,
                trust_proxy_user,
                trusted_proxies,
                retries,
                max_negotiation_bytes: args.limits.max_request_mb << 20,
                limits: RequestLimits {
                    max_pkt_lines: args.limits.max_pkt_lines,
                    max_wants: args.limits.max_wants,
                    max_haves: args.limits.max_haves,
                    max_depth: args.limits.max_depth,
                    max_filter_bytes: args.limits.max_filter_bytes,
                    max_push_commands: args.limits.max_push_commands,
                    max_push_options: args.limits.max_push_options,
                },
                connections: ConnectionLimits {
                    header_timeout: std::time::Duration::from_secs(
                        args.limits.header_timeout_secs.max(1),
                    ),
                    max_header_bytes: args.limits.max_header_kb.max(1) << 10,
                    min_request_rate: args.limits.min_request_rate,
                    rate_window: std::time::Duration::from_secs(
                        args.limits.request_rate_window_secs.max(1),
                    ),
                    idle_timeout: (args.limits.idle_timeout_secs > 0)
                        .then(|| std::time::Duration::from_secs(args.limits.idle_timeout_secs)),
                    ..ConnectionLimits::default()
                },
                public_url: args.public_url.clone(),
                lfs: stowage::lfs::LfsConfig {
                    max_object_bytes: args.lfs.lfs_max_object_mb << 20,
                    max_batch_objects: args.lfs.lfs_max_batch_objects,
                    max_batch_bytes: args.lfs.lfs_max_batch_kb << 10,
                    link_lifetime: std::time::Duration::from_secs(args.lfs.lfs_link_secs.max(1)),
                    max_locks: args.lfs.lfs_max_locks.max(1),
                },
                lfs_direct,
                webhooks: stowage::hooks::WebhookConfig {
                    allow_private: args.webhooks.webhook_allow_private,
                    timeout: std::time::Duration::from_secs(
                        args.webhooks.webhook_timeout_secs.max(1),
                    ),
                    retry_for: std::time::Duration::from_secs(
                        args.webhooks.webhook_retry_hours.max(1) * 3600,
                    ),
                    sweep_every: std::time::Duration::from_secs(
                        args.webhooks.webhook_sweep_secs.max(1),
                    ),
                    keep_for: std::time::Duration::from_secs(
                        args.webhooks.webhook_keep_days.max(1) * 24 * 3600,
                    ),
                    ..Default::default()
                },
                drain: std::time::Duration::from_secs(args.drain_secs),
                metrics_listen: args.metrics_listen,
                admission: stowage::admission::Limits {
                    per_repo: args.admission.max_concurrent_per_repo.max(1),
                    per_repo_queue: args.admission.max_queue_per_repo,
                    process: args.admission.max_concurrent.max(1),
                    process_queue: args.admission.max_queue,
                    wait: std::time::Duration::from_millis(args.admission.max_queue_wait_ms),
                },
                #[cfg(feature = "tls")]
                tls,
            };
            http::serve(listener, metrics_listener, repos, access, options, shutdown).await?;
            tracing::info!("stopped");
            stowage::telemetry::shutdown();
        }
        Command::Hook(command) => run_hook_command(command).await?,
        command @ (Command::User(_)
        | Command::Token(_)
        | Command::Repo(
            Repo::Create { .. }
            | Repo::Delete { .. }
            | Repo::Visibility { .. }
            | Repo::Grant { .. }
            | Repo::Ungrant { .. }
            | Repo::Protect { .. }
            | Repo::Unprotect { .. },
        )) => run_access_command(command).await?,
        Command::Repo(Repo::List { store }) => {
            for name in repos(&store.store, RepoConfig::default(), small_caches())
                .await?
                .list()
                .await?
            {
                println!("{name}");
            }
        }
        Command::Gc(args) => {
            let name = RepoName::new(&args.name)?;
            let config = RepoConfig {
                bundle_min_bytes: args.bundle_min_bytes,
                ..RepoConfig::default()
            };
            let repos = repos(&args.store.store, config, small_caches()).await?;
            let grace = std::time::Duration::from_secs(args.grace_secs);
            let report_pruned = |done: &maintenance::Pruned| {
                println!(
                    "{name}: pruned {} packs into one of {} objects ({} dropped)",
                    done.replaced.len(),
                    done.kept,
                    done.before.saturating_sub(done.kept)
                )
            };
            if args.prune_now {
                let Some((pruned, collected)) = maintenance::prune_now(&repos, &name).await? else {
                    anyhow::bail!("{name}: the refs kept changing; prune again");
                };
                report_pruned(&pruned);
                println!(
                    "{name}: deleted {} pack files no manifest lists",
                    collected.deleted.len()
                );
                return Ok(());
            }
            let snapshot = repos
                .snapshot(&name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("repository {name} not found"))?;
            if maintenance::prune_due(&snapshot.manifest, grace) {
                match maintenance::prune(&repos, &name).await? {
                    Some(done) => report_pruned(&done),
                    None => println!("{name}: prune superseded by a push; run gc again"),
                }
            } else {
                let plan = if args.geometric {
                    Plan::Geometric
                } else {
                    Plan::All
                };
                match maintenance::compact(&repos, &name, plan).await? {
                    Some(done) => println!(
                        "{name}: merged {} packs into pack-{} ({} objects)",
                        done.merged.len(),
                        done.pack.hash,
                        done.pack.objects
                    ),
                    None => println!("{name}: nothing to merge"),
                }
            }
            let collected = maintenance::collect_garbage(&repos, &name, grace).await?;
            println!(
                "{name}: deleted {} unlisted pack files, kept {} younger than {}s",
                collected.deleted.len(),
                collected.young,
                args.grace_secs
            );
        }
        Command::Fsck { name, store } => {
            let name = RepoName::new(&name)?;
            let repos = repos(&store.store, RepoConfig::default(), small_caches()).await?;
            let report = maintenance::fsck(&repos, &name).await?;
            for problem in &report.problems {
                println!("error: {problem}");
            }
            println!(
                "{name}: {} packs, {} objects, {} refs, {} problems",
                report.packs,
                report.objects,
                report.refs,
                report.problems.len()
            );
            if !report.problems.is_empty() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `stowage serve` as clap builds it, with the global flags it takes.
    fn serve_command() -> clap::Command {
        let mut command = Cli::command();
        command.build();
        command
            .find_subcommand("serve")
            .expect("serve is a subcommand")
            .clone()
    }

    /// Every flag of `serve` with a long name, but `--help` and `--config`.
    fn serve_flags(serve: &clap::Command) -> Vec<String> {
        serve
            .get_arguments()
            .filter(|a| {
                !matches!(
                    a.get_action(),
                    clap::ArgAction::Help
                        | clap::ArgAction::HelpShort
                        | clap::ArgAction::HelpLong
                        | clap::ArgAction::Version
                )
            })
            .filter_map(|a| a.get_long())
            .filter(|long| *long != "config")
            .map(str::to_owned)
            .collect()
    }

    /// `stowage serve --config FILE` with `text` as the file.
    fn serve_with(text: &str) -> Result<stowage::config::Parsed, stowage::config::Error> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stowage.toml");
        std::fs::write(&path, text).expect("write settings");
        let argv = ["stowage", "serve", "--config"].map(std::ffi::OsString::from);
        stowage::config::parse(
            Cli::command(),
            argv.into_iter().chain([path.into_os_string()]),
        )
    }

    #[test]
    fn every_serve_flag_is_a_setting() {
        let serve = serve_command();
        let flags = serve_flags(&serve);
        assert!(flags.len() > 40, "{flags:?}");
        assert!(flags.contains(&"log-format".to_owned()), "{flags:?}");
        assert_eq!(stowage::config::setting_names(&serve), flags);
        // Each in a file by itself, spelt with `-` and with `_`: its default (as
        // `stowage config` prints it), or for one without, a string.
        let defaults = stowage::config::parse(Cli::command(), ["stowage", "config"])
            .expect("parses")
            .describe("stowage serve");
        for flag in &flags {
            let value = defaults
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{flag} = ")))
                .and_then(|l| l.split("  #").next())
                .unwrap_or("\"1\"");
            for key in [flag.clone(), flag.replace('-', "_")] {
                match serve_with(&format!("{key} = {value}\n")) {
                    Ok(parsed) => {
                        let outranked = serve
                            .get_arguments()
                            .find(|a| a.get_long() == Some(flag))
                            .and_then(|a| a.get_env())
                            .is_some_and(|env| std::env::var_os(env).is_some());
                        if !outranked {
                            assert_eq!(parsed.file_settings_in_force(), 1, "{key} = {value}");
                        }
                    }
                    // Its value may be wrong for it (a flag added with no default and
                    // a type other than a string), but the key must be known.
                    Err(stowage::config::Error::Value { key: named, .. }) => {
                        assert_eq!(named, key)
                    }
                    // A flag that needs another (`--tls-cert` needs `--tls-key`) is
                    // known, but not a setting alone.
                    Err(e @ stowage::config::Error::Together { .. }) => {
                        assert!(e.to_string().contains("required"), "{key} = {value}: {e}")
                    }
                    Err(e) => panic!("{key} = {value}: {e}"),
                }
            }
        }
    }

    /// The settings table of README.md, between these two lines, is the one
    /// [`stowage::config::table`] makes of `serve`'s flags.
    const TABLE_START: &str = "<!-- serve-settings: made from the flags of `stowage serve` -->";
    const TABLE_END: &str = "<!-- end of serve-settings -->";

    #[test]
    fn readme_lists_every_serve_setting() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).expect("README.md");
        let table = stowage::config::table(&serve_command());
        let (before, rest) = readme
            .split_once(TABLE_START)
            .expect("README has the table");
        let (current, after) = rest.split_once(TABLE_END).expect("the table ends");
        let wanted = format!("\n{table}");
        if current != wanted && std::env::var_os("STOWAGE_UPDATE_README").is_some() {
            std::fs::write(
                &path,
                format!("{before}{TABLE_START}{wanted}{TABLE_END}{after}"),
            )
            .expect("write README.md");
            return;
        }
        assert_eq!(
            current, wanted,
            "README.md's table of serve settings is not that of the flags: \
             STOWAGE_UPDATE_README=1 cargo test --bin stowage readme rewrites it"
        );
        for flag in serve_flags(&serve_command()) {
            assert!(current.contains(&format!("| `--{flag}`")), "{flag}");
        }
    }
}
