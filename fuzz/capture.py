#!/usr/bin/env python3
"""Records real git traffic as the fuzzers' seed corpus.

Runs stowage (--no-auth, a store of its own) behind a small recording proxy, drives the
real git client through it (clones in protocol v0 and v2, shallow and partial clones,
fetches, pushes with tags), and writes what it saw into fuzz/corpus/<target>/: each
request body (gunzipped), the packs inside pushes, the manifests left in the store, the
objects of the repository, and a few filter specs.

    fuzz/capture.py PATH/TO/stowage
"""
import gzip
import hashlib
import http.client
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def save(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proxy(upstream_port):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def forward(self, body):
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port)
            skip = ("host", "transfer-encoding", "content-length")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for k, v in answer.getheaders():
                if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.forward(None)

        def do_POST(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(size)
                    self.rfile.readline()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            raw = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
            save("pktline", raw)
            if self.path.endswith("git-upload-pack"):
                v2 = "version=2" in self.headers.get("Git-Protocol", "")
                save("v2_command" if v2 else "upload_pack", raw)
            elif self.path.endswith("git-receive-pack"):
                save("receive_pack", raw)
                at = raw.find(b"PACK")
                if at >= 0:
                    save("indexer", raw[at:])
            self.forward(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def git(cwd, *args):
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null",
               GIT_AUTHOR_NAME="Fuzz", GIT_AUTHOR_EMAIL="fuzz@example.com",
               GIT_COMMITTER_NAME="Fuzz", GIT_COMMITTER_EMAIL="fuzz@example.com")
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=env,
                          check=True, capture_output=True).stdout


def main():
    stowage = sys.argv[1]
    work = tempfile.mkdtemp()
    port = free_port()
    server = subprocess.Popen([stowage, "serve", "--no-auth", "--listen", f"127.0.0.1:{port}",
                               "--store", f"file://{work}/store"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        while b"listening on" not in server.stdout.readline():
            pass
        rec = proxy(port)
        url = f"http://127.0.0.1:{rec.server_address[1]}/demo.git"
        src = os.path.join(work, "src")
        os.makedirs(src)
        git(src, "init", "-q")
        for i in range(6):
            with open(os.path.join(src, f"f{i % 3}.txt"), "a") as f:
                f.write("".join(f"line {i} {j}\n" for j in range(40)))
            with open(os.path.join(src, ".gitmodules"), "w") as f:
                f.write(f'[submodule "lib"]\n\tpath = lib\n\turl = https://example.com/lib{i}\n')
            git(src, "add", "-A")
            git(src, "commit", "-q", "-m", f"commit {i}")
        git(src, "tag", "-a", "-m", "release", "v1", "HEAD~2")
        git(src, "branch", "side", "HEAD~3")
        git(src, "push", "-q", url, "main", "side", "v1")
        for args in (["-c", "protocol.version=0", "clone", "-q"],
                     ["-c", "protocol.version=2", "clone", "-q"],
                     ["clone", "-q", "--depth", "2"],
                     ["clone", "-q", "--filter=blob:none"],
                     ["clone", "-q", "--filter=combine:blob:limit=1k+tree:2"],
                     ["clone", "-q", "--shallow-exclude=side"],
                     ["-c", "protocol.version=0", "clone", "-q", "--depth", "2"],
                     ["-c", "protocol.version=0", "clone", "-q", "--filter=blob:none"]):
            dest = os.path.join(work, f"c{len(os.listdir(work))}")
            git(work, *args, url, dest)
        clone = os.path.join(work, "c-fetch")
        git(work, "clone", "-q", url, clone)
        for n, version in enumerate(("2", "0")):
            with open(os.path.join(src, "f1.txt"), "a") as f:
                f.write(f"more {n}\n")
            git(src, "commit", "-q", "-am", f"more {n}")
            git(src, "push", "-q", url, "main")
            git(clone, "-c", f"protocol.version={version}", "fetch", "-q")
        git(src, "push", "-q", url, ":side")
        for root, _, files in os.walk(os.path.join(work, "store")):
            for name in files:
                if name == "manifest":
                    with open(os.path.join(root, name), "rb") as f:
                        save("manifest", f.read())
        kinds = {"commit": 0, "tree": 1, "tag": 2, "blob": 3}
        listing = git(src, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)")
        for line in listing.decode().splitlines()[:40]:
            oid, kind = line.split()
            data = git(src, "cat-file", kind, oid)
            if kind != "blob" or data.startswith(b"[submodule"):
                save("objects", bytes([kinds[kind]]) + data)
        for spec in ("blob:none", "blob:limit=1k", "tree:0", "tree:3", "object:type=blob",
                     "combine:blob:none+tree:3", "combine:blob%3Anone+tree%3A1", "sparse:oid=main:x"):
            save("filter_spec", spec.encode())
        rec.shutdown()
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    for target in sorted(os.listdir(CORPUS)):
        print(f"{target}: {len(os.listdir(os.path.join(CORPUS, target)))} seeds")


if __name__ == "__main__":
    main()
