"""Write the generated parts of docs/reference.md from fastbp's docstrings, signatures and CLI.

docs/reference.md is written by hand, except between pairs of marker lines::

    <!-- generated: NAME -->
    ...
    <!-- end generated -->

where NAME is one of :data:`SECTIONS` below. This script replaces what lies between each pair
with NAME's rendering of the public objects' signatures and numpy-style docstrings (converted to
Markdown) or of the ``fastbp`` argument parser, so the reference says exactly what the code's own
documentation says and the two cannot disagree.

    python docs/build_reference.py            # rewrite docs/reference.md
    python docs/build_reference.py --check    # exit 1 if it is stale (what tests/test_docs.py checks)

Run it after changing a public docstring, signature or CLI option. The hand-written text between
the generated parts is the reference's prose (conventions, the maths, examples); its Python blocks
run in the tests like README's.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference.md"
BEGIN = re.compile(r"^<!-- generated: ([\w-]+) -->$")
END = "<!-- end generated -->"

# ---------------------------------------------------------------------------------- rst -> markdown
_SECTION_LISTS = {"Parameters", "Attributes", "Returns", "Raises", "Warns", "Yields", "Other Parameters"}
_ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|obj|exc):`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_TABLE_BORDER = re.compile(r"^=+( +=+)+ *$")


def _inline(text):
    """rst inline markup to Markdown: ``code`` (also across a line break) and :role:`target` to
    `code`; ``<`` outside code escaped so Markdown does not take it for HTML."""
    text = _ROLE.sub(lambda m: f"``{m.group(1).split('.')[-1] if '~' in m.group(0) else m.group(1)}``", text)
    parts = re.split(r"(``.+?``)", text, flags=re.S)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a code span
            out.append(f"`{part[2:-2]}`")
        else:
            out.append(part.replace("<", "&lt;"))
    return "".join(out)


def _indent_of(line):
    return len(line) - len(line.lstrip(" "))


def _block(lines, i):
    """The lines from ``i`` on that are blank or indented more than ``lines[i - 1]``'s base:
    returns (block lines dedented, next index)."""
    j = i
    base = None
    while j < len(lines) and (not lines[j].strip() or base is None or _indent_of(lines[j]) >= base):
        if lines[j].strip():
            if base is None:
                base = _indent_of(lines[j])
        j += 1
    while j > i and not lines[j - 1].strip():
        j -= 1
    return textwrap.dedent("\n".join(lines[i:j])).splitlines(), j


def _fence(lines, lang="text"):
    return [f"```{lang}", *lines, "```"]


def _inline_outside_fences(lines):
    """:func:`_inline` on every run of lines outside fenced blocks."""
    out, run, fenced = [], [], False
    for line in lines + ["```"]:  # a sentinel fence flushes the last run
        if line.lstrip().startswith("```"):
            if not fenced and run:
                out += _inline("\n".join(run)).split("\n")
                run = []
            fenced = not fenced
            out.append(line)
        elif fenced:
            out.append(line)
        else:
            run.append(line)
    return out[:-1]


def _table(lines, i):
    """An rst simple table from ``lines[i]`` (its top border): (Markdown lines, next index)."""
    border = lines[i]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]

    def cells(line):
        cols = []
        for k, (a, _) in enumerate(spans):
            b = spans[k + 1][0] if k + 1 < len(spans) else len(line)
            cols.append(line[a:b].strip().replace("|", "\\|"))
        return cols

    rows, j, borders = [], i + 1, 1
    while j < len(lines) and borders < 3:
        if _TABLE_BORDER.match(lines[j]):
            borders += 1
        elif lines[j].strip():
            rows.append(cells(lines[j]))
        j += 1
    header, body = rows[0], rows[1:]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    return md, j


def rst_to_md(doc, section=None, top=True):
    """A numpy-style docstring (already dedented) as Markdown lines (``top``: also convert the
    inline markup; nested calls leave that to the outermost)."""
    lines = doc.splitlines()
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        stripped = line.strip()
        if not stripped:
            out.append("")
            i += 1
        elif nxt.strip() and set(nxt.strip()) == {"-"} and len(nxt.strip()) == len(stripped) and _indent_of(line) == 0:
            section = stripped
            out += ["", f"**{section}**", ""]
            i += 2
        elif _TABLE_BORDER.match(line):
            md, i = _table(lines, i)
            out += ["", *md, ""]
        elif stripped.startswith(">>>"):
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out += _fence(textwrap.dedent("\n".join(lines[i:j])).splitlines(), "pycon")
            i = j
        elif stripped.endswith("::") and _indent_of(line) == 0:
            text = stripped[:-2].rstrip()
            if text:
                out.append(text + ":")
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block, i = _block(lines, j)
            out += ["", *_fence(block), ""]
        elif _indent_of(line) == 0 and nxt.strip() and _indent_of(nxt) >= 4:
            # a definition: a parameter ("name : type") or a term, and its indented description
            term = _term(stripped) if section in _SECTION_LISTS else stripped
            block, i = _block(lines, i + 1)
            desc = rst_to_md("\n".join(block), section="definition", top=False)
            out += [f"- {term}", *[("  " + d if d else "") for d in desc]]
        elif section in _SECTION_LISTS and _indent_of(line) == 0:
            out.append(f"- {_term(stripped)}")
            i += 1
        elif _indent_of(line) >= 4 and (not out or not out[-1].strip()):
            block, i = _block(lines, i)  # an indented block after a blank line: shown as is
            out += _fence(block)
        else:
            out.append(line)
            i += 1
    if top:
        out = _inline_outside_fences(out)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text.splitlines()


def _term(text):
    """A parameter line ``name : type`` (or a bare type) as a list item's term."""
    name, kind = text.split(" : ", 1) if " : " in text else (text, "")
    name = "**" + name.replace("*", "\\*") + "**"
    return f"{name} : {kind}" if kind else name


# ----------------------------------------------------------------------------------- rendering
class _Shown:
    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def _default(value):
    if isinstance(value, type) and value.__module__ == "numpy":
        return _Shown(f"np.{value.__name__}")
    return value


def signature(obj, name):
    """``name(params)`` with defaults as a user would write them (``np.float64``, not its repr)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(target)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    params = [p.replace(default=_default(p.default)) if p.default is not p.empty else p for p in params]
    return f"{name}{sig.replace(parameters=params, return_annotation=inspect.Signature.empty)}"


def own_doc(obj):
    doc = obj.__doc__
    if not doc:
        raise ValueError(f"{obj!r} has no docstring: every public object needs one")
    return inspect.cleandoc(doc)


def api(obj, name, level=3, call=True):
    """Heading, signature and docstring of ``obj`` shown as ``name``."""
    heading = "#" * level
    lines = [f"{heading} `{name}`", ""]
    if call and callable(obj) and not (inspect.isclass(obj) and issubclass(obj, BaseException)):
        lines += [*_fence([signature(obj, name)]), ""]
    lines += rst_to_md(own_doc(obj))
    return lines + [""]


def members(cls, prefix, names, level=4):
    out = []
    for n in names:
        attr = inspect.getattr_static(cls, n)
        if isinstance(attr, property):
            out += [f"{'#' * level} `{prefix}.{n}`", "", *rst_to_md(own_doc(attr)), ""]
        else:  # an instance's __call__ is shown as calling the instance: f(W)
            out += api(getattr(cls, n), prefix if n == "__call__" else f"{prefix}.{n}", level)
    return out


def properties_table(cls, prefix, names):
    rows = ["| attribute | what |", "|---|---|"]
    for n in names:
        doc = " ".join(rst_to_md(own_doc(inspect.getattr_static(cls, n))))
        rows.append(f"| `{prefix}.{n}` | {doc} |")
    return rows + [""]


def module_section(module, title, level=3):
    """The section ``title`` (a numpy-style header) of ``module``'s docstring."""
    doc = inspect.cleandoc(module.__doc__)
    lines = doc.splitlines()
    start = next(k for k, ln in enumerate(lines) if ln.strip() == title and set(lines[k + 1].strip()) == {"-"})
    end = next((k for k in range(start + 2, len(lines) - 1)
                if lines[k].strip() and lines[k + 1].strip() and set(lines[k + 1].strip()) == {"-"}
                and len(lines[k + 1].strip()) == len(lines[k].strip())), len(lines))
    return rst_to_md("\n".join(lines[start + 2 : end]))


def module_intro(module):
    """``module``'s docstring up to its first section header."""
    lines = inspect.cleandoc(module.__doc__).splitlines()
    end = next((k for k in range(len(lines) - 1)
                if lines[k].strip() and set(lines[k + 1].strip()) == {"-"}
                and len(lines[k + 1].strip()) == len(lines[k].strip())), len(lines))
    return rst_to_md("\n".join(lines[:end]))


def _cli_argument(action):
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`" + (" ..." if action.nargs == "+" else "")
    flags = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{flags}`"
    if action.choices:
        return f"`{flags} {{{','.join(map(str, action.choices))}}}`"
    return f"`{flags} {action.metavar or action.dest.upper()}`"


def cli_lines():
    from fastbp import cli

    parser = cli._build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    out = [*rst_to_md(own_doc(cli)), "", _inline(parser.description), ""]
    for name, sp in sub.choices.items():
        exclusive = {}
        for group in sp._mutually_exclusive_groups:
            for a in group._group_actions:
                exclusive[a.dest] = [b.option_strings[0] for b in group._group_actions if b is not a]
        out += [f"### `fastbp {name}`", "", f"{helps[name][0].upper()}{helps[name][1:]}.", "",
                _inline(sp.description), "", "| argument | what it does |", "|---|---|"]
        for a in sp._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            text = a.help or ""
            if a.dest in exclusive:
                text += f" (not with {', '.join(exclusive[a.dest])})"
            text = _inline(text).replace("|", "\\|")
            out.append(f"| {_cli_argument(a)} | {text} |")
        out.append("")
    return out


# -------------------------------------------------------------------------------- the sections
def _network():
    import fastbp

    names = ["bind", "loss_and_grad", "init_weights", "pack", "unpack", "predict_proba", "predict"]
    props = ["layer_sizes", "activation", "output", "l2", "backend", "dtype", "n_threads", "n_params", "layout"]
    return [*api(fastbp.Network, "fastbp.Network"), "Read-only attributes:", "",
            *properties_table(fastbp.Network, "net", props), *members(fastbp.Network, "net", names)]


def _network_second_order():
    import fastbp

    return members(fastbp.Network, "net", ["hessp", "hess", "gauss_newton_product", "residuals", "residuals_jacobian"])


def _bound_objective():
    import fastbp

    return [*api(fastbp.BoundObjective, "fastbp.BoundObjective", call=False),
            *members(fastbp.BoundObjective, "f", ["__call__", "loss_and_grad"])]


def _bound_second_order():
    import fastbp

    return members(fastbp.BoundObjective, "f",
                   ["hessp", "hess", "gauss_newton_product", "residuals", "residuals_jacobian"])


def _layout():
    from fastbp import layout

    return [*rst_to_md(own_doc(layout)), "",
            f"Hidden activations: {', '.join(f'`{a}`' for a in layout.ACTIVATIONS)} (alias: "
            + ", ".join(f"`{k}` = `{v}`" for k, v in layout.ACTIVATION_ALIASES.items())
            + f"). Outputs: {', '.join(f'`{o}`' for o in layout.OUTPUTS)}.", ""]


def _backends():
    from fastbp import backends

    out = []
    for n in ["available_backends", "choose", "get_backend", "backend_names", "register"]:
        out += api(getattr(backends, n), f"fastbp.backends.{n}")
    for n in ["BackendNotBuiltWarning", "NotBuiltError"]:
        out += api(getattr(backends, n), f"fastbp.backends.{n}", call=False)
    return out


def _backend_protocol():
    from fastbp import backends

    return rst_to_md(own_doc(backends))


def _estimators():
    import fastbp

    out = []
    for cls, methods in ((fastbp.MLPClassifier, ["fit", "partial_fit"]), (fastbp.MLPRegressor, ["partial_fit"])):
        name = cls.__name__
        out += api(cls, f"fastbp.{name}")
        out += members(cls, name, methods)
    return out


def _estimator_design():
    from fastbp import estimators

    return [*module_intro(estimators), "", *module_section(estimators, "Design")]


def _estimator_differences():
    from fastbp import estimators

    return module_section(estimators, "Differences from scikit-learn")


def _perceptron():
    from fastbp import perceptron

    return [*rst_to_md(own_doc(perceptron)), "", *api(perceptron.Perceptron, "fastbp.Perceptron"),
            *members(perceptron.Perceptron, "Perceptron", ["fit", "predict", "decision_function"])]


def _saved():
    from fastbp import saved

    return [*rst_to_md(own_doc(saved)), "", *api(saved.load, "fastbp.load"),
            *api(saved.TrainedClassifier, "fastbp.TrainedClassifier"),
            *members(saved.TrainedClassifier, "model", ["predict", "predict_proba", "score", "save"])]


def _datasets():
    from fastbp import datasets

    out = [*rst_to_md(own_doc(datasets)), ""]
    for n in ["load", "load_file", "names", "write", "generate"]:
        out += api(getattr(datasets, n), f"fastbp.datasets.{n}")
    return out


def _plots():
    from fastbp import plot

    out = [*rst_to_md(own_doc(plot)), ""]
    for n in ["decision_boundary", "loss_curve", "class_colors"]:
        out += api(getattr(plot, n), f"fastbp.plot.{n}")
    return out


def _distributed():
    from fastbp import distributed

    return [*module_intro(distributed), "", *module_section(distributed, "Design"), "",
            *api(distributed.DaskObjective, "fastbp.distributed.DaskObjective"),
            *members(distributed.DaskObjective, "obj", ["__call__", "loss_and_grad", "close"]),
            *api(distributed.DistributedObjectiveError, "fastbp.distributed.DistributedObjectiveError", call=False)]


def _cases():
    from fastbp import cases

    return [*rst_to_md(own_doc(cases)), "", *api(cases.make_case_data, "fastbp.cases.make_case_data")]


#: marker name -> the function rendering it
SECTIONS = {
    "network": _network,
    "network-second-order": _network_second_order,
    "bound-objective": _bound_objective,
    "bound-second-order": _bound_second_order,
    "layout": _layout,
    "backends": _backends,
    "backend-protocol": _backend_protocol,
    "estimators": _estimators,
    "estimator-design": _estimator_design,
    "estimator-differences": _estimator_differences,
    "perceptron": _perceptron,
    "saved": _saved,
    "cli": cli_lines,
    "datasets": _datasets,
    "plots": _plots,
    "distributed": _distributed,
    "cases": _cases,
}


def documented_objects():
    """The public callables and classes whose docstrings the reference shows (their doctests are
    run by tests/test_docs.py)."""
    import fastbp
    from fastbp import backends, cases, datasets, distributed, plot, saved

    objs = [fastbp.Network, fastbp.BoundObjective, fastbp.MLPClassifier, fastbp.MLPRegressor, fastbp.Perceptron,
            saved.TrainedClassifier, saved.load, distributed.DaskObjective, cases.make_case_data]
    objs += [getattr(backends, n) for n in ["available_backends", "choose", "get_backend"]]
    objs += [getattr(datasets, n) for n in ["load", "load_file", "names", "write", "generate"]]
    objs += [getattr(plot, n) for n in ["decision_boundary", "loss_curve", "class_colors"]]
    return objs


def render(text):
    """``text`` (the reference) with every generated part rendered afresh."""
    lines = text.splitlines()
    out, i, seen = [], 0, set()
    while i < len(lines):
        m = BEGIN.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        name = m.group(1)
        if name not in SECTIONS:
            raise ValueError(f"docs/reference.md: unknown generated section {name!r}; known: {', '.join(SECTIONS)}")
        if name in seen:
            raise ValueError(f"docs/reference.md: generated section {name!r} appears twice")
        seen.add(name)
        end = next((k for k in range(i, len(lines)) if lines[k] == END), None)
        if end is None:
            raise ValueError(f"docs/reference.md: '<!-- generated: {name} -->' has no '{END}'")
        out += ["", *SECTIONS[name](), ""]
        out.append(END)
        i = end + 1
    missing = set(SECTIONS) - seen
    if missing:
        raise ValueError(f"docs/reference.md lacks the generated section(s) {', '.join(sorted(missing))}")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/reference.md is stale; write nothing")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # document this checkout's fastbp
    current = REFERENCE.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("docs/reference.md is stale: run python docs/build_reference.py", file=sys.stderr)
            return 1
        return 0
    if fresh != current:
        REFERENCE.write_text(fresh)
        print(f"wrote {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
