#!/usr/bin/env python3
"""Times a Git LFS push and clone of one large file through a stowage server, and a plain
download of the object (`curl` of the batch API's download link: the server or the bucket),
against a plain PUT and GET of the same bytes to the same store (the floor), and reports
the server's peak RSS. A clone does more than a download: git-lfs hashes the object and
writes it twice (its object directory and the work tree).

    bench/lfs_measure.py [--mb 1024] [--runs 1] [--only NAME,...]

Configurations, each on a fresh store and a fresh server (release build):
  fs          filesystem store, objects through the server
  s3-server   S3 (the endpoint in AWS_ENDPOINT_URL, e.g. LocalStack), --lfs-direct=false
  s3-direct   S3 with presigned URLs straight to the bucket (the default)
The floors: on the filesystem, `cat` of the file into and out of the store directory
(synced on write, as the store does); on S3, `curl --aws-sigv4` PUT and GET of the file.

Run it as `bench/lfs.sh`, which builds the server, installs git-lfs and starts LocalStack.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, cwd=None, env=None):
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def timed(cmd, cwd=None, env=None):
    # Dirty pages of an earlier step must not slow this one down.
    os.sync()
    t0 = time.monotonic()
    run(cmd, cwd=cwd, env=env)
    return time.monotonic() - t0


def s3_curl(*args):
    key = os.environ.get("AWS_ACCESS_KEY_ID", "test")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "test")
    region = os.environ.get("AWS_REGION", "us-east-1")
    return ["curl", "-sSf", "--aws-sigv4", f"aws:amz:{region}:s3",
            "--user", f"{key}:{secret}", *args]


class Server:
    def __init__(self, binary, store, extra):
        env = dict(os.environ, RUST_LOG="stowage=warn")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--store", store, *extra],
            stdout=subprocess.PIPE, text=True, env=env)
        self.token = None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("stw_"):
                self.token = line
            if line.startswith("listening on "):
                self.base = line[len("listening on "):]
                break
        else:
            sys.exit("the server ended before it listened")
        if self.token is None:
            sys.exit("the server printed no admin token (is the store fresh?)")
        self.auth_base = self.base.replace("://", f"://admin:{self.token}@", 1)

    def stats(self):
        req = urllib.request.Request(f"{self.base}/-/stats",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req) as answer:
            return json.load(answer)

    def peak_rss_mb(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            kb = int(re.search(r"VmHWM:\s+(\d+)", status.read()).group(1))
        return kb / 1024

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def git_env(home):
    env = dict(os.environ, HOME=home, GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    os.makedirs(home, exist_ok=True)
    run(["git", "config", "--global", "user.name", "bench"], env=env)
    run(["git", "config", "--global", "user.email", "bench@example.com"], env=env)
    run(["git", "config", "--global", "init.defaultBranch", "main"], env=env)
    run(["git", "lfs", "install", "--skip-repo"], env=env)
    return env


def measure(name, binary, store, extra, payload, scratch):
    server = Server(binary, store, extra)
    try:
        env = git_env(os.path.join(scratch, "home"))
        work = os.path.join(scratch, "work")
        os.makedirs(work)
        url = f"{server.auth_base}/bench.git"
        run(["git", "init", "-q"], cwd=work, env=env)
        run(["git", "lfs", "track", "*.bin"], cwd=work, env=env)
        os.link(payload, os.path.join(work, "big.bin"))
        run(["git", "add", "-A"], cwd=work, env=env)
        run(["git", "commit", "-q", "-m", "big"], cwd=work, env=env)
        run(["git", "remote", "add", "origin", url], cwd=work, env=env)
        push = timed(["git", "push", "-q", "origin", "main"], cwd=work, env=env)
        shutil.rmtree(work)
        clone_dir = os.path.join(scratch, "clone")
        clone = timed(["git", "clone", "-q", url, clone_dir], env=env)
        shutil.rmtree(clone_dir)
        stats = server.stats()
        oid = subprocess.run(["sha256sum", payload], check=True, capture_output=True,
                             text=True).stdout.split()[0]
        # Where the batch API sends git-lfs for the object: the server or the bucket.
        size = os.path.getsize(payload)
        req = urllib.request.Request(
            f"{server.base}/bench.git/info/lfs/objects/batch",
            data=json.dumps({"operation": "download",
                             "objects": [{"oid": oid, "size": size}]}).encode(),
            headers={"Authorization": f"Bearer {server.token}",
                     "Content-Type": "application/vnd.git-lfs+json",
                     "Accept": "application/vnd.git-lfs+json"})
        with urllib.request.urlopen(req) as answer:
            action = json.load(answer)["objects"][0]["actions"]["download"]
        headers = [arg for k, v in action.get("header", {}).items() for arg in ("-H", f"{k}: {v}")]
        fetched = os.path.join(scratch, "fetched")
        get = timed(["curl", "-sSf", "-o", fetched, *headers, action["href"]])
        os.remove(fetched)
        return {
            "name": name,
            "push_s": push,
            "clone_s": clone,
            "get_s": get,
            "rss_mb": server.peak_rss_mb(),
            "through_server_mb": (stats["lfs_bytes_received"] + stats["lfs_bytes_sent"]) / 2**20,
        }
    finally:
        server.stop()


def floor_fs(payload, scratch):
    stored = os.path.join(scratch, "stored")
    back = os.path.join(scratch, "back")
    put = timed(["sh", "-c", f"cat '{payload}' > '{stored}' && sync '{stored}'"])
    get = timed(["sh", "-c", f"cat '{stored}' > '{back}'"])
    return put, get


def floor_s3(payload, scratch, endpoint, bucket):
    back = os.path.join(scratch, "back")
    put = timed(s3_curl("-o", "/dev/null", "-T", payload, f"{endpoint}/{bucket}/floor"))
    get = timed(s3_curl("-o", back, f"{endpoint}/{bucket}/floor"))
    return put, get


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--only", default="fs,s3-server,s3-direct")
    parser.add_argument("--binary",
                        default=os.path.join(os.environ.get("CARGO_TARGET_DIR",
                                                            os.path.join(ROOT, "target")),
                                             "release", "stowage"))
    args = parser.parse_args()
    only = args.only.split(",")
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    top = tempfile.mkdtemp(prefix="stowage-lfs-bench.")
    try:
        payload = os.path.join(top, "payload")
        with open(payload, "wb") as out:
            for _ in range(args.mb):
                out.write(os.urandom(1 << 20))
        rows = []
        for run_number in range(args.runs):
            for name in only:
                scratch = tempfile.mkdtemp(dir=top)
                if name == "fs":
                    store_dir = os.path.join(scratch, "store")
                    os.makedirs(store_dir)
                    row = measure(name, args.binary, f"file://{store_dir}", [], payload, scratch)
                    row["floor_put_s"], row["floor_get_s"] = floor_fs(payload, store_dir)
                else:
                    bucket = f"lfs-bench-{os.getpid()}-{run_number}-{name}"
                    run(s3_curl("-o", "/dev/null", "-X", "PUT", f"{endpoint}/{bucket}"))
                    extra = ["--lfs-direct=false"] if name == "s3-server" else []
                    row = measure(name, args.binary, f"s3://{bucket}", extra, payload, scratch)
                    row["floor_put_s"], row["floor_get_s"] = floor_s3(payload, scratch,
                                                                      endpoint, bucket)
                shutil.rmtree(scratch)
                rows.append(row)
                print(f"{row['name']:10} push {row['push_s']:6.2f} s "
                      f"(floor PUT {row['floor_put_s']:6.2f} s, x{row['push_s'] / row['floor_put_s']:.2f})  "
                      f"clone {row['clone_s']:6.2f} s "
                      f"(floor GET {row['floor_get_s']:6.2f} s, x{row['clone_s'] / row['floor_get_s']:.2f})  "
                      f"download {row['get_s']:6.2f} s (x{row['get_s'] / row['floor_get_s']:.2f})  "
                      f"server peak RSS {row['rss_mb']:5.1f} MiB  "
                      f"through the server {row['through_server_mb']:.0f} MiB",
                      flush=True)
        print(json.dumps({"mb": args.mb, "rows": rows}))
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
