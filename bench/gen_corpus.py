#!/usr/bin/env python3
"""Deterministic git corpus for benchmarks, written as a `git fast-import` stream.

medium (default): about 5,000 commits over 3,000 files with realistic edits (a few
files per commit, lines added, changed and removed), a few branches and tags.

    python3 bench/gen_corpus.py --commits 5000 --files 3000 | git fast-import --quiet
"""
import argparse
import random
import sys

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
         "omicron pi rho sigma tau upsilon phi chi psi omega data model train eval "
         "loss batch layer tensor shard index commit branch merge rebase object pack "
         "tree blob ref store bucket server client fetch push clone").split()


def line(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=5000)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = sys.stdout.buffer

    dirs = [f"src/mod{d:02d}/sub{s}" for d in range(40) for s in range(3)]
    paths = [f"{rng.choice(dirs)}/file{i:04d}.{rng.choice(['py', 'rs', 'md', 'txt', 'json'])}"
             for i in range(args.files)]
    files = {p: [line(rng) for _ in range(rng.randint(5, 60))] for p in paths}
    mark = 0
    time = 1_600_000_000

    def blob(lines):
        nonlocal mark
        mark += 1
        data = ("\n".join(lines) + "\n").encode()
        out.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)))
        out.write(data + b"\n")
        return mark

    def commit(ref, message, changes, parent=None):
        nonlocal mark, time
        marks = [(p, blob(files[p])) for p in changes]
        mark += 1
        time += rng.randint(60, 7200)
        msg = message.encode()
        out.write(b"commit %s\nmark :%d\n" % (ref.encode(), mark))
        out.write(b"author Bench <bench@stowage.invalid> %d +0000\n" % time)
        out.write(b"committer Bench <bench@stowage.invalid> %d +0000\n" % time)
        out.write(b"data %d\n%s\n" % (len(msg), msg))
        if parent is not None:
            out.write(b"from :%d\n" % parent)
        for p, m in marks:
            out.write(b"M 100644 :%d %s\n" % (m, p.encode()))
        out.write(b"\n")
        return mark

    head = commit("refs/heads/main", "initial import", paths)
    branch_tips = {}
    for n in range(1, args.commits):
        changed = rng.sample(paths, rng.randint(1, 5))
        for p in changed:
            body = files[p]
            op = rng.random()
            if op < 0.5:
                body.insert(rng.randint(0, len(body)), line(rng))
            elif op < 0.8 and body:
                body[rng.randrange(len(body))] = line(rng)
            elif len(body) > 3:
                del body[rng.randrange(len(body))]
            else:
                body.append(line(rng))
        if n % 500 == 250:
            name = f"refs/heads/feature/f{n}"
            branch_tips[name] = commit(name, f"feature work {n}", changed, parent=head)
            continue
        head = commit("refs/heads/main", f"change {n}: {line(rng)}", changed, parent=head)
        if n % 1000 == 0:
            tag = f"v{n // 1000}.0"
            msg = f"release {tag}".encode()
            out.write(b"tag %s\nfrom :%d\n" % (tag.encode(), head))
            out.write(b"tagger Bench <bench@stowage.invalid> %d +0000\n" % time)
            out.write(b"data %d\n%s\n" % (len(msg), msg))
    out.write(b"done\n")


if __name__ == "__main__":
    main()
