//! The `stowage` command: `serve`, and `repo create|list|delete`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use stowage::http::{self, Options};
use stowage::protocol::Features;
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

fn small_caches() -> Caches {
    Caches::new(64 << 20, 64 << 20)
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
                ..RepoConfig::default()
            };
            let caches = Caches::new(args.index_cache_mb << 20, args.pack_cache_mb << 20);
            let repos = repos(&args.store.store, config, caches).await?;
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
    }
    Ok(())
}
