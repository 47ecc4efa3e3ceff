"""Performance tracking: machine summaries, speed-up ratios, run comparison and the milestone history.

Absolute times move 3x between machines; a kernel's speed-up over scikit-learn (or the NumPy
backend, or JAX) measured in the same run travels much better. This module turns
pytest-benchmark's saved runs into those figures and compares them:

* :func:`machine_summary` describes the machine a run was made on (CPU model and vector
  extensions, cores, the BLAS libraries NumPy and SciPy load with their kernel and thread count,
  package versions, fastbp's git commit). ``benchmarks/conftest.py`` adds it to every saved run as
  ``machine_info["summary"]``; :func:`same_machine` decides from two summaries whether absolute
  times compare.
* :func:`add_ratios` fills ``extra_info["ratio"]`` of every benchmark that asks for ratios (see
  ``benchmarks/conftest.py`` for the convention: ``group``, ``extra_info["impl"]``, optional
  ``extra_info["variant"]``, ``extra_info["ratio_to"]``).
* :func:`compare` and :func:`format_comparison` set two runs side by side, flagging changes larger
  than the run-to-run spread that :func:`measure_spread` measured (stored in
  ``benchmarks/history/spread.json``).
* :func:`history_entry`, :func:`write_history_entry`, :func:`load_history` and
  :func:`plot_history` keep one compact JSON per milestone in ``benchmarks/history/``.

Runs are read as pytest-benchmark writes them (``--benchmark-autosave``, ``--benchmark-json``);
history entries can stand in for a run wherever one is compared. No pytest in here:
``benchmarks/report.py`` is the command line.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: where ``pyproject.toml`` tells pytest-benchmark to keep runs (relative to the repository root)
STORAGE = os.path.join(ROOT, ".benchmarks")
HISTORY_DIR = os.path.join(HERE, "history")
SPREAD_FILE = os.path.join(HISTORY_DIR, "spread.json")

HISTORY_FORMAT = "fastbp-benchmark-history/1"
SPREAD_FORMAT = "fastbp-benchmark-spread/1"

#: the extra_info keys of the ratio convention (documented in benchmarks/conftest.py)
IMPL, VARIANT, RATIO_TO, RATIO = "impl", "variant", "ratio_to", "ratio"

VERSIONED_PACKAGES = ("numpy", "scipy", "numba", "Cython", "scikit-learn", "threadpoolctl", "jax", "torch")
#: the summary fields that describe the run rather than the machine (they differ between runs by design)
PER_RUN_FIELDS = ("fastbp", "load_average")
#: the summary fields that make two machines "the same" for absolute times (see same_machine)
MACHINE_FIELDS = ("cpu", "logical_cpus", "usable_cpus", "vector_extensions", "system", "blas")
#: for benchmarks the spread measurement did not include: a typical benchmark's spread (the median
#: over those measured; a few peers' times under load spread by 100x and would dominate any upper quantile)
DEFAULT_SPREAD_QUANTILE = 0.5


# ---------------------------------------------------------------------------------- machine


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or None


def _vector_extensions():
    """The SIMD extensions NumPy's run-time dispatch found (its ``__cpu_features__``)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return None
    return sorted(name for name, present in features.items() if present)


# Run in a fresh interpreter, so that the libraries found are NumPy's and SciPy's only, whatever
# else (torch, jax) the benchmark session happened to load; the environment's thread settings
# (OPENBLAS_NUM_THREADS and the like) are inherited, so they show.
_BLAS_PROBE = r"""
import json, numpy, scipy.linalg, threadpoolctl
print(json.dumps([i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]))
"""


def _owner(filepath):
    """Which package ships a BLAS library: ``numpy``, ``scipy`` or the file's name."""
    parts = re.split(r"[\\/]", filepath or "")
    for part in reversed(parts[:-1]):
        name = part.split(".")[0].split("-")[0].lower()
        if name in ("numpy", "scipy"):
            return name
    return parts[-1] if parts else "?"


def _blas():
    try:
        out = subprocess.run([sys.executable, "-c", _BLAS_PROBE], capture_output=True, text=True, timeout=120)
        infos = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        infos = None
    if infos is None:
        return None
    return sorted(
        ({"for": _owner(i.get("filepath")), "library": i.get("internal_api"), "version": i.get("version"),
          "kernel": i.get("architecture"), "threading": i.get("threading_layer"), "threads": i.get("num_threads")}
         for i in infos),
        key=lambda b: (b["for"], b["library"] or ""),
    )


def _versions():
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _git(*args, cwd):
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise OSError(out.stderr.strip())
    return out.stdout.strip()


def _fastbp():
    """fastbp's version, backends and the git commit of the checkout it is imported from."""
    try:
        import fastbp
    except ImportError:
        return None
    info = {"version": getattr(fastbp, "__version__", None), "backends": list(fastbp.available_backends())}
    where = os.path.dirname(os.path.abspath(fastbp.__file__))
    try:
        info["commit"] = _git("rev-parse", "HEAD", cwd=where)
        info["dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=where))
    except (OSError, subprocess.SubprocessError):
        info["commit"] = info["dirty"] = None
    return info


def machine_summary():
    """What a run's speed depends on, as a JSON-able dict.

    ``cpu`` (model name), ``logical_cpus`` and ``usable_cpus`` (this process's affinity),
    ``vector_extensions`` (NumPy's run-time dispatch view of the CPU), ``system``, ``blas`` (one
    entry per BLAS library NumPy and SciPy load: library, version, the kernel it chose for this
    CPU, threading layer and thread count, from threadpoolctl in a fresh interpreter),
    ``versions`` (Python and the peer packages), ``fastbp`` (version, available backends, git
    commit and whether the checkout had uncommitted changes), ``load_average`` (the OS's 1, 5 and
    15 minute load averages when the run was saved: other work on the machine moves every figure,
    ratios included). A field that cannot be found is ``None``; this never raises.
    """
    def attempt(fn):
        try:
            return fn()
        except Exception:  # a summary is documentation: a missing field must not fail the run
            return None

    usable = attempt(lambda: len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = attempt(lambda: [round(x, 2) for x in os.getloadavg()])
    return {
        "cpu": attempt(_cpu_model),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "vector_extensions": attempt(_vector_extensions),
        "system": f"{platform.system()} {platform.machine()}",
        "blas": attempt(_blas),
        "versions": attempt(_versions),
        "fastbp": attempt(_fastbp),
        "load_average": load,
    }


def machine_identity(summary):
    """The fields of a summary that decide whether absolute times compare, or ``None`` if any is
    unknown. BLAS libraries count by kind, kernel and threads, not by version or path."""
    if not summary:
        return None
    ident = {}
    for field in MACHINE_FIELDS:
        value = summary.get(field)
        if value is None:
            return None
        if field == "blas":
            value = sorted((str(b.get("library")), str(b.get("kernel")), str(b.get("threads"))) for b in value)
        elif field == "vector_extensions":
            value = sorted(value)
        ident[field] = value
    return ident


def same_machine(a, b):
    """``(same, why)``: whether two machine summaries describe the same machine for timing purposes.

    The same: equal CPU model, logical and usable CPU counts, vector extensions, OS and architecture,
    and BLAS libraries with the same kernel and thread count. The host name, package versions and
    the fastbp commit do not count (they are what a comparison looks at). A summary with any of
    those fields unknown (an old run, a transcribed table) is never the same machine.
    """
    ia, ib = machine_identity(a), machine_identity(b)
    if ia is None or ib is None:
        return False, "machine summary incomplete in " + ("both runs" if ia is None and ib is None
                                                          else "the old run" if ia is None else "the new run")
    diffs = [f"{f}: {ia[f]!r} vs {ib[f]!r}" for f in MACHINE_FIELDS if ia[f] != ib[f]]
    return (not diffs), ("same " + describe_machine(a)) if not diffs else "; ".join(diffs)


def busy_note(summary):
    """A warning if the machine was busy when the run was saved (5-minute load average above half
    its usable CPUs), else ``None``."""
    load, cpus = (summary or {}).get("load_average"), (summary or {}).get("usable_cpus")
    if not load or not cpus or load[1] <= 0.5 * cpus:
        return None
    return (f"5-minute load average {load[1]:g} on {cpus} CPUs: a busy machine, whose figures (ratios "
            f"included: threaded kernels suffer more than single-threaded peers) are not representative")


def describe_machine(summary):
    """One line: CPU, CPUs, widest vector extension, BLAS kernel and threads."""
    if not summary:
        return "unknown machine"
    ext = summary.get("vector_extensions") or []
    widest = next((e for e in ("AVX512F", "AVX2", "AVX", "SVE", "ASIMD", "NEON", "SSE42") if e in ext), None)
    blas = summary.get("blas") or []
    kinds = sorted({f"{b.get('library')} {b.get('kernel')} x{b.get('threads')}" for b in blas})
    cpus = summary.get("logical_cpus")
    parts = [summary.get("cpu") or "?", f"{cpus} CPUs" if cpus else None,
             widest.replace("AVX512F", "AVX-512") if widest else None, ", ".join(kinds) or None]
    return ", ".join(p for p in parts if p)


# ----------------------------------------------------------------------------------- ratios


def _sig(x, digits=4):
    return float(f"{x:.{digits}g}")


def add_ratios(benchmarks):
    """Fill ``extra_info["ratio"]`` of each benchmark dict that has ``extra_info["ratio_to"]``.

    ``ratio[peer] = median(peer) / median(benchmark)`` (above 1: faster than the peer), where the
    peer is the benchmark of the same ``group`` whose ``extra_info["impl"]`` is ``peer`` and whose
    ``extra_info["variant"]`` is the same as this one's, or else has none. A peer that did not run
    (``-k``, not installed, failed) leaves its ratio out; so does a peer that two benchmarks could
    be. ``benchmarks`` are pytest-benchmark's JSON dicts (with ``stats``); each gets a new
    ``extra_info`` dict (pytest-benchmark shares the old one with the running fixture).

    Returns a list of problems (ambiguous peers) for the caller to report.
    """
    by_role = defaultdict(list)
    for b in benchmarks:
        info = b.get("extra_info") or {}
        if IMPL in info:
            by_role[(b.get("group"), info[IMPL], info.get(VARIANT))].append(b)
    problems = []
    for b in benchmarks:
        info = b.get("extra_info") or {}
        if not info.get(RATIO_TO):
            continue
        ratios = {}
        own = _median(b)
        for peer in info[RATIO_TO]:
            for variant in dict.fromkeys((info.get(VARIANT), None)):  # own variant first, then none
                found = [c for c in by_role.get((b.get("group"), peer, variant), ()) if c is not b]
                if len(found) > 1:
                    problems.append(f"{b.get('fullname')}: {len(found)} benchmarks in group {b.get('group')!r} "
                                    f"are impl={peer!r}, variant={variant!r}; no ratio to {peer}")
                    break
                if found:
                    theirs = _median(found[0])
                    if own and theirs:
                        ratios[peer] = _sig(theirs / own)
                    break
        b["extra_info"] = {**info, RATIO: ratios}
    return problems


def _median(b):
    stats = b.get("stats", b)
    m = stats.get("median") if isinstance(stats, dict) else None
    return m if isinstance(m, (int, float)) and m > 0 and math.isfinite(m) else None


# ------------------------------------------------------------------------------ loading runs


def list_runs(storage=STORAGE):
    """Saved runs in pytest-benchmark's storage, oldest first (by file time)."""
    files = glob.glob(os.path.join(storage, "*", "*.json")) + glob.glob(os.path.join(storage, "*.json"))
    return sorted(files, key=lambda p: (os.path.getmtime(p), p))


def find_run(spec, storage=STORAGE):
    """The file a run spec names: an existing path, ``latest``, or a pytest-benchmark run id
    (``0003``, ``0003_...``, ``<machine-id>/0003``) in ``storage``."""
    if os.path.isfile(spec):
        return spec
    if spec == "latest":
        runs = list_runs(storage)
        if not runs:
            raise ValueError(f"no saved runs in {storage} (run pytest with --benchmark-autosave)")
        return runs[-1]
    if "/" in spec:
        matches = glob.glob(os.path.join(storage, spec + "*.json"))
    else:
        matches = glob.glob(os.path.join(storage, "*", spec + "*.json")) + glob.glob(
            os.path.join(storage, spec + "*.json"))
    matches = sorted(set(matches))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(f"run {spec!r}: no such file, and no saved run of that id in {storage}")
    shown = ", ".join(os.path.relpath(m, storage) for m in matches)
    raise ValueError(f"run {spec!r} is ambiguous in {storage}: {shown}")


def load(spec, storage=STORAGE):
    """A run or history entry as a compact record (see :func:`compact_run`)."""
    path = find_run(spec, storage)
    with open(path) as fh:
        data = json.load(fh)
    record = compact_run(data, source=_short(path, storage))
    record.setdefault("source", _short(path, storage))
    return record


def _short(path, storage):
    """A run file as ``<machine-id>/<file>`` inside the storage, else relative to the current folder."""
    path, storage = os.path.abspath(path), os.path.abspath(storage)
    if path.startswith(storage + os.sep):
        return os.path.relpath(path, storage)
    return os.path.relpath(path)


def compact_run(data, source=None):
    """The figures a comparison and the history need from a pytest-benchmark JSON.

    ``{"format", "source", "date", "commit", "dirty", "machine", "benchmarks"}`` where
    ``benchmarks`` maps each benchmark's full name to ``{"group", "impl", "variant", "median",
    "ratio"}`` (``median`` in seconds; ``ratio`` as :func:`add_ratios` computes it, recomputed if the
    run was saved without it). A history entry is returned as it is.
    """
    if data.get("format") == HISTORY_FORMAT:
        return data
    benches = [dict(b) for b in data.get("benchmarks", [])]
    if any(RATIO_TO in (b.get("extra_info") or {}) and RATIO not in b["extra_info"] for b in benches):
        add_ratios(benches)
    mi = data.get("machine_info") or {}
    summary = mi.get("summary")
    if summary is None:  # a run saved without the hook: what pytest-benchmark itself recorded
        cpu = mi.get("cpu") or {}
        summary = {"cpu": cpu.get("brand_raw"), "logical_cpus": cpu.get("count"),
                   "system": f"{mi.get('system', '?')} {mi.get('machine', '?')}"}
    fb = summary.get("fastbp") or {}
    commit, dirty = fb.get("commit"), fb.get("dirty")
    if commit is None:
        ci = data.get("commit_info") or {}
        commit, dirty = ci.get("id"), ci.get("dirty")
    out = {}
    for b in benches:
        info = b.get("extra_info") or {}
        out[b["fullname"]] = {"group": b.get("group"), "impl": info.get(IMPL), "variant": info.get(VARIANT),
                              "median": _median(b), "ratio": info.get(RATIO) or {}}
    return {"format": "run", "source": source, "date": data.get("datetime"), "commit": commit, "dirty": dirty,
            "machine": summary, "benchmarks": out}


# --------------------------------------------------------------------------------- spread


def _fold(a, b):
    """How many times larger the larger of two positive numbers is, minus one: 0.1 = 10 % apart."""
    return max(a, b) / min(a, b) - 1.0


def _quantile(values, q):
    values = sorted(values)
    if not values:
        return None
    pos = q * (len(values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def measure_spread(runs, how):
    """The run-to-run spread of repeated runs of the same code on one machine.

    For every benchmark (and every ratio of it) present in at least two of ``runs`` (compact
    records), the spread is the largest over the smallest value across the runs, minus one: 0.12
    means the runs were up to 12 % apart. ``default`` holds the median over benchmarks (of
    medians, of ratios), for benchmarks the measurement did not include. ``how`` says how the runs
    were made.
    """
    medians, ratios = defaultdict(list), defaultdict(lambda: defaultdict(list))
    for run in runs:
        for name, b in run["benchmarks"].items():
            if b.get("median"):
                medians[name].append(b["median"])
            for peer, r in (b.get("ratio") or {}).items():
                ratios[name][peer].append(r)
    median_spread = {n: _round_up(_fold(min(v), max(v))) for n, v in sorted(medians.items()) if len(v) > 1}
    ratio_spread = {}
    for name in sorted(ratios):
        peers = {p: _round_up(_fold(min(v), max(v))) for p, v in sorted(ratios[name].items()) if len(v) > 1}
        if peers:
            ratio_spread[name] = peers
    all_ratio = [s for peers in ratio_spread.values() for s in peers.values()]
    return {
        "format": SPREAD_FORMAT,
        "how": how,
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": [{"source": r.get("source"), "date": r.get("date"), "commit": r.get("commit")} for r in runs],
        "machine": runs[0].get("machine") if runs else None,
        "default": {"median": _round(_quantile(list(median_spread.values()), DEFAULT_SPREAD_QUANTILE)),
                    "ratio": _round(_quantile(all_ratio, DEFAULT_SPREAD_QUANTILE))},
        "median": median_spread,
        "ratio": ratio_spread,
    }


def _round(x, digits=4):
    return None if x is None else round(x, digits)


def _round_up(x, digits=4):
    """Rounded up, so that the runs a spread was measured on never flag each other."""
    return math.ceil(x * 10**digits - 1e-6) / 10**digits  # (- 1e-6: not up from 0.1000000000000001)


def write_spread(spread, path=SPREAD_FILE):
    """Write what :func:`measure_spread` returned (one line per benchmark)."""
    with open(path, "w") as fh:
        fh.write(dumps_by_line(spread) + "\n")
    return path


def load_spread(path=SPREAD_FILE):
    """The spread file, or ``None`` if there is none."""
    if not path or not os.path.exists(path):
        return None
    with open(path) as fh:
        data = json.load(fh)
    if data.get("format") != SPREAD_FORMAT:
        raise ValueError(f"{path} is not a spread file (format {data.get('format')!r})")
    return data


def spread_of(spread, name, peer=None):
    """The spread of a benchmark's median (``peer=None``) or of its ratio to ``peer``; the file's
    default where it has none; ``None`` without a spread file."""
    if not spread:
        return None
    if peer is None:
        value = spread.get("median", {}).get(name)
        return value if value is not None else spread.get("default", {}).get("median")
    value = spread.get("ratio", {}).get(name, {}).get(peer)
    return value if value is not None else spread.get("default", {}).get("ratio")


# -------------------------------------------------------------------------------- compare


def compare(old, new, spread=None):
    """Two compact records side by side.

    Returns ``{"same_machine", "machine_note", "ratios", "medians", "only_old", "only_new"}``.
    ``ratios`` has a row per benchmark and peer both runs have a ratio for: ``old``, ``new``,
    ``change`` (new / old - 1), ``spread`` and ``flag`` (``"faster"`` or ``"slower"`` relative to
    the peer when the change exceeds the spread in either direction, else ``None``). ``medians``
    has a row per benchmark both runs timed, only when both come from the same machine
    (:func:`same_machine`); its ``flag`` reads the other way round (a larger time is slower).
    """
    same, note = same_machine(old.get("machine"), new.get("machine"))
    ob, nb = old["benchmarks"], new["benchmarks"]
    common = [n for n in nb if n in ob]
    ratios, medians = [], []
    for name in sorted(common, key=lambda n: _sort_key(nb[n], n)):
        o, n = ob[name], nb[name]
        for peer in sorted(set(o.get("ratio") or {}) & set(n.get("ratio") or {}), key=_peer_order):
            r_old, r_new = o["ratio"][peer], n["ratio"][peer]
            s = spread_of(spread, name, peer)
            flagged = _beyond(_fold(r_old, r_new), s)
            ratios.append({"name": name, "group": n.get("group"), "label": _label(n, name), "peer": peer,
                           "old": r_old, "new": r_new, "change": r_new / r_old - 1.0, "spread": s,
                           "flag": ("faster" if r_new > r_old else "slower") if flagged else None})
        if same and o.get("median") and n.get("median"):
            s = spread_of(spread, name)
            flagged = _beyond(_fold(o["median"], n["median"]), s)
            medians.append({"name": name, "group": n.get("group"), "label": _label(n, name),
                            "old": o["median"], "new": n["median"], "change": n["median"] / o["median"] - 1.0,
                            "spread": s,
                            "flag": ("slower" if n["median"] > o["median"] else "faster") if flagged else None})
    return {"same_machine": same, "machine_note": note, "ratios": ratios, "medians": medians,
            "only_old": sorted(set(ob) - set(nb)), "only_new": sorted(set(nb) - set(ob))}


def _beyond(fold, spread):
    """Whether two values ``fold`` apart are further apart than ``spread`` (stored to 4 decimals,
    rounded up; the 1e-6 lets two of the runs it was measured on sit exactly on it)."""
    return spread is not None and fold > spread + 1e-6


CASE_ORDER = ("seed4layer", "multiclass", "medium", "large")
PEER_ORDER = ("sklearn", "numpy", "jax", "torch")


def _peer_order(peer):
    return (PEER_ORDER.index(peer) if peer in PEER_ORDER else len(PEER_ORDER), peer)


def _group_order(group):
    group = group or ""
    case = group.split(":", 1)[-1].strip()
    return (":" in group, group.split(":", 1)[0] if ":" in group else "",
            CASE_ORDER.index(case) if case in CASE_ORDER else len(CASE_ORDER), group)


def _sort_key(b, name):
    return (_group_order(b.get("group")), b.get("variant") or "", b.get("impl") or "", name)


def _label(b, name):
    if b.get("impl") is None:
        return name.rsplit("::", 1)[-1]
    return b["impl"] + (f" [{b['variant']}]" if b.get("variant") else "")


def _fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _describe_run(run):
    commit = (run.get("commit") or "?")[:10] + (" (uncommitted changes)" if run.get("dirty") else "")
    return f"{run.get('source') or run.get('name') or '?'}: commit {commit}, {run.get('date') or '?'}, " \
           f"{describe_machine(run.get('machine'))}"


def format_comparison(old, new, result, spread=None, spread_source=None):
    """The comparison as markdown text."""
    lines = [f"old — {_describe_run(old)}", f"new — {_describe_run(new)}", ""]
    for which, run in (("old", old), ("new", new)):
        note = busy_note(run.get("machine"))
        if note:
            lines.append(f"Warning: the {which} run was saved at a {note}.")
    if result["same_machine"]:
        lines.append(f"Machines: the same ({result['machine_note'][5:]}): absolute medians are compared too.")
    else:
        lines.append(f"Machines: not the same ({result['machine_note']}): only the ratios compare.")
    if spread:
        default = spread.get("default", {})
        lines.append(f"Spread: {spread_source or 'spread file'}, {len(spread.get('runs', []))} runs measured "
                     f"{spread.get('measured', '?')}: {spread.get('how', '')}")
        lines.append(f"A figure is flagged when new/old lies outside [1/f, f], f being the largest max/min of that "
                     f"figure over those runs (where a benchmark was not measured, the typical f: "
                     f"{_factor(default.get('ratio'))} for ratios, {_factor(default.get('median'))} for medians).")
    else:
        lines.append("Spread: no spread file, nothing is flagged.")
    lines += ["", "Speed-up ratios (the peer's median over the benchmark's; above 1: faster than the peer):", "",
              "| group | benchmark | vs | old | new | new/old | f (runs' max/min) | flag |",
              "|---|---|---|---:|---:|---:|---:|---|"]
    for r in result["ratios"]:
        lines.append(f"| {r['group']} | {r['label']} | {r['peer']} | {r['old']:.3g}× | {r['new']:.3g}× | "
                     f"{1 + r['change']:.3f} | {_factor(r['spread'])} | {_flag(r['flag'])} |")
    if not result["ratios"]:
        lines.append("| (no benchmark has a ratio in both runs) | | | | | | | |")
    if result["medians"]:
        lines += ["", "Median times (same machine):", "",
                  "| group | benchmark | old | new | new/old | f (runs' max/min) | flag |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for r in result["medians"]:
            lines.append(f"| {r['group']} | {r['label']} | {_fmt_time(r['old'])} | {_fmt_time(r['new'])} | "
                         f"{1 + r['change']:.3f} | {_factor(r['spread'])} | {_flag(r['flag'])} |")
    flagged = [r for r in result["ratios"] + result["medians"] if r["flag"]]
    lines += ["", f"{len(flagged)} change(s) beyond the spread ({sum(r['flag'] == 'slower' for r in flagged)} slower)."]
    for key, what in (("only_old", "only in the old run"), ("only_new", "only in the new run")):
        if result[key]:
            lines.append(f"{len(result[key])} benchmark(s) {what}: " + ", ".join(n.rsplit("::", 1)[-1]
                                                                                for n in result[key]))
    return "\n".join(lines)


def _factor(s):
    """A spread (max/min - 1) as the factor max/min."""
    if s is None:
        return "?"
    return f"{1 + s:.2f}" if s < 9 else f"{1 + s:.0f}"


def _flag(flag):
    return f"**{flag}**" if flag else ""


# -------------------------------------------------------------------------------- history


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def history_entry(name, runs, note=None):
    """A milestone from one or more compact runs of the same machine (say an objective run and a
    fit run): their tracked benchmarks, the newest run's date and commit, the machine summary."""
    if not NAME_RE.match(name or ""):
        raise ValueError(f"history name {name!r}: use letters, digits, '.', '_' and '-'")
    if not runs:
        raise ValueError("history_entry needs at least one run")
    first = runs[0]
    for r in runs[1:]:
        same, why = same_machine(first.get("machine"), r.get("machine"))
        if not same:
            raise ValueError(f"runs {first.get('source')} and {r.get('source')} are not from the same machine: {why}")
    newest = max(runs, key=lambda r: r.get("date") or "")
    benchmarks = {}
    for r in runs:
        for fullname, b in r["benchmarks"].items():
            if b.get("ratio"):
                benchmarks[fullname] = {k: b[k] for k in ("group", "impl", "variant", "median", "ratio")}
                if b.get("median"):
                    benchmarks[fullname]["median"] = _sig(b["median"])
    if not benchmarks:
        raise ValueError("none of the runs has a benchmark with ratios (extra_info['ratio_to'])")
    return {"format": HISTORY_FORMAT, "name": name, "date": newest.get("date"), "commit": newest.get("commit"),
            "dirty": newest.get("dirty"), "machine": first.get("machine"), "note": note,
            "sources": [r.get("source") for r in runs], "benchmarks": dict(sorted(benchmarks.items()))}


def write_history_entry(entry, directory=HISTORY_DIR, overwrite=False):
    """Write ``entry`` as ``directory/<name>.json``; refuses to replace one unless ``overwrite``."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, entry["name"] + ".json")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite / --force to replace it)")
    with open(path, "w") as fh:
        fh.write(dumps_by_line(entry) + "\n")
    return path


def dumps_by_line(entry):
    """JSON with one line per top-level field, and per key of the dict-valued ones (machine,
    benchmarks): compact, and a diff between two versions shows which benchmark moved."""
    fields = []
    for key, value in entry.items():
        if isinstance(value, dict) and value:
            inner = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
            fields.append(f" {json.dumps(key)}: {{\n{inner}\n }}")
        else:
            fields.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(fields) + "\n}"


def load_history(directory=HISTORY_DIR):
    """The history entries in ``directory``, oldest first (by date, then name); other JSON files
    there (the spread file) are skipped."""
    entries = []
    for path in glob.glob(os.path.join(directory, "*.json")):
        with open(path) as fh:
            data = json.load(fh)
        if data.get("format") == HISTORY_FORMAT:
            data["source"] = os.path.relpath(path)
            entries.append(data)
    return sorted(entries, key=lambda e: (e.get("date") or "", e["name"]))


def history_series(entries, peer="sklearn"):
    """``{group: {label: [ratio or None per entry]}}``: the ratios to ``peer`` over the entries."""
    series = defaultdict(lambda: defaultdict(lambda: [None] * len(entries)))
    for i, e in enumerate(entries):
        for name, b in e["benchmarks"].items():
            r = (b.get("ratio") or {}).get(peer)
            if r is not None:
                series[b.get("group")][_label(b, name)][i] = r
    return {g: dict(series[g]) for g in sorted(series, key=_group_order)}


#: one colour per implementation in every panel (fastbp's backends strong, peers muted); variants dashed
IMPL_COLORS = {"cython": "#1f77b4", "numba": "#2ca02c", "numpy": "#d62728", "fastbp": "#1f77b4",
               "sklearn": "#444444", "jax": "#9467bd", "torch": "#8c8c8c"}


def plot_history(entries, png_path, peer="sklearn"):
    """Draw the ratios to ``peer`` over the milestones, one panel per group; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    series = history_series(entries, peer)
    if not series:
        raise ValueError(f"no history entry has a ratio to {peer!r}")
    ncol = min(2, len(series))
    nrow = (len(series) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(8 * ncol, 3.6 * nrow), squeeze=False)
    x = list(range(len(entries)))
    ticks = [f"{e['name']}\n{(e.get('machine') or {}).get('cpu') or '?'}" for e in entries]
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]  # per variant: none, then the others in turn
    for ax, (group, lines) in zip(axes.flat, series.items()):
        variants = sorted({label.partition(" [")[2] for label in lines}, key=lambda v: (v != "", v))
        for label, values in sorted(lines.items()):
            pts = [(i, v) for i, v in zip(x, values) if v is not None]
            if pts:
                impl, _, variant = label.partition(" [")
                ls, marker = styles[variants.index(variant) % len(styles)]
                ax.plot(*zip(*pts), label=label, color=IMPL_COLORS.get(impl), ls=ls, marker=marker)
        ax.axhline(1.0, color="#888888", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        # minor ticks labelled at 2 and 5 times a power of ten only, so they do not crowd
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}×" if f"{v:.0e}"[0] in "25" else ""))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_title(group if ":" in (group or "") else f"objective call: {group}")
        ax.set_ylabel(f"speed-up vs {peer}")
        ax.set_xticks(x, ticks, rotation=30, ha="right", fontsize=7)
        ax.set_xlim(-0.3, len(entries) - 0.7)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle(f"fastbp: speed-up over the same run's {peer}, per milestone")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path
