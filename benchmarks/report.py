"""Run the benchmarks and print a markdown report; save a bar chart PNG; compare and track runs.

Usage (from the repository root)::

    python benchmarks/report.py                      # everything, full pytest-benchmark rounds
    python benchmarks/report.py --quick              # fewer rounds: a few minutes
    python benchmarks/report.py --cases seed4layer,medium --out benchmarks/out
    python benchmarks/report.py --json benchmarks/out/benchmarks.json   # re-render, no run

Tracking (``benchmarks/tracking.py``; runs saved by ``pytest benchmarks --benchmark-only
--benchmark-autosave`` into ``.benchmarks/``; a run is a path, a run id such as ``0003``, or
``latest``; a history entry's path is accepted as a run)::

    python benchmarks/report.py --compare 0001 0002            # ratios side by side, changes flagged
    python benchmarks/report.py --compare benchmarks/history/NAME.json latest --fail-if-slower
    python benchmarks/report.py --record-history NAME [--runs RUN ...] [--note TEXT]
    python benchmarks/report.py --history [--out PNG] [--peer numpy]
    python benchmarks/report.py --measure-spread RUN RUN RUN ... --note "how they were made"

It runs ``pytest benchmarks --benchmark-only --benchmark-json=OUT/benchmarks.json`` and prints:
per case, the median time per objective call with the speed-up against the NumPy backend and
against scikit-learn; the end-to-end fits; the extra memory of one call; the first-call
latency; and any other benchmark groups as plain tables. The markdown also goes to
``OUT/report.md`` and the chart to ``OUT/benchmarks.png`` (``benchmarks/out/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASE_ORDER = ("seed4layer", "multiclass", "medium", "large")

sys.path.insert(0, HERE)
import tracking  # noqa: E402


def run_benchmarks(json_path, cases=None, quick=False, extra=()):
    cmd = [sys.executable, "-m", "pytest", os.path.relpath(HERE, ROOT), "--benchmark-only",
           f"--benchmark-json={json_path}", "-q", "-p", "no:cacheprovider"]
    if cases:
        cmd.append(f"--bench-cases={cases}")
    if quick:
        cmd += ["--benchmark-max-time=0.25", "--benchmark-min-rounds=3", "--benchmark-min-time=0.00005"]
    cmd += list(extra)
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode not in (0, 5) or not os.path.exists(json_path):
        sys.exit(f"benchmarks failed (pytest exit code {proc.returncode})")


def _fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _ratio(base, t):
    return f"{base / t:.2f}×" if base and t else "–"


def _label(b):
    info = b.get("extra_info", {})
    impl = info.get("impl", b["name"])
    return f"{impl} (float32)" if info.get("dtype") == "float32" else impl


def _chart_label(b):
    blas = b.get("extra_info", {}).get("blas_threads")
    return _label(b) + (f", {blas} BLAS thread" if blas not in (None, "default") else "")


def objective_tables(groups):
    """Per case: median per call, vs numpy (float64) and vs scikit-learn."""
    out = []
    for case in [c for c in CASE_ORDER if c in groups] + sorted(
        g for g in groups if g not in CASE_ORDER and not g.startswith(("fit:", "estimator fit:", "memory", "latency"))
        and all("impl" in b.get("extra_info", {}) for b in groups[g])
    ):
        rows = groups.pop(case)
        med = {_label(b): b["stats"]["median"] for b in rows}
        info = rows[0].get("extra_info", {})
        shape = f" — n = {info['n_samples']:,}, {info['layer_sizes']}" if "n_samples" in info else ""
        out.append(f"### {case}{shape}\n")
        out.append("| implementation | median per call | vs numpy | vs scikit-learn |")
        out.append("|---|---:|---:|---:|")
        for label, t in sorted(med.items(), key=lambda kv: kv[1]):
            vs_numpy, vs_sklearn = _ratio(med.get("numpy"), t), _ratio(med.get("sklearn"), t)
            out.append(f"| {label} | {_fmt_time(t)} | {vs_numpy} | {vs_sklearn} |")
        out.append("")
    return out


def fit_tables(groups):
    names = sorted(g for g in groups if g.startswith("fit:"))
    if not names:
        return []
    out = ["### End-to-end fit: 50 L-BFGS-B iterations from the same W0\n",
           "| case | BLAS threads | implementation | median | vs scikit-learn | iterations | final loss |",
           "|---|---|---|---:|---:|---:|---:|"]
    for g in sorted(names, key=lambda g: CASE_ORDER.index(g[5:]) if g[5:] in CASE_ORDER else 99):
        by_blas = defaultdict(list)
        for b in groups.pop(g):
            by_blas[str(b["extra_info"].get("blas_threads", "default"))].append(b)
        for blas, rows in sorted(by_blas.items(), key=lambda kv: kv[0] != "default"):
            sk = next((b["stats"]["median"] for b in rows if _label(b) == "sklearn"), None)
            for b in sorted(rows, key=lambda b: b["stats"]["median"]):
                info = b["extra_info"]
                out.append(f"| {g[5:]} | {blas} | {_label(b)} | {_fmt_time(b['stats']['median'])} | "
                           f"{_ratio(sk, b['stats']['median'])} | {info.get('n_iter', '')} | "
                           f"{info.get('final_loss', float('nan')):.6g} |")
    out.append("")
    return out


def memory_tables(groups):
    names = [g for g in groups if g.startswith("memory")]
    out = []
    for g in names:
        rows = groups.pop(g)
        table = defaultdict(dict)
        ns = sorted({b["extra_info"]["n_samples"] for b in rows})
        for b in rows:
            table[b["extra_info"]["impl"]][b["extra_info"]["n_samples"]] = b["extra_info"]
        out.append(f"### Extra memory of one call beyond X, y, W ({g.split(':', 1)[1].strip()}; peak RSS)\n")
        out.append("| backend | " + " | ".join(f"n = {n:,}" for n in ns) + " |")
        out.append("|---|" + "---:|" * len(ns))
        for impl, row in table.items():
            out.append(f"| {impl} | " + " | ".join(f"{row[n]['extra_mib']:.1f} MiB" if n in row else "–"
                                                  for n in ns) + " |")
        data = {n: next(b["extra_info"]["data_mib"] for b in rows if b["extra_info"]["n_samples"] == n) for n in ns}
        out.append("| *(X, y, W themselves)* | " + " | ".join(f"*{data[n]:.1f} MiB*" for n in ns) + " |")
        out.append("")
    return out


def latency_tables(groups):
    names = [g for g in groups if g.startswith("latency")]
    out = []
    for g in names:
        rows = groups.pop(g)
        out.append(f"### First-call latency ({g.split(':', 1)[1].strip()})\n")
        out.append("| backend | Numba cache | import fastbp | first call | second call | import + first call |")
        out.append("|---|---|---:|---:|---:|---:|")
        for b in rows:
            i = b["extra_info"]
            out.append(f"| {i['impl']} | {i['mode']} | {_fmt_time(i['import_s'])} | {_fmt_time(i['first_call_s'])} | "
                       f"{_fmt_time(i['second_call_s'])} | {_fmt_time(i['total_s'])} |")
        out.append("")
    return out


def other_tables(groups):
    out = []
    for g in sorted(groups, key=str):
        out.append(f"### {g}\n")
        out.append("| benchmark | median | extra |")
        out.append("|---|---:|---|")
        for b in sorted(groups[g], key=lambda b: b["stats"]["median"]):
            extra = ", ".join(f"{k}={v}" for k, v in b.get("extra_info", {}).items())
            out.append(f"| {b['name']} | {_fmt_time(b['stats']['median'])} | {extra} |")
        out.append("")
    return out


def chart(data, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"]].append(b)
    panels = [c for c in CASE_ORDER if c in groups] + sorted(g for g in groups if g and g.startswith("fit:"))
    if not panels:
        return None
    ncol = min(2, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.5 * ncol, 2.8 * nrow), squeeze=False)
    for ax, g in zip(axes.flat, panels):
        rows = sorted(groups[g], key=lambda b: b["stats"]["median"], reverse=True)
        labels = [_chart_label(b) for b in rows]
        times = [b["stats"]["median"] * 1e3 for b in rows]
        colors = ["#888888" if _label(b) in ("sklearn", "torch", "jax") else "#1f77b4" for b in rows]
        ax.barh(labels, times, color=colors)
        ax.set_xscale("log")
        ax.set_title(g if g.startswith("fit:") else f"objective call: {g}")
        ax.set_xlabel("median time [ms], log scale")
        for y, t in enumerate(times):
            ax.text(t, y, f" {t:.3g}", va="center", fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("fastbp backends (blue) and peers (grey)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def render(data):
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"] or "(no group)"].append(b)
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {}).get("brand_raw", platform.processor() or "?")
    lines = ["## fastbp benchmarks\n",
             f"Machine: {cpu}, {os.cpu_count()} logical CPUs, Python {mi.get('python_version', '?')}; "
             f"{data.get('datetime', '')}. Medians of pytest-benchmark rounds.\n"]
    lines += objective_tables(groups)
    lines += fit_tables(groups)
    lines += memory_tables(groups)
    lines += latency_tables(groups)
    lines += other_tables(groups)
    return "\n".join(lines)


def track(args):
    """The tracking commands (--compare, --record-history, --history, --measure-spread)."""
    if args.compare:
        old, new = (tracking.load(spec, args.storage) for spec in args.compare)
        spread = tracking.load_spread(args.spread)
        result = tracking.compare(old, new, spread)
        if args.peer:
            result["ratios"] = [r for r in result["ratios"] if r["peer"] == args.peer]
        print(tracking.format_comparison(old, new, result, spread, os.path.relpath(args.spread)))
        slower = [r for r in result["ratios"] if r["flag"] == "slower"]
        return 1 if args.fail_if_slower and slower else 0
    if args.record_history:
        runs = [tracking.load(spec, args.storage) for spec in args.runs]
        entry = tracking.history_entry(args.record_history, runs, note=args.note)
        path = tracking.write_history_entry(entry, args.history_dir, overwrite=args.force)
        print(f"wrote {os.path.relpath(path)}: {len(entry['benchmarks'])} benchmarks from "
              f"{', '.join(entry['sources'])}; {tracking.describe_machine(entry['machine'])}")
        return 0
    if args.measure_spread:
        if not args.note:
            sys.exit("--measure-spread needs --note: say how the runs were made (machine load, command)")
        runs = [tracking.load(spec, args.storage) for spec in args.measure_spread]
        for r in runs[1:]:
            same, why = tracking.same_machine(runs[0]["machine"], r["machine"])
            if not same:
                sys.exit(f"--measure-spread: {r['source']} is not from the machine of {runs[0]['source']}: {why}")
        spread = tracking.measure_spread(runs, how=args.note)
        tracking.write_spread(spread, args.spread)
        print(f"wrote {os.path.relpath(args.spread)} from {len(runs)} runs: default spread "
              f"{100 * spread['default']['ratio']:.0f} % (ratios), {100 * spread['default']['median']:.0f} % (medians)")
        return 0
    if args.history:
        entries = tracking.load_history(args.history_dir)
        if not entries:
            sys.exit(f"no history entries in {args.history_dir}")
        png = args.out if args.out.endswith(".png") else os.path.join(args.out, "history.png")
        peer = args.peer or "sklearn"
        for e in entries:
            print(f"{e['name']}: {e.get('date')}, commit {(e.get('commit') or '?')[:10]}, "
                  f"{tracking.describe_machine(e.get('machine'))}")
        tracking.plot_history(entries, png, peer=peer)
        print(f"chart: {os.path.relpath(png)} (speed-up vs {peer})")
        return 0
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", help="comma-separated cases (default: all four)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds per benchmark")
    parser.add_argument("--out", default=os.path.join(HERE, "out"),
                        help="output folder (default benchmarks/out); with --history, a folder or a .png path")
    parser.add_argument("--json", help="render this pytest-benchmark JSON instead of running the benchmarks")
    tr = parser.add_argument_group("tracking (no benchmarks are run)")
    tr.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                    help="compare two saved runs or history entries: ratios always, medians on the same machine")
    tr.add_argument("--fail-if-slower", action="store_true",
                    help="with --compare: exit 1 if a ratio dropped by more than the spread")
    tr.add_argument("--peer", help="only ratios to this peer (--compare); the peer drawn (--history; default sklearn)")
    tr.add_argument("--record-history", metavar="NAME", help="write benchmarks/history/NAME.json from --runs")
    tr.add_argument("--runs", nargs="+", default=["latest"], metavar="RUN",
                    help="the saved run(s) --record-history takes (default: latest)")
    tr.add_argument("--note", help="a note kept with --record-history / --measure-spread")
    tr.add_argument("--force", action="store_true", help="let --record-history replace an entry")
    tr.add_argument("--history", action="store_true", help="draw the ratios over the history entries as a PNG")
    tr.add_argument("--measure-spread", nargs="+", metavar="RUN",
                    help="write the run-to-run spread of these runs (same code, same machine) to --spread")
    tr.add_argument("--spread", default=tracking.SPREAD_FILE, help="the spread file (default %(default)s)")
    tr.add_argument("--storage", default=tracking.STORAGE, help="pytest-benchmark's storage (default %(default)s)")
    tr.add_argument("--history-dir", default=tracking.HISTORY_DIR, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    if args.compare or args.record_history or args.history or args.measure_spread:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        try:
            return track(args)
        except (ValueError, FileExistsError) as exc:
            sys.exit(f"report.py: {exc}")
    os.makedirs(args.out, exist_ok=True)
    json_path = args.json or os.path.join(args.out, "benchmarks.json")
    if not args.json:
        run_benchmarks(json_path, cases=args.cases, quick=args.quick, extra=extra)
    with open(json_path) as fh:
        data = json.load(fh)
    text = render(data)
    print(text)
    with open(os.path.join(args.out, "report.md"), "w") as fh:
        fh.write(text + "\n")
    png = chart(data, os.path.join(args.out, "benchmarks.png"))
    if png:
        print(f"\nchart: {os.path.relpath(png)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
