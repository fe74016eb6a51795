#!/usr/bin/env python3
"""Turns the JSON written by bench.py into the Markdown tables of BENCHMARKS.md.

    bench/report.py bench/results.json
"""
import json
import sys

HB = "http-backend"


def fmt_req(r):
    if not r:
        return ""
    parts = [f"{v} {k}" for k, v in sorted(r.items()) if k != "total" and v]
    return f"{r['total']} ({', '.join(parts)})" if parts else str(r["total"])


def mib(b):
    return f"{b / 2**20:.0f} MiB"


def ratio(a, b):
    return f"{a / b:.2f}" if b else "-"


def op_table(res, labels, with_bytes=True):
    names = list(res[labels[0]].keys())
    head = "| operation | server | wall (median) | wall / http-backend | server CPU (median) | CPU / http-backend |"
    sep = "|---|---|---|---|---|---|"
    if with_bytes:
        head += " bytes | bytes / http-backend |"
        sep += "---|---|"
    head += " store requests |"
    sep += "---|"
    out = [head, sep]
    for label in labels:
        hb = res[label][HB]
        for n in names:
            m = res[label][n]
            row = (f"| {label} | {n} | {m['wall']:.3f} s | {ratio(m['wall'], hb['wall'])} | "
                   f"{m['cpu']:.3f} s | {ratio(m['cpu'], hb['cpu'])} |")
            if with_bytes:
                row += f" {m['bytes']:,.0f} | {ratio(m['bytes'], hb['bytes'])} |"
            req = fmt_req(m.get("requests"))
            if m.get("requests_settled") and m["requests_settled"] != m.get("requests"):
                req += f"; with the background compaction: {fmt_req(m['requests_settled'])}"
            out.append(row + f" {req} |")
    return "\n".join(out)


def main():
    res = json.load(open(sys.argv[1]))
    p = print
    c = res["corpus"]
    p(f"Corpus: {c['commits']} commits, {c['files']} files, {c['objects']:,} objects, "
      f"{c['pack_bytes']:,} byte pack, {c['refs']} refs. {res['git']}. Runs: {res['runs']}. "
      f"Elapsed: {res['elapsed'] / 60:.1f} min.\n")
    p("### Clones\n")
    p(op_table(res, ["full clone v2", "full clone v0", "--depth 1 clone", "--filter=blob:none clone"]))
    f = res["floor"]
    p(f"\nFloor: `git index-pack --stdin --fix-thin` of the {f['pack_bytes']:,} byte pack a full clone "
      f"receives: {f['wall']:.3f} s (median of {f['runs']}).\n")
    p("| server | full clone v2 / floor | full clone v0 / floor | store requests, v2 clone from a new server |")
    p("|---|---|---|---|")
    for n, m in res["full clone v2"].items():
        cold = res.get("full clone v2, cold", {}).get(n)
        p(f"| {n} | {m['wall'] / f['wall']:.2f} | {res['full clone v0'][n]['wall'] / f['wall']:.2f} | "
          f"{fmt_req(cold['requests']) if cold else ''} |")
    p("\n### Fetch and push\n")
    p(op_table(res, ["no-op fetch", "push of 10 commits", "fetch of 10 commits"], with_bytes=False))
    p("\n| fetch | server | bytes received |\n|---|---|---|")
    for label in ["no-op fetch", "fetch of 10 commits"]:
        for n, m in res[label].items():
            p(f"| {label} | {n} | {m['bytes']:,.0f} |")
    refs = [k for k in res if k.startswith("push creating ")]
    if refs:
        count = refs[0].split()[2]
        p(f"\n### {count} refs\n")
        p(f"Each run: one push creating {count} refs (branches and tags on existing commits, so "
          "an empty pack), `git ls-remote` (protocol v2), one push deleting them. The pushes are "
          "the receive-pack requests git sends, posted by the benchmark: git's own HTTP push "
          "spends minutes of client CPU on 10,000 refs against any server.\n")
        p(op_table(res, [f"push creating {count} refs", f"ls-remote of {count} refs",
                         f"push deleting {count} refs"], with_bytes=False))
    key = [k for k in res if k.endswith("concurrent clones")][0]
    p(f"\n### {key}\n")
    p("| server | total wall (median) | wall / http-backend | server CPU | peak RSS (median) | peak RSS (max over runs) | failed clones |")
    p("|---|---|---|---|---|---|---|")
    hb = res[key][HB]
    for n, m in res[key].items():
        rss = m.get("rss_vmhwm", m["rss_sampled_sum"])
        p(f"| {n} | {m['wall']:.2f} s | {ratio(m['wall'], hb['wall'])} | {m['cpu']:.2f} s | {mib(rss)} | "
          f"{mib(m['rss_max_over_runs'])} | {m['failed']:.0f} |")
    p(f"\nhttp-backend: largest single process {mib(hb['rss_sampled_max_process'])} (median).")
    if "1000 pushes" in res:
        r = res["1000 pushes"]
        p(f"\n### {r['pushes']} sequential pushes\n")
        p("| | |\n|---|---|")
        p(f"| total time | {r['total_wall']:.1f} s |")
        p(f"| push wall, median / max | {r['push_wall_median']:.3f} s / {r['push_wall_max']:.3f} s |")
        p(f"| server CPU (pushes and compactions) | {r['server_cpu']:.1f} s |")
        p(f"| store requests | {fmt_req(r['requests'])} |")
        p(f"| live packs right after the last push | {r['live_packs_after_last_push']} |")
        p(f"| live packs once compaction is done | {r['live_packs_settled']} (`{r['fsck']}`) |")
        p(f"| full clone | {r['clone']['wall']:.3f} s, {fmt_req(r['clone']['requests'])} requests "
          f"(new server: {fmt_req(r['clone_cold']['requests'])}) |")
        p(f"| full clone after `stowage gc` (one pack) | {r['clone_one_pack']['wall']:.3f} s, "
          f"{fmt_req(r['clone_one_pack']['requests'])} requests (new server: "
          f"{fmt_req(r['clone_one_pack_cold']['requests'])}) |")
        p(f"| ratio | {r['clone_ratio']:.2f} |")
    if "big" in res:
        b = res["big"]
        p(f"\n### {b['mb']} MB push ({b['files']} files of random bytes) and its clone\n")
        p("| | wall | stowage CPU | stowage peak RSS |\n|---|---|---|---|")
        p(f"| push | {b['push_wall']:.1f} s | {b['push_cpu']:.1f} s | {mib(b['push_rss'])} |")
        p(f"| clone | {b['clone_wall']:.1f} s | {b['clone_cpu']:.1f} s | {mib(b['clone_rss'])} |")
        p(f"\nPreparing the data (writing the files, `git add`, `git commit`): {b['prepare_wall']:.0f} s.")
    targets(res)


def targets(res):
    """The targets of the benchmark, measured for stowage (fs) and, where the store's
    latency matters, for stowage with injected latency."""
    import re
    rows = []
    names = [n for n in res["full clone v2"] if n != HB]

    def check(target, value, limit, shown, lower=True):
        met = value <= limit if lower else value < limit
        miss = "" if met else f" (by {value / limit:.2f}x)" if limit else ""
        rows.append((target, shown, ("met" if met else "missed") + miss))

    for n in names:
        for label in ["full clone v2", "full clone v0"]:
            r = res[label][n]["wall"] / res[label][HB]["wall"]
            check(f"{label} wall ≤ 1.0x http-backend ({n})", r, 1.0, f"{r:.2f}x")
        for label in ["full clone v2", "full clone v0"]:
            r = res[label][n]["wall"] / res["floor"]["wall"]
            check(f"{label} wall ≤ 1.15x index-pack floor ({n})", r, 1.15, f"{r:.2f}x")
    n = names[0]
    for label in ["full clone v2", "--depth 1 clone", "--filter=blob:none clone"]:
        r = res[label][n]["cpu"] / res[label][HB]["cpu"]
        check(f"{label} server CPU ≤ 0.25x ({n})", r, 0.25, f"{r:.2f}x")
    for label in ["--depth 1 clone", "--filter=blob:none clone"]:
        r = res[label][n]["bytes"] / res[label][HB]["bytes"]
        check(f"{label} bytes ≤ 1.5x", r, 1.5, f"{r:.2f}x")
    for n in names:
        for label in ["fetch of 10 commits", "push of 10 commits"]:
            r = res[label][n]["wall"] / res[label][HB]["wall"]
            check(f"{label} wall ≤ 1.0x ({n})", r, 1.0, f"{r:.2f}x")
    n = names[0]
    v = res["no-op fetch"][n]["requests"]["total"]
    check("no-op fetch ≤ 2 store requests", v, 2, str(v))
    packs = int(re.search(r"(\d+) packs", res["packs after corpus push"][n]).group(1))
    v = res["full clone v2, cold"][n]["requests"]["total"]
    check(f"full clone ≤ 2 + 2 x live packs requests (corpus, {packs} pack, new server)", v,
          2 + 2 * packs, str(v))
    if "1000 pushes" in res:
        r = res["1000 pushes"]
        v = r["clone_cold"]["requests"]["total"]
        lp = r["live_packs_settled"]
        check(f"full clone ≤ 2 + 2 x live packs requests (after the pushes, {lp} packs, new server)",
              v, 2 + 2 * lp, str(v))
    req = res["push of 10 commits"][n]["requests_settled"]
    v = sum(req.get(k, 0) for k in ("put", "put_stream", "delete"))
    check("push ≤ 3 store writes (put, put_stream, delete)", v, 3, str(v))
    if "1000 pushes" in res:
        r = res["1000 pushes"]
        check("live packs after 1,000 pushes ≤ 12", r["live_packs_settled"], 12,
              f"{r['live_packs_settled']} ({r['live_packs_after_last_push']} right after the last push)")
        check("clone after 1,000 pushes ≤ 1.2x the one-pack repository", r["clone_ratio"], 1.2,
              f"{r['clone_ratio']:.2f}x")
    key = [k for k in res if k.endswith("concurrent clones")][0]
    for n in names:
        m = res[key][n]
        v = m["rss_max_over_runs"] / 2**20
        check(f"32 concurrent clones: server peak RSS ≤ 512 MiB ({n})", v, 512, f"{v:.0f} MiB")
        r = m["wall"] / res[key][HB]["wall"]
        check(f"32 concurrent clones: total wall ≤ http-backend ({n})", r, 1.0, f"{r:.2f}x")
    if "big" in res:
        b = res["big"]
        for what in ("push", "clone"):
            v = b[f"{what}_rss"] / 2**20
            check(f"{b['mb'] // 1024} GB {what}: stowage peak RSS < 256 MiB", v, 256, f"{v:.0f} MiB", lower=False)
    print("\n### Targets\n")
    print("| target | measured | result |\n|---|---|---|")
    for t, m, r in rows:
        print(f"| {t} | {m} | {r} |")


if __name__ == "__main__":
    main()
