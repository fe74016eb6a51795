#!/usr/bin/env python3
"""What hooks add to a push, and how soon a webhook is delivered.

Two servers on one store: A plain, B with a trivial pre-receive hook (`exit 0`). Three
repositories: `plain` and `webhooked` (one signed webhook to a receiver on 127.0.0.1)
pushed through A, `hooked` through B. Each round pushes one new commit to each, in turn
(the order rotating, with a pause between pushes), and times the `git push`; for `webhooked` it also times from the end of the push to the
receiver's arrival of its delivery.

    hooks.py [--runs 10] [--store URL] [--binary PATH]

The store defaults to a fresh directory; an `s3://bucket` store needs the bucket and the
AWS_* environment (LocalStack: localstack/env.sh). Prints medians and the ratios against
the plain push, measured in the same run.
"""
import argparse
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def default_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    return os.path.join(target, "release", "stowage")


class Receiver(http.server.ThreadingHTTPServer):
    """Records when each delivery's `after` arrived."""

    def __init__(self):
        self.arrived = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        at = time.monotonic()
        after = json.loads(body).get("after")
        with self.server.lock:
            self.server.arrived.setdefault(after, at)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start_server(binary, store, extra):
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--store", store, "--no-auth",
         "--webhook-allow-private", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    for line in proc.stdout:
        if line.startswith("listening on "):
            url = line.strip().removeprefix("listening on ")
            threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
            return proc, url
    sys.exit("the server did not start")


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def push(cwd, url, n):
    with open(os.path.join(cwd, "file.txt"), "w") as f:
        f.write(f"round {n}\n")
    git(cwd, "commit", "-q", "-am", f"round {n}")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, check=True,
                         capture_output=True, text=True).stdout.strip()
    started = time.monotonic()
    subprocess.run(["git", "push", "-q", url, "main"], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return sha, started, time.monotonic()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--store")
    parser.add_argument("--binary", default=default_binary())
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="stowage-hooks-")
    os.environ.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
                       "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@stowage.invalid",
                       "GIT_COMMITTER_NAME": "bench",
                       "GIT_COMMITTER_EMAIL": "bench@stowage.invalid"})
    store = args.store or f"file://{work}/store"
    hook = os.path.join(work, "pre-receive")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(hook, 0o755)
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    servers = []
    try:
        a, a_url = start_server(args.binary, store, [])
        servers.append(a)
        b, b_url = start_server(args.binary, store, ["--pre-receive-hook", hook])
        servers.append(b)
        repos = {"plain": a_url, "webhooked": a_url, "hooked": b_url}
        dirs = {}
        for name, base in repos.items():
            d = os.path.join(work, name)
            os.makedirs(d)
            git(d, "init", "-q", "-b", "main")
            with open(os.path.join(d, "file.txt"), "w") as f:
                f.write("start\n")
            git(d, "add", ".")
            git(d, "commit", "-q", "-m", "start")
            git(d, "push", "-q", f"{base}/{name}.git", "main")
            dirs[name] = d
        hook_url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        subprocess.run([args.binary, "hook", "add", "webhooked", hook_url, "--secret", "s",
                        "--store", store], check=True, stdout=subprocess.DEVNULL)
        time.sleep(4.5)  # the servers' access state is at most 4 s old
        times = {name: [] for name in repos}
        delivery = []
        names = list(repos)
        for n in range(args.runs + 1):  # the first round warms up
            # Each round in another order, and a pause between pushes, so that no
            # push shares the machine with the background work of the one before.
            for name in names[n % 3:] + names[:n % 3]:
                base = repos[name]
                time.sleep(0.3)
                sha, started, ended = push(dirs[name], f"{base}/{name}.git", n)
                if n:
                    times[name].append(ended - started)
                if name == "webhooked":
                    deadline = time.monotonic() + 30
                    while sha not in receiver.arrived:
                        if time.monotonic() > deadline:
                            sys.exit(f"no delivery for {sha}")
                        time.sleep(0.001)
                    if n:
                        delivery.append(receiver.arrived[sha] - ended)
        plain = statistics.median(times["plain"])
        for name in repos:
            med = statistics.median(times[name])
            print(f"{name:10} push median {med * 1000:7.1f} ms  ({med / plain:.2f}x plain)")
        print(f"delivery after the push ended: median {statistics.median(delivery) * 1000:.1f} ms,"
              f" max {max(delivery) * 1000:.1f} ms ({len(delivery)} pushes)")
    finally:
        for s in servers:
            s.terminate()
            s.wait()
        receiver.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
