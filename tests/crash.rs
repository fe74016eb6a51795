//! The crash test: four clients push to two server instances on one store while the
//! servers are killed with SIGKILL at random moments and started again. Afterwards
//! every push a client was told succeeded is there, and fsck finds every listed pack
//! whole.
//!
//! `STOWAGE_CRASH_PUSHES` sets the pushes per client (12 by default, as CI runs it);
//! `STOWAGE_CRASH_SEED` repeats a run (the seed is printed).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Backend, Sandbox, Server, stowage};

on_every_backend!(acknowledged_pushes_survive_killed_servers);

const CLIENTS: usize = 4;

/// A small deterministic random source.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An address on loopback that was free a moment ago.
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

fn acknowledged_pushes_survive_killed_servers(backend: Backend) {
    let pushes: usize = std::env::var("STOWAGE_CRASH_PUSHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("STOWAGE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash test: seed {seed}, {CLIENTS} clients, {pushes} pushes each");
    let sb = Sandbox::new();
    // The servers' own scratch space, to see what killed ones leave there.
    let scratch = sb.path("scratch");
    std::fs::create_dir_all(&scratch).expect("scratch dir");
    let tmp_dir = scratch.to_str().expect("utf-8").to_owned();
    let flags = ["--tmp-dir", tmp_dir.as_str()];
    let addresses = [free_address(), free_address()];
    let servers: Vec<Arc<Mutex<Server>>> = addresses
        .iter()
        .map(|a| Arc::new(Mutex::new(Server::start_at(&backend, a, &flags))))
        .collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|s| s.lock().expect("server").url("crash.git"))
        .collect();

    // Every client starts from the same first commit, on a branch of its own.
    let seed_repo = sb.init_repo("seed");
    sb.commit(&seed_repo, "README", "crash test\n", "first");
    sb.git(&seed_repo, &["push", "-q", &urls[0], "main"]);

    let done = AtomicBool::new(false);
    let kills = AtomicU64::new(0);
    let started = Instant::now();
    let results: Vec<Vec<(String, bool)>> = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let mut random = Random(seed);
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50 + random.below(300)));
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let i = random.below(2) as usize;
                let mut server = servers[i].lock().expect("server");
                server.kill();
                kills.fetch_add(1, Ordering::SeqCst);
                // Down for a moment, then back on the same address.
                std::thread::sleep(Duration::from_millis(random.below(200)));
                *server = Server::start_at(&backend, &addresses[i], &flags);
            }
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (sb, urls, seed_repo) = (&sb, &urls, &seed_repo);
                scope.spawn(move || {
                    let mut random = Random(seed.wrapping_mul(c as u64 + 7) | 1);
                    let dir = sb.path(&format!("client-{c}"));
                    sb.git(
                        sb.dir.path(),
                        &[
                            "clone",
                            "-q",
                            seed_repo.to_str().expect("utf-8"),
                            dir.to_str().expect("utf-8"),
                        ],
                    );
                    let branch = format!("HEAD:refs/heads/client-{c}");
                    let mut log = Vec::new();
                    for n in 0..pushes {
                        let body: String = (0..200)
                            .map(|i| format!("{c} {n} {i} {}\n", random.next()))
                            .collect();
                        let commit =
                            sb.commit(&dir, &format!("c{c}/f{n}.txt"), &body, &format!("{c}.{n}"));
                        let url = &urls[random.below(2) as usize];
                        let ok = sb
                            .git_output(&dir, &["push", "-q", url, &branch])
                            .status
                            .success();
                        log.push((commit, ok));
                    }
                    log
                })
            })
            .collect();
        let results = clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect();
        done.store(true, Ordering::SeqCst);
        killer.join().expect("killer");
        results
    });
    let elapsed = started.elapsed();

    // Every acknowledged push is in its branch's history, read through a server that
    // was not killed.
    drop(servers);
    // A server starting on the scratch directory removes what killed ones left there.
    let check = Server::start_with(&backend, &flags);
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .expect("scratch dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "abandoned scratch directories: {left:?}");
    let url = check.url("crash.git");
    let verify = sb.path("verify");
    sb.git(
        sb.dir.path(),
        &[
            "clone",
            "-q",
            "--mirror",
            &url,
            verify.to_str().expect("utf-8"),
        ],
    );
    let (mut acknowledged, mut present, mut attempted) = (0, 0, 0);
    for (c, log) in results.iter().enumerate() {
        let tip = format!("refs/heads/client-{c}");
        for (commit, ok) in log {
            attempted += 1;
            if !ok {
                continue;
            }
            acknowledged += 1;
            let out = sb.git_output(&verify, &["merge-base", "--is-ancestor", commit, &tip]);
            if out.status.success() {
                present += 1;
            } else {
                eprintln!("client {c}: acknowledged {commit} is not in {tip}");
            }
        }
    }
    let fsck = stowage()
        .args(["fsck", "crash", "--store", &backend.url()])
        .output()
        .expect("stowage fsck");
    eprintln!(
        "crash test: {attempted} pushes, {} kills, {acknowledged} acknowledged, {present} \
         present, in {elapsed:?}; fsck: {}",
        kills.load(Ordering::SeqCst),
        String::from_utf8_lossy(&fsck.stdout).trim()
    );
    assert_eq!(present, acknowledged, "an acknowledged push was lost");
    assert!(acknowledged > 0, "no push got through");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}
