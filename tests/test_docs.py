"""The documentation runs: every fenced block of README.md and docs/*.md, the reference's
generated parts, the doctests it shows, and the links.

Conventions for the Markdown (say them to whoever writes a block):

* A ```` ```python ```` block runs in a fresh Python process, from the repository root, with this
  checkout first on ``PYTHONPATH`` (so it tests the tree it is in, not an installed fastbp).
* ``<!-- docs-test: continue -->`` on the line before a ```` ```python ```` block joins it to the
  block before it (the previous Python block of the same page that runs, and whatever that one
  continues):
  the chain runs in one process, in order, as a script would, and a failure names the page and
  line (tracebacks point into the Markdown itself).
* A ```` ```bash ```` block runs with ``bash -euo pipefail`` from the repository root. ``fastbp`` and
  ``python`` there are this checkout's (``python -m fastbp``). The paths after ``--out``,
  ``--plot`` and ``--save`` are moved into a temporary folder (the tests never write into the
  checkout), and an image the page shows right after the block (``![..](docs/x.png)``) must be
  among what the block wrote there: the command really makes that figure.
* ``<!-- docs-test: skip: REASON -->`` on the line before a block does not run it; the reason
  shows in the test summary. For what is expensive: installing, the whole suite, benchmarks.
* ```` ```text ```` and ```` ```pycon ```` blocks are not run (output, formulas, doctests; the
  doctests of the reference are run below, from the docstrings). Any other language is an error,
  so that no block goes untested by a typo.
* ``FASTBP_DOCS_QUICK=1`` is set for every block: a block with a heavy part scales it down when
  it sees it (``n = 20_000 if os.environ.get("FASTBP_DOCS_QUICK") else 200_000``), and
  ``FASTBP_EXAMPLES_FAST=1`` runs the examples in their ``--fast`` mode. ``MPLBACKEND=Agg``.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"python", "bash"}
SHOWN_LANGS = {"text", "pycon"}
MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
TIMEOUT = 300


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None = None  # None, "continue" or "skip"
    reason: str = ""
    images: list = field(default_factory=list)  # images shown right after the block

    @property
    def where(self):
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse(page):
    """Every fenced block of ``page``, with its marker and the images shown after it."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = len(m.group(1)), m.group(2)
        end = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == "```"), None)
        assert end is not None, f"{page.name}:{i + 1}: a fence that is never closed"
        code = "\n".join(ln[indent:] for ln in lines[i + 1 : end])
        block = Block(page, i + 1, lang, code)
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.match(before)
        if marker:
            text = marker.group(1)
            if text == "continue":
                block.marker = "continue"
            elif text.startswith("skip:") and text[5:].strip():
                block.marker, block.reason = "skip", text[5:].strip()
            else:
                raise AssertionError(f"{block.where}: unknown marker {before!r} (continue, or skip: REASON)")
        # images between this block and the next block or heading
        k = end + 1
        while k < len(lines) and not FENCE.match(lines[k]) and not lines[k].startswith("#"):
            block.images += re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", lines[k])
            k += 1
        blocks.append(block)
        i = end + 1
    return blocks


def _all_blocks():
    return [b for page in PAGES for b in parse(page)]


def python_chains(blocks):
    """The Python blocks grouped as they run: a chain is a block and those that continue it."""
    chains, last_chain = [], {}
    for b in blocks:
        if b.lang != "python":
            continue
        if b.marker == "continue":
            chain = last_chain.get(b.page)
            assert chain is not None, f"{b.where}: 'continue' with no runnable Python block before it on the page"
            chain.append(b)
        else:
            chain = [b]
            chains.append(chain)
        if b.marker != "skip":  # a skipped block is its own chain; 'continue' joins the last one that runs
            last_chain[b.page] = chain
    return chains


def _params():
    blocks = _all_blocks()
    params = []
    for chain in python_chains(blocks):
        ident = chain[0].where + "".join(f"+{b.line}" for b in chain[1:])
        marks = [pytest.mark.skip(reason=f"{chain[0].where}: {chain[0].reason}")] if chain[0].marker == "skip" else []
        params.append(pytest.param(chain, id=ident, marks=marks))
    for b in blocks:
        if b.lang == "bash":
            marks = [pytest.mark.skip(reason=f"{b.where}: {b.reason}")] if b.marker == "skip" else []
            params.append(pytest.param([b], id=b.where, marks=marks))
    return params


def _env(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(FASTBP_DOCS_QUICK="1", FASTBP_EXAMPLES_FAST="1", MPLBACKEND="Agg", DOCS_TEST_TMP=str(tmp_path))
    return env


# The chain runs as a script would: in the runner's own module globals, the runner being the
# __main__ module, so a block's `if __name__ == "__main__":` guard and its functions (pickled by
# multiprocessing) work as in a user's file, and a block that needs a guard and lacks it fails
# here as it would there (Dask starts its workers by running the main file again). Compiled with
# the page as file name and the block's line offset, a traceback points into the Markdown.
RUNNER = """\
_docs_blocks = {blocks!r}
for _docs_page, _docs_line, _docs_source in _docs_blocks:
    exec(compile("\\n" * _docs_line + _docs_source, _docs_page, "exec"), globals())
"""

OUTPUT_OPTION = re.compile(r"(--out|--plot|--save)([ =])(\S+)")


def _redirect_outputs(code, tmp_path):
    """``code`` with the paths after --out/--plot/--save moved into ``tmp_path``; returns it and
    ``{original path: new path}``."""
    moved = {}

    def move(m):
        original = m.group(3).rstrip("/")
        new = tmp_path / "out" / Path(original).name
        moved[original] = new
        return f"{m.group(1)}{m.group(2)}{shlex.quote(str(new))}"

    return OUTPUT_OPTION.sub(move, code), moved


def _run(cmd, env, what):
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert proc.returncode == 0, f"{what} failed (exit {proc.returncode}):\n{output}"
    return proc


@pytest.mark.parametrize("chain", _params())
def test_block(chain, tmp_path):
    env = _env(tmp_path)
    first = chain[0]
    if first.lang == "python":
        script = tmp_path / "blocks.py"
        blocks = [(str(b.page), b.line, b.code) for b in chain]
        script.write_text(RUNNER.format(blocks=blocks))
        _run([sys.executable, str(script)], env, " + ".join(b.where for b in chain))
        return
    (tmp_path / "out").mkdir()
    code, moved = _redirect_outputs(first.code, tmp_path)
    preamble = f'python() {{ {shlex.quote(sys.executable)} "$@"; }}\nfastbp() {{ python -m fastbp "$@"; }}\n'
    _run(["bash", "-euo", "pipefail", "-c", preamble + code], env, first.where)
    for image in first.images:  # the figures shown after the block are what it wrote
        if image.startswith("http"):
            continue
        folder, name = str(Path(image).parent), Path(image).name
        if not moved:
            continue  # a block that writes no files: the image is not its figure
        produced = moved[image] if image in moved else moved[folder] / name if folder in moved else None
        assert produced is not None and produced.is_file(), (
            f"{first.where}: the page shows {image} after this block, which the block did not write"
        )


def test_every_block_is_run_skipped_with_a_reason_or_shown():
    blocks = _all_blocks()
    assert any(b.page.name == "README.md" and b.lang == "python" for b in blocks)
    for b in blocks:
        assert b.lang in RUN_LANGS | SHOWN_LANGS, f"{b.where}: language {b.lang!r}: use python, bash, text or pycon"
        if b.lang in SHOWN_LANGS:
            assert b.marker is None, f"{b.where}: a {b.lang} block is never run; its marker means nothing"
        if b.marker == "continue":
            assert b.lang == "python", f"{b.where}: only Python blocks continue others"
    python_chains(blocks)  # the continue markers make sense


def test_runner_honours_the_main_guard(tmp_path):
    """The runner gives the blocks the script's own __name__, so a guard works as in a file run
    by a user: the guarded part runs in the script, not when a child process re-imports it."""
    page = tmp_path / "page.md"
    page.write_text("```python\nimport multiprocessing as mp\n\ndef square(x):\n    return x * x\n\n"
                    "if __name__ == '__main__':\n    with mp.get_context('spawn').Pool(1) as pool:\n"
                    "        print(pool.map(square, [3]))\n```\n")
    (chain,) = python_chains(parse(page))
    script = tmp_path / "blocks.py"
    script.write_text(RUNNER.format(blocks=[(str(b.page), b.line, b.code) for b in chain]))
    proc = _run([sys.executable, str(script)], _env(tmp_path), "guarded block")
    assert proc.stdout.strip() == "[9]"


# ------------------------------------------------------------------------------------ reference
def _build_reference():
    spec = importlib.util.spec_from_file_location("build_reference", ROOT / "docs" / "build_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_matches_the_docstrings():
    """docs/reference.md's generated parts are what the docstrings, signatures and CLI say now."""
    build = _build_reference()
    current = build.REFERENCE.read_text()
    assert build.render(current) == current, "docs/reference.md is stale: run python docs/build_reference.py"


def test_reference_covers_the_public_api():
    """Every public name of the user-facing modules appears in the reference."""
    import fastbp
    from fastbp import datasets, distributed, plot, saved

    text = (ROOT / "docs" / "reference.md").read_text()
    names = [f"fastbp.{n}" for n in fastbp.__all__ if n != "__version__"]
    names += [f"fastbp.plot.{n}" for n in plot.__all__ if n != "LAB_COLORS"]
    names += [f"fastbp.datasets.{n}" for n in datasets.__all__ if n not in ("DATASETS", "Dataset", "mat_bytes")]
    names += [f"fastbp.distributed.{n}" for n in distributed.__all__]
    names += [f"fastbp.{n}" for n in saved.__all__ if n != "FORMAT"]
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"public names missing from docs/reference.md: {missing}"


@pytest.mark.parametrize("obj", _build_reference().documented_objects(), ids=lambda o: o.__qualname__)
def test_reference_doctests(obj):
    """The examples in the docstrings the reference shows are true."""
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(obj, obj.__qualname__, globs={})
    for t in tests:
        runner.run(t)
    assert runner.failures == 0, f"{runner.failures} doctest(s) of {obj.__qualname__} failed (see the output above)"


# ---------------------------------------------------------------------------------------- links
def _anchors(page):
    """The anchors GitHub gives the headings of ``page``: lower case, punctuation dropped,
    spaces as hyphens, a repeated one suffixed -1, -2..."""
    anchors, seen = set(), {}
    fenced = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_local_links_and_anchors_exist_and_nothing_points_outside_the_repository():
    for page in PAGES:
        text = page.read_text()
        for target, anchor in re.findall(r"\]\(([^)\s#]*)(?:#([^)\s]*))?\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path = page.parent / target if target else page
            assert path.exists(), f"{page.name}: link to {target}, which does not exist"
            if anchor:
                assert anchor in _anchors(path), f"{page.name}: link to {target}#{anchor}: no such heading"
        assert "shared/" not in text, f"{page.name} mentions shared/, which is not part of the repository"
