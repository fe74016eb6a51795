//! The `stowage` command: `serve`, and `repo create|list|delete`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use stowage::disk_cache::DiskCacheStore;
use stowage::http::{self, Options};
use stowage::protocol::Features;
use stowage::repo::maintenance::{self, Plan};
use stowage::repo::{Caches, RepoConfig, RepoName, Repos};

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "A Git server whose repositories live in object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve git over HTTP.
    Serve(Serve),
    /// Manage repositories.
    #[command(subcommand)]
    Repo(Repo),
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
    /// before a compaction may still read them).
    #[arg(long, default_value_t = 3600)]
    grace_secs: u64,
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
}

#[derive(Debug, Subcommand)]
enum Repo {
    /// Create an empty repository.
    Create {
        name: String,
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

async fn repos(store: &str, config: RepoConfig, caches: Caches) -> anyhow::Result<Repos> {
    let store = stowage::store_url::open(store).await?;
    Ok(Repos::new(store, caches, config))
}

/// [`repos`], with every store request delayed by `latency` when it is not zero, and
/// packs copied to `disk_cache` (directory, bytes) when given (returned too).
async fn repos_for_serving(
    store: &str,
    config: RepoConfig,
    caches: Caches,
    latency: std::time::Duration,
    disk_cache: Option<(PathBuf, u64)>,
) -> anyhow::Result<(Repos, Option<DiskCacheStore>)> {
    let mut store = stowage::store_url::open(store).await?;
    if !latency.is_zero() {
        store = std::sync::Arc::new(stowage_store::LatencyStore::new(store, latency));
    }
    let mut cache = None;
    if let Some((dir, bytes)) = disk_cache {
        let cached = DiskCacheStore::open(store, &dir, bytes)
            .await
            .with_context(|| format!("cannot use {} as a pack cache", dir.display()))?;
        store = std::sync::Arc::new(cached.clone());
        cache = Some(cached);
    }
    Ok((Repos::new(store, caches, config), cache))
}

fn small_caches() -> Caches {
    Caches::new(64 << 20, 64 << 20, 16 << 20)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "stowage=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = RepoConfig {
                auto_create: !args.no_auto_create,
                deny_non_fast_forwards: args.deny_non_fast_forwards,
                tmp_dir: args.tmp_dir.unwrap_or_else(std::env::temp_dir),
                max_pack_bytes: args.max_push_mb << 20,
                compact_after_push: !args.no_background_compaction,
                gc_grace: std::time::Duration::from_secs(args.gc_grace_secs),
                ..RepoConfig::default()
            };
            let caches = Caches::new(
                args.index_cache_mb << 20,
                args.pack_cache_mb << 20,
                args.object_cache_mb << 20,
            );
            let latency = std::time::Duration::from_millis(args.inject_latency_ms);
            let disk_cache = args
                .pack_cache_dir
                .map(|dir| (dir, args.pack_cache_dir_mb << 20));
            let (repos, disk_cache) =
                repos_for_serving(&args.store.store, config, caches, latency, disk_cache).await?;
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            let local = listener.local_addr()?;
            tracing::info!(listen = %local, store = %args.store.store, "serving");
            // Tests and scripts read the address from this line.
            println!("listening on http://{local}");
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let options = Options {
                features: Features {
                    ref_in_want: args.allow_ref_in_want,
                    advertise_session_id: args.advertise_session_id,
                },
                disk_cache,
                ..Options::default()
            };
            http::serve(listener, repos, options, shutdown).await?;
        }
        Command::Repo(Repo::Create { name, store }) => {
            let name = RepoName::new(&name)?;
            repos(&store.store, RepoConfig::default(), small_caches())
                .await?
                .create(&name)
                .await?;
            println!("created {name}");
        }
        Command::Repo(Repo::List { store }) => {
            for name in repos(&store.store, RepoConfig::default(), small_caches())
                .await?
                .list()
                .await?
            {
                println!("{name}");
            }
        }
        Command::Repo(Repo::Delete { name, store }) => {
            let name = RepoName::new(&name)?;
            repos(&store.store, RepoConfig::default(), small_caches())
                .await?
                .delete(&name)
                .await?;
            println!("deleted {name}");
        }
        Command::Gc(args) => {
            let name = RepoName::new(&args.name)?;
            let repos = repos(&args.store.store, RepoConfig::default(), small_caches()).await?;
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
            let grace = std::time::Duration::from_secs(args.grace_secs);
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
