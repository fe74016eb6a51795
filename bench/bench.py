#!/usr/bin/env python3
"""The benchmark of stowage against git http-backend, in one run on one machine.

Three servers serve the same corpus: stowage on a filesystem store, stowage on a
filesystem store with `--inject-latency-ms 20` (a local disk made to answer like S3),
and git http-backend behind nginx + fcgiwrap. Every timed operation runs RUNS times,
the servers alternating (their order rotates each run), and reports the median.

    bench.py --stowage target/release/stowage [--runs 5] [--work DIR] [--out results.json]

Groups (see BENCHMARKS.md for what each column means):
  clone     full clone (protocol v2 and v0), --depth 1, --filter=blob:none, and the
            floor: the client's own `git index-pack` of the pack a full clone receives
  fetch     no-op fetch; push of 10 commits; fetch of those 10 commits
  parallel  32 concurrent full clones
  pushes    1,000 sequential one-commit pushes into a new stowage repository, then its
            clone against the same repository merged into one pack by `stowage gc`
  big       a push of BIG_MB of incompressible data and its clone (stowage only)

Results are printed as they come and written as JSON to --out.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
WRITE_KINDS = ("put", "put_stream", "delete")
ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")


def log(*args):
    print(*args, flush=True)


def git(*args, cwd=None, env=None, stdin=None, capture=False):
    out = subprocess.run(["git", *args], cwd=cwd, env=env or ENV, stdin=stdin, check=True,
                         stdout=subprocess.PIPE if capture else None)
    return out.stdout.decode() if capture else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- /proc accounting

def proc_stat(pid):
    """(ppid, cpu seconds of the process and of the children it has waited for, rss bytes)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state) of proc(5).
    ppid = int(fields[1])
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / HZ  # utime stime cutime cstime
    rss = int(fields[21]) * PAGE
    return ppid, cpu, rss


def process_tree(roots):
    """The PIDs of `roots` and of all their descendants."""
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parent[int(name)] = proc_stat(int(name))[0]
            except (OSError, IndexError):
                pass
    found, changed = set(roots), True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found


class RssSampler:
    """Samples the summed RSS of a process tree every 20 ms; keeps the peak of the sum and
    the peak of any single process."""

    def __init__(self, roots):
        self.roots, self.peak_sum, self.peak_one = roots, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            total = 0
            for pid in process_tree(self.roots):
                try:
                    rss = proc_stat(pid)[2]
                except (OSError, IndexError):
                    continue
                total += rss
                self.peak_one = max(self.peak_one, rss)
            self.peak_sum = max(self.peak_sum, total)
            self._stop.wait(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak_sum, self.peak_one


# ---------------------------------------------------------------- servers

class Stowage:
    kind = "stowage"

    def __init__(self, name, binary, store_dir, work, latency_ms=0, extra=(), env=None):
        self.name, self.binary, self.store_dir = name, binary, store_dir
        self.latency_ms = latency_ms
        self.store_url = f"file://{store_dir}"
        port = free_port()
        # git http-backend has no access control of its own: compare like with like.
        args = [binary, "serve", "--listen", f"127.0.0.1:{port}", "--store", self.store_url,
                "--no-auth"]
        if latency_ms:
            args += ["--inject-latency-ms", str(latency_ms)]
        args += list(extra)
        self.log = open(os.path.join(work, f"{name}.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        self.pid, self.base = self.proc.pid, f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit(f"{name} did not start")

    def url(self, repo):
        return f"{self.base}/{repo}.git"

    def stats(self):
        with urllib.request.urlopen(f"{self.base}/-/stats", timeout=10) as r:
            return json.load(r)

    def requests(self):
        s = self.stats()
        return dict(s["store_requests"], total=s["store_requests_total"])

    def cpu(self):
        return proc_stat(self.pid)[1]

    def cpu_snapshot(self):
        """CPU nanoseconds per thread (/proc/PID/task/TID/schedstat), exact where the
        process total of /proc/PID/stat comes in 10 ms ticks."""
        snap = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    snap[tid] = int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass
        return snap

    def cpu_since(self, snap):
        # A thread that ended in between was idle (tokio retires idle threads after
        # 10 s), so what it did before is in `snap`; a new one counts from zero.
        now = self.cpu_snapshot()
        return sum(ns - snap.get(tid, 0) for tid, ns in now.items()) / 1e9

    def reset_peak_rss(self):
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_rss(self):
        with open(f"/proc/{self.pid}/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024

    def roots(self):
        return [self.pid]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


NGINX_CONF = """
user root;
worker_processes 2;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {work}/tmp/body;
  fastcgi_temp_path {work}/tmp/fastcgi;
  proxy_temp_path {work}/tmp/proxy;
  uwsgi_temp_path {work}/tmp/uwsgi;
  scgi_temp_path {work}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 0;
    location / {{
      include /etc/nginx/fastcgi_params;
      fastcgi_buffering off;
      fastcgi_request_buffering off;
      fastcgi_read_timeout 600s;
      fastcgi_param SCRIPT_FILENAME {backend};
      fastcgi_param GIT_PROJECT_ROOT {root};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO $uri;
      fastcgi_param GIT_PROTOCOL $http_git_protocol;
      fastcgi_pass unix:{work}/fcgi.sock;
    }}
  }}
}}
"""


class HttpBackend:
    """git http-backend behind nginx and fcgiwrap. Its server CPU is that of nginx and
    fcgiwrap (from /proc) plus that of every CGI request, which lives in short-lived
    processes: the CGI program is a wrapper (rusage_wrap.c, or rusage_wrap.py without a C
    compiler) that runs git http-backend and logs the CPU of it and of the git processes
    it waited for."""
    kind = "http-backend"

    def __init__(self, name, root, work, workers):
        self.name, self.root = name, root
        os.makedirs(os.path.join(work, "tmp"), exist_ok=True)
        port = free_port()
        git_backend = os.path.join(git("--exec-path", capture=True).strip(), "git-http-backend")
        here = os.path.dirname(os.path.abspath(__file__))
        self.cpu_log = os.path.join(work, "backend-cpu.log")
        open(self.cpu_log, "w").close()
        wrapper = os.path.join(work, "rusage_wrap")
        if shutil.which("cc") and subprocess.run(
                ["cc", "-O2", "-o", wrapper, os.path.join(here, "rusage_wrap.c")]).returncode == 0:
            prefix = wrapper
        else:
            prefix = f"{sys.executable} {os.path.join(here, 'rusage_wrap.py')}"
        backend = os.path.join(work, "http-backend-cpu")
        with open(backend, "w") as f:
            f.write(f"#!/bin/sh\nexec {prefix} {self.cpu_log} {git_backend}\n")
        os.chmod(backend, 0o755)
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(work=work, port=port, backend=backend, root=root))
        if os.path.exists(f"{work}/fcgi.sock"):
            os.unlink(f"{work}/fcgi.sock")
        self.fcgi = subprocess.Popen(["fcgiwrap", "-c", str(workers), "-s", f"unix:{work}/fcgi.sock"])
        for _ in range(100):
            if os.path.exists(f"{work}/fcgi.sock"):
                break
            time.sleep(0.05)
        self.nginx = subprocess.Popen(["nginx", "-c", conf, "-p", work])
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        sys.exit("nginx did not start")

    def url(self, repo):
        return f"{self.base}/{repo}.git"

    def roots(self):
        return [self.fcgi.pid, self.nginx.pid]

    def cpu(self):
        with open(self.cpu_log) as f:
            total = sum(float(x) for x in f.read().split())
        for pid in process_tree(self.roots()):
            try:
                total += proc_stat(pid)[1]
            except (OSError, IndexError):
                pass
        return total

    def cpu_snapshot(self):
        return self.cpu()

    def cpu_since(self, snap):
        return self.cpu() - snap

    def requests(self):
        return None

    def stop(self):
        # fcgiwrap's prefork workers are its children; they exit with it on SIGTERM.
        for p in (self.nginx, self.fcgi):
            workers = process_tree([p.pid]) - {p.pid}
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for pid in workers:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


def settle(server, quiet=0.3, limit=30.0):
    """Waits until the server uses no CPU and makes no store requests for `quiet` seconds
    (a stowage compaction after a push runs in the background; git processes may still be
    exiting after the client is done)."""
    end = time.monotonic() + limit
    last = (server.cpu(), (server.requests() or {}).get("total"))
    while time.monotonic() < end:
        time.sleep(quiet)
        now = (server.cpu(), (server.requests() or {}).get("total"))
        if now == last:
            return
        last = now


def diff_requests(before, after):
    if before is None:
        return None
    return {k: after[k] - before[k] for k in after if after[k] != before[k] or k == "total"}


# ---------------------------------------------------------------- operations

def run_timed(args, cwd=None, env=None):
    t0 = time.monotonic()
    p = subprocess.Popen(args, cwd=cwd, env=env or ENV)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if status != 0:
        sys.exit(f"failed: {' '.join(args)}")
    return wall, ru.ru_utime + ru.ru_stime


def pack_bytes(git_dir, exclude=()):
    d = os.path.join(git_dir, "objects", "pack")
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
               if f.endswith(".pack") and f not in exclude)


def packs_of(git_dir):
    d = os.path.join(git_dir, "objects", "pack")
    return {f for f in os.listdir(d) if f.endswith(".pack")}


def measured(server, op):
    """Runs op() (which returns (wall, extra dict)) and adds server CPU, and for stowage
    store requests: `requests` right when the operation ends, `requests_settled` once the
    server is idle again (a push's background compaction included)."""
    settle(server)
    req0 = server.requests()
    cpu0 = server.cpu_snapshot()
    wall, extra = op()
    req1 = server.requests()
    settle(server)
    cpu = server.cpu_since(cpu0)
    req2 = server.requests()
    row = dict(wall=wall, cpu=cpu, **extra)
    if req0 is not None:
        row["requests"] = diff_requests(req0, req1)
        row["requests_settled"] = diff_requests(req0, req2)
    return row


def clone_op(url, dest, *extra, protocol=2):
    def op():
        wall, client = run_timed(["git", "-c", f"protocol.version={protocol}", "clone", "-q",
                                  "--bare", *extra, url, dest])
        size = pack_bytes(dest)
        shutil.rmtree(dest)
        return wall, dict(bytes=size, client_cpu=client)
    return op


def edit_files(tree, rng, paths, count):
    for p in rng.sample(paths, count):
        full = os.path.join(tree, p)
        with open(full) as f:
            lines = f.read().split("\n")
        words = ["alpha", "beta", "gamma", "delta", "store", "pack", "fetch", "push", "tree"]
        new = " ".join(rng.choice(words) for _ in range(rng.randint(3, 10)))
        if rng.random() < 0.6 or len(lines) < 3:
            lines.insert(rng.randint(0, len(lines) - 1), new)
        else:
            lines[rng.randrange(len(lines) - 1)] = new
        with open(full, "w") as f:
            f.write("\n".join(lines))


def commit_env(n):
    stamp = f"{1_700_000_000 + 60 * n} +0000"
    return dict(ENV, GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="bench@stowage.invalid",
                GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@stowage.invalid",
                GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)


def make_commits(tree, rng, paths, first, count, files=(1, 4)):
    """`count` commits on the checked-out branch, each a small edit of 1-4 existing files;
    the same seed and numbering give the same commits (same ids) on every server."""
    for n in range(first, first + count):
        edit_files(tree, rng, paths, rng.randint(*files))
        git("commit", "-q", "-a", "-m", f"edit {n}", cwd=tree, env=commit_env(n))


def median_row(rows):
    """Medians of every numeric field over runs (a server's first request of a kind may
    do one-off work, such as loading a pack into memory: it shows in "all"); request
    breakdowns from the first run (they are the same on every run). The runs themselves
    are kept under "all"."""
    out = {"runs": len(rows), "all": rows}
    for key in rows[0]:
        vals = [r[key] for r in rows]
        if isinstance(vals[0], (int, float)):
            out[key] = statistics.median(vals)
        else:
            out[key] = vals[0]
            if isinstance(vals[0], dict) and "total" in vals[0]:
                out[key + "_median_total"] = statistics.median(v["total"] for v in vals)
    return out


# ---------------------------------------------------------------- groups

def cold_clone(stowage, repo, work):
    """Store requests of one full clone from a new server on the same store: nothing
    cached, every index and pack read from the store."""
    fresh = Stowage(stowage.name + "-cold", stowage.binary, stowage.store_dir, work, stowage.latency_ms)
    try:
        return measured(fresh, clone_op(fresh.url(repo), os.path.join(work, "cold")))
    finally:
        fresh.stop()


def group_clone(servers, runs, work, results):
    log("== clones")
    floor_pack = os.path.join(work, "floor.pack")
    dest = os.path.join(work, "floor-src")
    git("clone", "-q", "--bare", servers[0].url("corpus"), dest)
    [p] = packs_of(dest)
    shutil.copy(os.path.join(dest, "objects", "pack", p), floor_pack)
    shutil.rmtree(dest)

    def floor_op():
        d = os.path.join(work, "floor-repo")
        git("init", "-q", "--bare", d)
        with open(floor_pack, "rb") as f:
            t0 = time.monotonic()
            subprocess.run(["git", "index-pack", "--stdin", "--fix-thin",
                            "--check-self-contained-and-connected"], cwd=d, stdin=f,
                           stdout=subprocess.DEVNULL, check=True, env=ENV)
            wall = time.monotonic() - t0
        shutil.rmtree(d)
        return wall

    cases = [("full clone v2", (), 2), ("full clone v0", (), 0),
             ("--depth 1 clone", ("--depth", "1"), 2),
             ("--filter=blob:none clone", ("--filter=blob:none",), 2)]
    for s in servers:  # warm-up, not measured
        clone_op(s.url("corpus"), os.path.join(work, "warm"))()
    floor = []
    rows = {(c[0], s.name): [] for c in cases for s in servers}
    for i in range(runs):
        floor.append(floor_op())
        for label, extra, proto in cases:
            k = i % len(servers)
            for s in servers[k:] + servers[:k]:
                rows[(label, s.name)].append(
                    measured(s, clone_op(s.url("corpus"), os.path.join(work, "c"), *extra, protocol=proto)))
    results["floor"] = {"wall": statistics.median(floor), "runs": runs,
                        "pack_bytes": os.path.getsize(floor_pack)}
    log(f"floor (git index-pack of the {os.path.getsize(floor_pack)} byte pack): {results['floor']['wall']:.3f} s")
    for s in servers:
        if s.kind == "stowage":
            results.setdefault("full clone v2, cold", {})[s.name] = c = cold_clone(s, "corpus", work)
            log(f"full clone v2 from a new server ({s.name}): wall {c['wall']:.3f} s, requests {c['requests']}")
    for (label, name), r in rows.items():
        results.setdefault(label, {})[name] = m = median_row(r)
        log(f"{label:26} {name:16} wall {m['wall']:.3f} s  cpu {m['cpu']:.3f} s  bytes {m['bytes']:,}"
            + (f"  requests {m['requests']}" if "requests" in m else ""))


def group_fetch(servers, runs, work, results):
    log("== no-op fetch, push of 10 commits, fetch of 10 commits")
    fetchers, pushers, paths = {}, {}, None
    for s in servers:
        f = os.path.join(work, f"fetcher-{s.name}")
        git("clone", "-q", "--bare", s.url("corpus"), f)
        git("config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*", cwd=f)
        git("config", "transfer.unpackLimit", "1", cwd=f)  # keep received packs, to size them
        git("fetch", "-q", "origin", cwd=f)
        fetchers[s.name] = f
        p = os.path.join(work, f"pusher-{s.name}")
        git("clone", "-q", "-b", "main", s.url("corpus"), p)
        pushers[s.name] = p
        if paths is None:
            paths = git("ls-files", cwd=p, capture=True).split()
    rngs = {s.name: random.Random(5) for s in servers}

    def fetch_op(s):
        def op():
            before = packs_of(fetchers[s.name])
            wall, _ = run_timed(["git", "fetch", "-q", "origin"], cwd=fetchers[s.name])
            return wall, dict(bytes=pack_bytes(fetchers[s.name], exclude=before))
        return op

    def push_op(s):
        def op():
            wall, _ = run_timed(["git", "push", "-q", "origin", "main"], cwd=pushers[s.name])
            return wall, {}
        return op

    rows = {(g, s.name): [] for g in ("no-op fetch", "push of 10 commits", "fetch of 10 commits")
            for s in servers}
    for i in range(runs):
        k = i % len(servers)
        order = servers[k:] + servers[:k]
        for s in order:
            rows[("no-op fetch", s.name)].append(measured(s, fetch_op(s)))
        for s in order:
            make_commits(pushers[s.name], rngs[s.name], paths, 10 * i, 10)
            rows[("push of 10 commits", s.name)].append(measured(s, push_op(s)))
        for s in order:
            rows[("fetch of 10 commits", s.name)].append(measured(s, fetch_op(s)))
    for (label, name), r in rows.items():
        results.setdefault(label, {})[name] = m = median_row(r)
        log(f"{label:22} {name:16} wall {m['wall']:.3f} s  cpu {m['cpu']:.3f} s  bytes {m.get('bytes', '-')}"
            + (f"  requests {m['requests']} settled {m['requests_settled']}" if "requests" in m else ""))
    for d in list(fetchers.values()) + list(pushers.values()):
        shutil.rmtree(d)


def group_parallel(servers, runs, work, results, n=32):
    log(f"== {n} concurrent full clones")
    rows = {s.name: [] for s in servers}
    for i in range(runs):
        k = i % len(servers)
        for s in servers[k:] + servers[:k]:
            def op(s=s):
                if s.kind == "stowage":
                    s.reset_peak_rss()
                sampler = RssSampler(s.roots())
                dests = [os.path.join(work, f"par-{j}") for j in range(n)]
                t0 = time.monotonic()
                procs = [subprocess.Popen(["git", "clone", "-q", "--bare", s.url("corpus"), d], env=ENV)
                         for d in dests]
                failed = sum(p.wait() != 0 for p in procs)
                wall = time.monotonic() - t0
                peak_sum, peak_one = sampler.stop()
                extra = dict(failed=failed, rss_sampled_sum=peak_sum, rss_sampled_max_process=peak_one)
                if s.kind == "stowage":
                    extra["rss_vmhwm"] = s.peak_rss()
                for d in dests:
                    shutil.rmtree(d, ignore_errors=True)
                return wall, extra
            rows[s.name].append(measured(s, op))
    for name, r in rows.items():
        results.setdefault(f"{n} concurrent clones", {})[name] = m = median_row(r)
        m["rss_max_over_runs"] = max(x.get("rss_vmhwm", x["rss_sampled_sum"]) for x in r)
        log(f"{name:16} wall {m['wall']:.2f} s  cpu {m['cpu']:.2f} s  failed {m['failed']}  "
            f"rss sampled sum {m['rss_sampled_sum'] / 2**20:.0f} MiB  max process "
            f"{m['rss_sampled_max_process'] / 2**20:.0f} MiB"
            + (f"  VmHWM {m['rss_vmhwm'] / 2**20:.0f} MiB" if "rss_vmhwm" in m else ""))


ZERO_ID = "0" * 40


def receive_pack(url, updates):
    """POSTs the receive-pack request `git push` would send for `updates` ((old, new, name)
    triples): the commands, then an empty pack when anything is created (the objects
    are on the server already). Returns the wall time. git's own HTTP push is not used
    here: its cost grows faster than the square of the number of refs (minutes of client
    CPU at 10,000 refs, whichever the server), which would hide the server's share."""
    import hashlib
    lines = []
    for i, (old, new, name) in enumerate(updates):
        line = f"{old} {new} {name}".encode()
        if i == 0:
            line += b"\0report-status side-band-64k quiet agent=git/2.47.3"
        line += b"\n"
        lines.append(f"{len(line) + 4:04x}".encode() + line)
    body = b"".join(lines) + b"0000"
    if any(new != ZERO_ID for _, new, _ in updates):
        pack = b"PACK" + (2).to_bytes(4, "big") + (0).to_bytes(4, "big")
        body += pack + hashlib.sha1(pack).digest()
    req = urllib.request.Request(f"{url}/git-receive-pack", data=body, headers={
        "Content-Type": "application/x-git-receive-pack-request",
        "Accept": "application/x-git-receive-pack-result"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=600) as r:
        out = r.read()
    wall = time.monotonic() - t0
    if b"unpack ok" not in out or b"ng refs/" in out:
        sys.exit(f"receive-pack refused the updates: {out[:300]!r}")
    return wall


def group_refs(servers, runs, work, results, srv, count=10000):
    log(f"== {count} refs: created by one push, listed, deleted by one push")
    revs = git("rev-list", "--max-count=500", "main", cwd=os.path.join(srv, "corpus.git"),
               capture=True).split()
    half = count // 2
    names = [f"refs/heads/topic/{i:05d}" for i in range(half)] + \
            [f"refs/tags/t{i:05d}" for i in range(count - half)]
    targets = [revs[(i * 7) % len(revs)] for i in range(count)]

    def create_op(s):
        def op():
            return receive_pack(s.url("corpus"), [(ZERO_ID, t, n) for n, t in zip(names, targets)]), {}
        return op

    def list_op(s):
        def op():
            t0 = time.monotonic()
            out = git("ls-remote", s.url("corpus"), capture=True)
            wall = time.monotonic() - t0
            listed = out.count("\n")
            if listed < count:
                sys.exit(f"{s.name}: ls-remote listed {listed} refs")
            return wall, dict(refs=listed)
        return op

    def delete_op(s):
        def op():
            return receive_pack(s.url("corpus"), [(t, ZERO_ID, n) for n, t in zip(names, targets)]), {}
        return op

    labels = (f"push creating {count} refs", f"ls-remote of {count} refs",
              f"push deleting {count} refs")
    rows = {(g, s.name): [] for g in labels for s in servers}
    for i in range(runs):
        k = i % len(servers)
        order = servers[k:] + servers[:k]
        for label, make in zip(labels, (create_op, list_op, delete_op)):
            for s in order:
                rows[(label, s.name)].append(measured(s, make(s)))
    for (label, name), r in rows.items():
        results.setdefault(label, {})[name] = m = median_row(r)
        log(f"{label:26} {name:16} wall {m['wall']:.3f} s  cpu {m['cpu']:.3f} s"
            + (f"  requests {m['requests']}" if "requests" in m else ""))


def fsck(binary, store_url, name):
    out = subprocess.run([binary, "fsck", name, "--store", store_url], check=True,
                         stdout=subprocess.PIPE, env=ENV).stdout.decode()
    return int(re.search(r"(\d+) packs", out).group(1)), out.strip()


def group_pushes(binary, stowage, runs, work, results, count=1000):
    log(f"== {count} sequential one-commit pushes into a new repository ({stowage.name})")
    tree = os.path.join(work, "many")
    git("init", "-q", "-b", "main", tree)
    rng = random.Random(9)
    paths = []
    for d in range(5):
        for f in range(10):
            p = f"pkg{d}/mod{f}.py"
            os.makedirs(os.path.join(tree, f"pkg{d}"), exist_ok=True)
            with open(os.path.join(tree, p), "w") as fh:
                fh.write("\n".join(f"line {k} of {p}" for k in range(rng.randint(20, 80))) + "\n")
            paths.append(p)
    git("add", "-A", cwd=tree)
    url = stowage.url("many")
    settle(stowage)
    req0, cpu0 = stowage.requests(), stowage.cpu()
    t0 = time.monotonic()
    push_walls = []
    for n in range(count):
        if n:
            edit_files(tree, rng, paths, 1)
        git("commit", "-q", "-a", "-m", f"change {n}", cwd=tree, env=commit_env(n))
        w, _ = run_timed(["git", "push", "-q", url, "main"], cwd=tree)
        push_walls.append(w)
    total = time.monotonic() - t0
    packs_now, _ = fsck(binary, stowage.store_url, "many")
    settle(stowage)
    packs_settled, fsck_out = fsck(binary, stowage.store_url, "many")
    req = diff_requests(req0, stowage.requests())
    r = dict(pushes=count, total_wall=total, push_wall_median=statistics.median(push_walls),
             push_wall_max=max(push_walls), server_cpu=stowage.cpu() - cpu0, requests=req,
             live_packs_after_last_push=packs_now, live_packs_settled=packs_settled, fsck=fsck_out)
    log(f"{count} pushes: {total:.1f} s (median push {r['push_wall_median']:.3f} s), live packs "
        f"{packs_now} right after the last push, {packs_settled} once compaction is done; {fsck_out}")
    # The same repository merged into one pack, under another name, served side by side.
    shutil.copytree(os.path.join(stowage.store_dir, "many.git"), os.path.join(stowage.store_dir, "many-gc.git"))
    subprocess.run([binary, "gc", "many-gc", "--store", stowage.store_url], check=True,
                   stdout=subprocess.DEVNULL, env=ENV)
    r["gc_packs"], r["gc_fsck"] = fsck(binary, stowage.store_url, "many-gc")
    rows = {"many": [], "many-gc": []}
    for name in rows:
        clone_op(stowage.url(name), os.path.join(work, "warm"))()
    for i in range(runs):
        for name in (["many", "many-gc"] if i % 2 == 0 else ["many-gc", "many"]):
            rows[name].append(measured(stowage, clone_op(stowage.url(name), os.path.join(work, "c"))))
    r["clone_cold"] = cold_clone(stowage, "many", work)
    r["clone_one_pack_cold"] = cold_clone(stowage, "many-gc", work)
    log(f"clone from a new server: {r['clone_cold']['requests']}, one pack: {r['clone_one_pack_cold']['requests']}")
    r["clone"] = median_row(rows["many"])
    r["clone_one_pack"] = median_row(rows["many-gc"])
    r["clone_ratio"] = r["clone"]["wall"] / r["clone_one_pack"]["wall"]
    log(f"clone: {r['clone']['wall']:.3f} s ({r['clone']['requests']}) vs one pack "
        f"{r['clone_one_pack']['wall']:.3f} s ({r['clone_one_pack']['requests']}): {r['clone_ratio']:.2f}x")
    results["1000 pushes"] = r
    shutil.rmtree(tree)


def group_big(binary, work, results, mb, files=4):
    log(f"== push of {mb} MB of incompressible data and its clone (stowage, new server)")
    tree = os.path.join(work, "big")
    git("init", "-q", "-b", "main", tree)
    t0 = time.monotonic()
    rng = random.Random(7)
    chunk = 16 << 20
    for i in range(files):
        with open(os.path.join(tree, f"data{i}.bin"), "wb") as f:
            for _ in range(mb // files * (1 << 20) // chunk):
                f.write(rng.randbytes(chunk))
    # Level 0 zlib keeps the client from spending minutes compressing random bytes; the
    # server still inflates and hashes every object.
    cfg = ["-c", "core.compression=0", "-c", "pack.compression=0"]
    git(*cfg, "add", "-A", cwd=tree)
    git(*cfg, "commit", "-q", "-m", "big data", cwd=tree, env=commit_env(0))
    prep = time.monotonic() - t0
    store = os.path.join(work, "big-data")
    s = Stowage("stowage-big", binary, store, work)
    try:
        cpu0 = s.cpu()
        push_wall, _ = run_timed(["git", *cfg, "push", "-q", s.url("big"), "main"], cwd=tree)
        push_rss, push_cpu = s.peak_rss(), s.cpu() - cpu0
        shutil.rmtree(tree)
        settle(s)
        s.reset_peak_rss()
        cpu0 = s.cpu()
        dest = os.path.join(work, "big-clone")
        clone_wall, _ = run_timed(["git", "clone", "-q", "--bare", s.url("big"), dest])
        clone_rss, clone_cpu = s.peak_rss(), s.cpu() - cpu0
        size = pack_bytes(dest)
        shutil.rmtree(dest)
    finally:
        s.stop()
        shutil.rmtree(store, ignore_errors=True)
    results["big"] = dict(mb=mb, files=files, prepare_wall=prep, push_wall=push_wall, push_rss=push_rss,
                          push_cpu=push_cpu, clone_wall=clone_wall, clone_rss=clone_rss,
                          clone_cpu=clone_cpu, clone_bytes=size)
    log(f"push {push_wall:.1f} s, peak RSS {push_rss / 2**20:.0f} MiB; clone {clone_wall:.1f} s, "
        f"peak RSS {clone_rss / 2**20:.0f} MiB (preparing the data: {prep:.0f} s)")


def make_corpus(root, commits, files, gen):
    git("init", "-q", "--bare", root)
    g = subprocess.Popen([sys.executable, gen, "--commits", str(commits), "--files", str(files)],
                         stdout=subprocess.PIPE)
    git("fast-import", "--quiet", "--done", cwd=root, stdin=g.stdout)
    g.wait()
    git("symbolic-ref", "HEAD", "refs/heads/main", cwd=root)
    git("gc", "-q", cwd=root)
    git("config", "http.receivepack", "true", cwd=root)
    git("config", "uploadpack.allowFilter", "true", cwd=root)
    count = git("count-objects", "-v", cwd=root, capture=True)
    return dict(commits=commits, files=files,
                objects=int(re.search(r"in-pack: (\d+)", count).group(1)),
                pack_bytes=pack_bytes(root), refs=len(git("show-ref", cwd=root, capture=True).split("\n")) - 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stowage", required=True, help="the stowage binary (release build)")
    ap.add_argument("--work", required=True, help="an empty directory for repositories and stores")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--parallel-runs", type=int, default=5)
    ap.add_argument("--commits", type=int, default=5000)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--pushes", type=int, default=1000)
    ap.add_argument("--big-mb", type=int, default=2048)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--fcgi-workers", type=int, default=32)
    ap.add_argument("--groups", default="clone,fetch,parallel,pushes,refs,big")
    ap.add_argument("--out", required=True)
    ap.add_argument("--telemetry", action="store_true",
                    help="compare stowage with and without metrics and tracing "
                         "(--no-metrics, RUST_LOG=off) instead of the usual servers")
    a = ap.parse_args()
    groups = a.groups.split(",")
    work = os.path.abspath(a.work)
    os.environ["HOME"] = ENV["HOME"] = os.path.join(work, "home")
    ENV["GIT_CONFIG_GLOBAL"] = "/dev/null"
    os.makedirs(ENV["HOME"], exist_ok=True)
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": a.runs,
               "git": git("--version", capture=True).strip(), "latency_ms": a.latency_ms}
    t_start = time.monotonic()

    def save():
        results["elapsed"] = time.monotonic() - t_start
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)

    srv = os.path.join(work, "srv")
    os.makedirs(srv)
    log(f"== corpus: {a.commits} commits over {a.files} files")
    results["corpus"] = make_corpus(os.path.join(srv, "corpus.git"), a.commits, a.files,
                                    os.path.join(os.path.dirname(__file__), "gen_corpus.py"))
    log(results["corpus"])
    servers = []
    try:
        servers.append(Stowage("stowage", a.stowage, os.path.join(work, "store-fs"), work))
        if a.telemetry:
            servers.append(Stowage("stowage, no telemetry", a.stowage,
                                   os.path.join(work, "store-bare"), work,
                                   extra=["--no-metrics"], env={"RUST_LOG": "off"}))
        else:
            servers.append(Stowage(f"stowage+{a.latency_ms}ms", a.stowage,
                                   os.path.join(work, "store-lat"), work, latency_ms=a.latency_ms))
            servers.append(HttpBackend("http-backend", srv, work, a.fcgi_workers))
        for s in servers[:2]:
            git("push", "-q", s.url("corpus"), "refs/*:refs/*", cwd=os.path.join(srv, "corpus.git"))
            results.setdefault("packs after corpus push", {})[s.name] = fsck(a.stowage, s.store_url, "corpus")[1]
        if "clone" in groups:
            group_clone(servers, a.runs, work, results)
            save()
        if "parallel" in groups:
            group_parallel(servers, a.parallel_runs, work, results)
            save()
        if "fetch" in groups:
            group_fetch(servers, a.runs, work, results)
            for s in servers[:2]:
                results.setdefault("packs after fetch group", {})[s.name] = fsck(a.stowage, s.store_url, "corpus")[1]
            save()
        if "pushes" in groups:
            group_pushes(a.stowage, servers[0], a.runs, work, results, a.pushes)
            save()
        if "refs" in groups:
            group_refs(servers, a.runs, work, results, srv)
            save()
    finally:
        for s in servers:
            s.stop()
    if "big" in groups and a.big_mb > 0:
        group_big(a.stowage, work, results, a.big_mb)
    save()
    log(f"== done in {results['elapsed']:.0f} s; results in {a.out}")


if __name__ == "__main__":
    main()
