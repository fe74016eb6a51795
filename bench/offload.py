#!/usr/bin/env python3
"""What offloading a clone to the bucket saves the server: bytes it sends and CPU time.

One server on an S3 store (LocalStack) run with `--packfile-uris --bundle-uri`; one
repository of `--mb` MiB of incompressible files in `--commits` commits, compacted by
`stowage gc --bundle-min-bytes 0` into one pack with its bundle, then one more commit.
Each round makes three full clones, in rotating order: plain (protocol v2), with
`fetch.uriProtocols=http,https` (packfile-uris) and with `transfer.bundleURI=true`
(bundle-uri). For each it records the upload-pack response bytes the server sent
(from /metrics) and the server's CPU time (user + system, from /proc), and the
clone's wall time.

    offload.py --store s3://bucket [--runs 5] [--mb 64] [--commits 8] [--binary PATH]

Needs the bucket and the AWS_* environment (localstack/env.sh). Prints medians and the
ratios against the plain clone, measured in the same run.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def default_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(HERE, "..", "target"))
    return os.path.join(target, "release", "stowage")


def start_server(binary, store, extra):
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--store", store, "--no-auth",
         "--no-background-compaction", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc, line.strip().removeprefix("listening on ")
    sys.exit("the server did not start")


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def sent_bytes(url):
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith('stowage_http_response_bytes_total{service="upload_pack"}'):
            return float(line.split()[-1])
    return 0.0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--mb", type=int, default=64)
    p.add_argument("--commits", type=int, default=8)
    p.add_argument("--binary", default=default_binary())
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="offload-bench-")
    server, url = start_server(args.binary, args.store,
                               ["--packfile-uris", "--bundle-uri", "--offload-min-bytes", "0"])
    try:
        repo_url = f"{url}/bench-{os.getpid()}.git"
        src = os.path.join(work, "src")
        os.makedirs(src)
        git(src, "init", "-q", "-b", "main")
        per_commit = (args.mb << 20) // args.commits
        for i in range(args.commits):
            with open(os.path.join(src, f"data{i}.bin"), "wb") as f:
                f.write(os.urandom(per_commit))
            git(src, "add", "-A")
            git(src, "commit", "-q", "-m", f"c{i}")
            git(src, "push", "-q", repo_url, "main")
        subprocess.run([args.binary, "gc", repo_url.rsplit("/", 1)[1], "--store", args.store,
                        "--bundle-min-bytes", "0"], check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(src, "after.txt"), "w") as f:
            f.write("after the bundle\n")
        git(src, "add", "-A")
        git(src, "commit", "-q", "-m", "after")
        git(src, "push", "-q", repo_url, "main")

        kinds = {
            "plain": [],
            "packfile-uris": ["-c", "fetch.uriProtocols=http,https"],
            "bundle-uri": ["-c", "transfer.bundleURI=true"],
        }
        results = {k: {"bytes": [], "cpu": [], "wall": []} for k in kinds}
        order = list(kinds)
        for run in range(args.runs):
            for kind in order[run % 3:] + order[:run % 3]:
                dest = os.path.join(work, f"{kind}-{run}")
                b0, c0, t0 = sent_bytes(url), cpu_seconds(server.pid), time.monotonic()
                git(work, "-c", "protocol.version=2", *kinds[kind], "clone", "-q",
                    "--bare", repo_url, dest)
                t1 = time.monotonic()
                time.sleep(0.2)  # the answer's last bytes are counted once it ends
                results[kind]["bytes"].append(sent_bytes(url) - b0)
                results[kind]["cpu"].append(cpu_seconds(server.pid) - c0)
                results[kind]["wall"].append(t1 - t0)
                shutil.rmtree(dest)
        base = {m: statistics.median(results["plain"][m]) for m in ("bytes", "cpu", "wall")}
        print(f"{args.mb} MiB in {args.commits} commits, {args.runs} runs, medians")
        print(f"{'clone':<15}{'server bytes':>16}{'ratio':>8}{'server CPU s':>14}"
              f"{'ratio':>8}{'wall s':>9}{'ratio':>8}")
        for kind in kinds:
            m = {k: statistics.median(v) for k, v in results[kind].items()}
            ratio = lambda k: m[k] / base[k] if base[k] else float("nan")
            print(f"{kind:<15}{m['bytes']:>16,.0f}{ratio('bytes'):>8.3f}{m['cpu']:>14.3f}"
                  f"{ratio('cpu'):>8.3f}{m['wall']:>9.2f}{ratio('wall'):>8.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
