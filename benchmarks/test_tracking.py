"""Tests of the performance-tracking logic (benchmarks/tracking.py, report.py's tracking commands).

Small synthetic pytest-benchmark JSONs with chosen medians, so every expected ratio, flag and
match is worked out by hand here; one end-to-end run of two tiny benchmarks checks that the
conftest hooks really fill the saved run (and write nothing under ``--benchmark-disable``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import tracking

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import report  # noqa: E402

SUMMARY = {
    "cpu": "Test CPU 9000",
    "logical_cpus": 4,
    "usable_cpus": 4,
    "vector_extensions": ["AVX", "AVX2", "FMA3"],
    "system": "Linux x86_64",
    "blas": [{"for": "numpy", "library": "openblas", "version": "0.3.30", "kernel": "Haswell",
              "threading": "pthreads", "threads": 4}],
    "versions": {"python": "3.11.7", "numpy": "2.4.6"},
    "fastbp": {"version": "0.1.0", "backends": ["numpy"], "commit": "a" * 40, "dirty": False},
}


def other(summary=SUMMARY, **changes):
    """A copy of ``summary`` with top-level fields replaced."""
    out = copy.deepcopy(summary)
    out.update(changes)
    return out


def bench(group, impl, median, variant=None, ratio_to=None, test="test_x", **extra):
    info = {"impl": impl, **extra}
    if variant is not None:
        info["variant"] = variant
    if ratio_to is not None:
        info["ratio_to"] = ratio_to
    name = f"{test}[{group}-{impl}{'-' + variant if variant else ''}]"
    return {"group": group, "name": name, "fullname": f"benchmarks/bench_x.py::{name}", "extra_info": info,
            "stats": {"median": median}}


def run(benchmarks, summary=SUMMARY, date="2026-01-01T00:00:00+00:00", ratios=True):
    """A pytest-benchmark JSON as the hooks leave it (ratios filled unless ``ratios=False``)."""
    benchmarks = copy.deepcopy(benchmarks)
    if ratios:
        assert tracking.add_ratios(benchmarks) == []
    return {"machine_info": {"node": "host-1", "summary": copy.deepcopy(summary)},
            "commit_info": {"id": "b" * 40, "dirty": False}, "datetime": date, "benchmarks": benchmarks}


PEERS = ["sklearn", "numpy", "jax"]


def objective_group(sk=100e-6, np_=50e-6, cy=10e-6, group="small"):
    return [bench(group, "sklearn", sk, ratio_to=PEERS), bench(group, "numpy", np_, ratio_to=PEERS),
            bench(group, "cython", cy, ratio_to=PEERS)]


def by_impl(benchmarks):
    return {(b["extra_info"]["impl"], b["extra_info"].get("variant")): b["extra_info"].get("ratio")
            for b in benchmarks}


# ------------------------------------------------------------------------------------ ratios


def test_ratio_is_the_peers_median_over_the_benchmarks_and_a_missing_peer_is_left_out():
    benches = objective_group()
    assert tracking.add_ratios(benches) == []
    ratios = by_impl(benches)
    assert ratios[("cython", None)] == {"sklearn": 10.0, "numpy": 5.0}  # no jax ran: no jax ratio
    assert ratios[("numpy", None)] == {"sklearn": 2.0}
    assert ratios[("sklearn", None)] == {"numpy": 0.5}


def test_a_variant_is_compared_with_the_same_variant_first_then_with_the_plain_peer():
    benches = [bench("large", "sklearn", 80e-3, ratio_to=PEERS), bench("large", "numpy", 40e-3, ratio_to=PEERS),
               bench("large", "numpy", 20e-3, variant="float32", ratio_to=PEERS),
               bench("large", "cython", 10e-3, variant="float32", ratio_to=PEERS)]
    tracking.add_ratios(benches)
    ratios = by_impl(benches)
    assert ratios[("cython", "float32")] == {"sklearn": 8.0, "numpy": 2.0}  # numpy float32, not float64
    assert ratios[("numpy", "float32")] == {"sklearn": 4.0, "numpy": 2.0}  # itself is no peer: float64 numpy
    assert ratios[("numpy", None)] == {"sklearn": 2.0}  # the float32 one is not the plain peer


def test_groups_do_not_mix_and_untracked_benchmarks_are_left_alone():
    benches = objective_group(group="a") + [bench("b", "sklearn", 1.0), bench("b", "cython", 0.5, ratio_to=["numpy"]),
                                            bench("a", "numba", 5e-6)]
    untracked_info = benches[-1]["extra_info"]
    tracking.add_ratios(benches)
    assert benches[4]["extra_info"]["ratio"] == {}  # group b has no numpy; group a's is not used
    assert "ratio" not in benches[-1]["extra_info"] and benches[-1]["extra_info"] is untracked_info


def test_the_running_fixtures_extra_info_is_not_changed():
    benches = objective_group()
    shared = benches[2]["extra_info"]
    tracking.add_ratios(benches)
    assert "ratio" not in shared and benches[2]["extra_info"]["ratio"]


def test_an_ambiguous_peer_gives_no_ratio_and_is_reported():
    benches = objective_group() + [bench("small", "numpy", 70e-6, test="test_y")]
    problems = tracking.add_ratios(benches)
    assert by_impl(benches[:3])[("cython", None)] == {"sklearn": 10.0}
    assert len(problems) == 2 and all("'numpy'" in p for p in problems)  # sklearn's and cython's ratio to numpy


# ---------------------------------------------------------------------------- same machine


def test_same_machine_ignores_host_versions_and_commit():
    changed = other(versions={"python": "3.12.0", "numpy": "2.5.0"},
                    fastbp={"commit": "c" * 40, "dirty": True})
    changed["blas"][0]["version"] = "0.3.31"
    same, why = tracking.same_machine(SUMMARY, changed)
    assert same, why


@pytest.mark.parametrize("field, value", [
    ("cpu", "Other CPU 1"),
    ("logical_cpus", 8),
    ("usable_cpus", 2),
    ("vector_extensions", ["AVX", "AVX2", "AVX512F", "FMA3"]),
    ("system", "Linux aarch64"),
])
def test_a_different_machine_field_is_a_different_machine(field, value):
    same, why = tracking.same_machine(SUMMARY, other(**{field: value}))
    assert not same and field in why


@pytest.mark.parametrize("key, value", [("threads", 1), ("kernel", "SkylakeX"), ("library", "mkl")])
def test_a_different_blas_setting_is_a_different_machine(key, value):
    changed = other()
    changed["blas"][0][key] = value
    same, why = tracking.same_machine(SUMMARY, changed)
    assert not same and "blas" in why


def test_an_incomplete_summary_is_never_the_same_machine():
    assert not tracking.same_machine(SUMMARY, other(blas=None))[0]
    assert not tracking.same_machine({"cpu": "Test CPU 9000", "logical_cpus": 4}, SUMMARY)[0]
    assert not tracking.same_machine(None, None)[0]


def test_the_machine_summary_of_this_machine_is_complete_and_matches_itself():
    summary = tracking.machine_summary()
    json.dumps(summary)
    assert tracking.machine_identity(summary) is not None, summary
    assert summary["blas"] and all(b["for"] in ("numpy", "scipy") or b["library"] for b in summary["blas"])
    assert tracking.same_machine(summary, json.loads(json.dumps(summary)))[0]


# --------------------------------------------------------------------------------- spread


def test_spread_is_the_largest_over_the_smallest_value_minus_one():
    runs = [tracking.compact_run(run(objective_group(sk=sk, cy=cy)))
            for sk, cy in ((100e-6, 10e-6), (110e-6, 10e-6), (120e-6, 12e-6))]
    spread = tracking.measure_spread(runs, how="three synthetic runs")
    cy = "benchmarks/bench_x.py::test_x[small-cython]"
    sk = "benchmarks/bench_x.py::test_x[small-sklearn]"
    # cython vs sklearn: 10, 11, 10 -> 11/10 - 1; medians: cython 10, 10, 12 -> 0.2; sklearn 100..120
    assert spread["ratio"][cy]["sklearn"] == pytest.approx(0.1)
    assert spread["median"][cy] == pytest.approx(0.2)
    assert spread["median"][sk] == pytest.approx(0.2)
    assert spread["ratio"][cy]["numpy"] == pytest.approx(0.2, abs=1e-3)  # 5, 5, 50/12 (ratios kept to 4 digits)
    assert spread["how"] == "three synthetic runs" and len(spread["runs"]) == 3
    # defaults: the median over benchmarks; medians spread 0.2 (cython), 0 (numpy), 0.2 (sklearn);
    # ratios 0.1, 0.2 (cython), 0.2 (numpy: 2, 2.2, 2.4), 0.2 (sklearn: 0.5 ... 0.4167)
    assert spread["default"]["median"] == pytest.approx(0.2)
    assert spread["default"]["ratio"] == pytest.approx(0.2, abs=1e-3)
    assert tracking.spread_of(spread, cy, "sklearn") == pytest.approx(0.1)
    assert tracking.spread_of(spread, "not::measured", "sklearn") == spread["default"]["ratio"]
    assert tracking.spread_of(spread, "not::measured") == spread["default"]["median"]
    assert tracking.spread_of(None, cy, "sklearn") is None
    # the runs a spread was measured on never flag each other (the spread is rounded up, not down)
    for old in runs:
        for new in runs:
            result = tracking.compare(old, new, spread)
            assert not [r for r in result["ratios"] + result["medians"] if r["flag"]]


# -------------------------------------------------------------------------------- compare

CY = "benchmarks/bench_x.py::test_x[small-cython]"


def spread_file(ratio=0.1, median=0.1, default=0.5):
    return {"format": tracking.SPREAD_FORMAT, "how": "by hand", "default": {"ratio": default, "median": default},
            "median": {CY: median}, "ratio": {CY: {"sklearn": ratio, "numpy": ratio}}}


@pytest.mark.parametrize("new_cy, flag_sklearn", [
    (10.5e-6, None),        # ratio 10 -> 9.52: 5 % apart, within the 10 % spread
    (12.5e-6, "slower"),    # ratio 10 -> 8: 25 % apart
    (8e-6, "faster"),       # ratio 10 -> 12.5
])
def test_compare_flags_ratio_changes_beyond_the_spread(new_cy, flag_sklearn):
    old = tracking.compact_run(run(objective_group()))
    new = tracking.compact_run(run(objective_group(cy=new_cy)))
    result = tracking.compare(old, new, spread_file())
    row = next(r for r in result["ratios"] if r["name"] == CY and r["peer"] == "sklearn")
    assert row["old"] == 10.0 and row["new"] == pytest.approx(1e-4 / new_cy, rel=1e-3)
    assert row["change"] == pytest.approx(row["new"] / 10.0 - 1)
    assert row["flag"] == flag_sklearn
    # numpy's ratio to sklearn did not move: never flagged; its spread is the file's default
    np_row = next(r for r in result["ratios"] if r["label"] == "numpy" and r["peer"] == "sklearn")
    assert np_row["flag"] is None and np_row["spread"] == 0.5


def test_compare_uses_the_default_spread_for_unmeasured_benchmarks():
    old = tracking.compact_run(run(objective_group()))
    new = tracking.compact_run(run(objective_group(np_=80e-6)))  # numpy's ratio to sklearn 2 -> 1.25: 60 % apart
    rows = {(r["label"], r["peer"]): r for r in tracking.compare(old, new, spread_file(default=0.5))["ratios"]}
    assert rows[("numpy", "sklearn")]["flag"] == "slower"
    rows = {(r["label"], r["peer"]): r for r in tracking.compare(old, new, spread_file(default=0.7))["ratios"]}
    assert rows[("numpy", "sklearn")]["flag"] is None


def test_compare_shows_absolute_times_only_on_the_same_machine():
    old = tracking.compact_run(run(objective_group()))
    new_same = tracking.compact_run(run(objective_group(cy=13e-6), summary=other(versions={"python": "3.12"})))
    new_other = tracking.compact_run(run(objective_group(cy=13e-6), summary=other(cpu="Other CPU 1")))
    same = tracking.compare(old, new_same, spread_file())
    assert same["same_machine"] and len(same["medians"]) == 3
    cy = next(r for r in same["medians"] if r["name"] == CY)
    assert cy["flag"] == "slower" and cy["change"] == pytest.approx(0.3)
    diff = tracking.compare(old, new_other, spread_file())
    assert not diff["same_machine"] and diff["medians"] == [] and "cpu" in diff["machine_note"]
    assert len(diff["ratios"]) == len(same["ratios"]) == 4


def test_a_run_saved_on_a_busy_machine_is_pointed_out():
    busy = other(load_average=[3.0, 2.5, 1.0])  # 5-minute load 2.5 on 4 CPUs: above half of them
    quiet = other(load_average=[3.0, 1.5, 1.0])
    assert "2.5 on 4 CPUs" in tracking.busy_note(busy) and tracking.busy_note(quiet) is None
    assert tracking.busy_note(SUMMARY) is None  # not recorded: nothing said
    assert tracking.same_machine(busy, quiet)[0]  # load is not the machine
    old, new = (tracking.compact_run(run(objective_group(), summary=s)) for s in (quiet, busy))
    text = tracking.format_comparison(old, new, tracking.compare(old, new))
    assert "Warning: the new run was saved at a 5-minute load average 2.5" in text and "the old run" not in text


def test_compare_lists_benchmarks_only_one_run_has():
    old = tracking.compact_run(run(objective_group()))
    new = tracking.compact_run(run(objective_group()[:2] + [bench("small", "numba", 9e-6, ratio_to=PEERS)]))
    result = tracking.compare(old, new)
    assert result["only_old"] == [CY] and result["only_new"] == ["benchmarks/bench_x.py::test_x[small-numba]"]
    assert all(r["flag"] is None and r["spread"] is None for r in result["ratios"])  # no spread file: no flags


def test_compact_run_recomputes_ratios_a_run_lacks():
    data = run(objective_group(), ratios=False)
    assert tracking.compact_run(data)["benchmarks"][CY]["ratio"] == {"sklearn": 10.0, "numpy": 5.0}


# -------------------------------------------------------------------------------- history


def test_history_entries_are_written_read_back_in_date_order_and_drawn(tmp_path):
    fit = [bench("fit: small", "sklearn", 1.0, variant="blas-1", ratio_to=["sklearn", "numpy"]),
           bench("fit: small", "cython", 0.25, variant="blas-1", ratio_to=["sklearn", "numpy"])]
    obj_run = tracking.compact_run(run(objective_group() + [bench("small", "numba", 1e-6)]), source="obj")
    fit_run = tracking.compact_run(run(fit, date="2026-01-01T01:00:00+00:00"), source="fit")
    later = tracking.history_entry("b-later", [tracking.compact_run(run(objective_group(cy=20e-6),
                                                                         date="2026-02-01T00:00:00+00:00"))])
    first = tracking.history_entry("z-first", [obj_run, fit_run], note="synthetic")
    assert first["date"] == "2026-01-01T01:00:00+00:00" and first["sources"] == ["obj", "fit"]
    # numba had no ratio_to, the sklearn fit no peer that ran: neither is kept
    assert sorted(b["impl"] for b in first["benchmarks"].values()) == ["cython", "cython", "numpy", "sklearn"]
    assert first["benchmarks"][CY] == {"group": "small", "impl": "cython", "variant": None, "median": 10e-6,
                                       "ratio": {"sklearn": 10.0, "numpy": 5.0}}
    for entry in (later, first):
        tracking.write_history_entry(entry, tmp_path)
    (tmp_path / "spread.json").write_text(json.dumps(spread_file()))
    entries = tracking.load_history(tmp_path)
    assert [e["name"] for e in entries] == ["z-first", "b-later"]
    assert entries[0]["benchmarks"] == first["benchmarks"] and entries[0]["machine"] == SUMMARY
    series = tracking.history_series(entries, "sklearn")
    assert series["small"]["cython"] == [10.0, 5.0]
    assert series["fit: small"]["cython [blas-1]"] == [4.0, None]
    png = tracking.plot_history(entries, str(tmp_path / "out" / "history.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        tracking.write_history_entry(first, tmp_path)
    # a history entry stands in for a run in a comparison
    result = tracking.compare(entries[0], entries[1])
    assert next(r for r in result["ratios"] if r["name"] == CY and r["peer"] == "sklearn")["new"] == 5.0


def test_history_entry_refuses_bad_names_mixed_machines_and_untracked_runs():
    good = tracking.compact_run(run(objective_group()))
    with pytest.raises(ValueError, match="name"):
        tracking.history_entry("../escape", [good])
    with pytest.raises(ValueError, match="same machine"):
        tracking.history_entry("x", [good, tracking.compact_run(run(objective_group(), summary=other(cpu="Other")))])
    with pytest.raises(ValueError, match="ratio"):
        tracking.history_entry("x", [tracking.compact_run(run([bench("small", "numpy", 1.0)]))])


# ---------------------------------------------------------------------- the command line


def save_run(storage, machine_id, number, data):
    folder = storage / machine_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number}_commit_20260101_000000.json"
    path.write_text(json.dumps(data))
    return path


def test_find_run_by_path_id_and_latest(tmp_path):
    a = save_run(tmp_path, "Linux-CPython-3.11-64bit", "0001", run(objective_group()))
    b = save_run(tmp_path, "Linux-CPython-3.11-64bit", "0002", run(objective_group()))
    os.utime(a, (1, 1))
    assert tracking.find_run("0002", tmp_path) == str(b)
    assert tracking.find_run(str(a), tmp_path) == str(a)
    assert tracking.find_run("latest", tmp_path) == str(b)
    save_run(tmp_path, "Linux-CPython-3.12-64bit", "0001", run(objective_group()))
    with pytest.raises(ValueError, match="ambiguous"):
        tracking.find_run("0001", tmp_path)
    assert tracking.find_run("Linux-CPython-3.11-64bit/0001", tmp_path) == str(a)
    with pytest.raises(ValueError, match="no saved run"):
        tracking.find_run("0009", tmp_path)


def test_report_compare_prints_both_ratios_and_fails_on_a_slower_flag(tmp_path, capsys):
    save_run(tmp_path, "m", "0001", run(objective_group()))
    save_run(tmp_path, "m", "0002", run(objective_group(cy=12.5e-6), summary=other(cpu="Other CPU 1")))
    spread = tmp_path / "spread.json"
    spread.write_text(json.dumps(spread_file()))
    args = ["--compare", "0001", "0002", "--storage", str(tmp_path), "--spread", str(spread)]
    assert report.main(args) == 0
    out = capsys.readouterr().out
    assert "| small | cython | sklearn | 10× | 8× | 0.800 | 1.10 | **slower** |" in out
    assert "not the same" in out and "Median times" not in out
    assert report.main(args + ["--fail-if-slower"]) == 1
    assert report.main(args + ["--fail-if-slower", "--peer", "jax"]) == 0  # no jax ratios: nothing flagged


def test_report_records_history_and_measures_spread(tmp_path, capsys):
    for i, cy in enumerate((10e-6, 11e-6, 12e-6), start=1):
        save_run(tmp_path, "m", f"000{i}", run(objective_group(cy=cy)))
    hist = tmp_path / "history"
    spread = tmp_path / "spread.json"
    common = ["--storage", str(tmp_path), "--history-dir", str(hist), "--spread", str(spread)]
    assert report.main(["--record-history", "first", "--runs", "0001", "--note", "n"] + common) == 0
    assert json.loads((hist / "first.json").read_text())["benchmarks"][CY]["median"] == 10e-6
    with pytest.raises(SystemExit):  # exists: needs --force
        report.main(["--record-history", "first", "--runs", "0002"] + common)
    assert report.main(["--record-history", "first", "--runs", "0002", "--force"] + common) == 0
    assert json.loads((hist / "first.json").read_text())["benchmarks"][CY]["median"] == 11e-6
    with pytest.raises(SystemExit):  # the note saying how the runs were made is required
        report.main(["--measure-spread", "0001", "0002", "0003"] + common)
    assert report.main(["--measure-spread", "0001", "0002", "0003", "--note", "synthetic"] + common) == 0
    assert json.loads(spread.read_text())["median"][CY] == pytest.approx(0.2)
    assert report.main(["--history", "--out", str(tmp_path / "h.png")] + common) == 0
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_the_storage_report_reads_is_the_one_pytest_writes():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(tracking.ROOT, "pyproject.toml"), "rb") as fh:
        addopts = tomllib.load(fh)["tool"]["pytest"]["ini_options"]["addopts"].split()
    storage = next(a.split("=", 1)[1] for a in addopts if a.startswith("--benchmark-storage="))
    assert os.path.join(tracking.ROOT, storage.removeprefix("file://")) == tracking.STORAGE


def test_the_committed_history_and_spread_files_load():
    entries = tracking.load_history()
    assert entries, "benchmarks/history/ holds no entries"
    for e in entries:
        assert e["benchmarks"] and all(b["ratio"] for b in e["benchmarks"].values()), e["name"]
    spread = tracking.load_spread()
    assert spread and spread["how"] and spread["default"]["ratio"] > 0


# ------------------------------------------------------------------------------ the hooks


def _conftest_hook(pytestconfig, name):
    conftest = os.path.join(HERE, "conftest.py")
    plugin = next(p for p in pytestconfig.pluginmanager.get_plugins() if getattr(p, "__file__", None) == conftest)
    return getattr(plugin, name)


@pytest.mark.parametrize("machine_changes, message", [
    ({}, False),
    ({"usable_cpus": 1}, True),
])
def test_benchmark_compare_says_when_machines_differ_and_ignores_commit_and_load(pytestconfig, machine_changes,
                                                                               message):
    hook = _conftest_hook(pytestconfig, "pytest_benchmark_compare_machine_info")
    said = []
    reporter = SimpleNamespace(write_line=lambda text, **kw: said.append(text))
    config = SimpleNamespace(pluginmanager=SimpleNamespace(get_plugin=lambda name: reporter))
    saved = other(load_average=[0.1, 0.1, 0.1])
    current = other(fastbp={"commit": "c" * 40, "dirty": True}, load_average=[2.0, 1.0, 0.5], **machine_changes)
    compared = {"machine_info": {"summary": saved}}
    wrapper = hook(config, None, {"summary": current}, compared)
    next(wrapper)  # the part before pytest-benchmark's own check
    assert bool(said) == message and all("not the same machine" in t for t in said)
    # pytest-benchmark's check that follows sees no difference in the per-run fields
    assert saved["fastbp"] == current["fastbp"] and saved["load_average"] == current["load_average"]
    assert (saved == current) == (not message)


# ------------------------------------------------------------------- the hooks, end to end


def _pytest(tmp_path, *args):
    cmd = [sys.executable, "-m", "pytest", "benchmarks/bench_objective.py", "-q", "-p", "no:cacheprovider",
           "-k", "seed4layer and (numpy or sklearn)", f"--benchmark-storage=file://{tmp_path / 'store'}", *args]
    return subprocess.run(cmd, cwd=tracking.ROOT, capture_output=True, text=True, timeout=600)


def test_a_saved_run_has_ratios_and_the_machine_summary(tmp_path):
    out = _pytest(tmp_path, "--benchmark-only", "--benchmark-autosave", "--benchmark-max-time=0.02",
                  "--benchmark-min-rounds=3", f"--benchmark-json={tmp_path / 'run.json'}")
    assert out.returncode == 0, out.stdout + out.stderr
    saved = list((tmp_path / "store").rglob("*.json"))
    assert len(saved) == 1
    for path in (saved[0], tmp_path / "run.json"):
        data = json.loads(path.read_text())
        assert tracking.machine_identity(data["machine_info"]["summary"]) is not None
        med = {b["extra_info"]["impl"]: b["stats"]["median"] for b in data["benchmarks"]}
        ratio = {b["extra_info"]["impl"]: b["extra_info"]["ratio"] for b in data["benchmarks"]}
        assert set(med) == {"numpy", "sklearn"}
        assert ratio["numpy"] == {"sklearn": pytest.approx(med["sklearn"] / med["numpy"], rel=1e-3)}
        assert ratio["sklearn"] == {"numpy": pytest.approx(med["numpy"] / med["sklearn"], rel=1e-3)}


def test_disabled_benchmarks_write_no_run(tmp_path):
    out = _pytest(tmp_path, "--benchmark-disable", "--benchmark-autosave")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
    assert list((tmp_path / "store").rglob("*")) == []  # pytest-benchmark makes the folder, nothing more
