"""Session-wide set-up of the test and benchmark runs: which fastbp backends must be present.

``FASTBP_REQUIRE_BACKENDS=numpy,numba,cython`` in the environment, or the option
``--require-backends=numpy,numba,cython``, makes the session stop before any test runs when one
of those backends is not in ``fastbp.available_backends()``, printing the reason fastbp recorded
(e.g. the compiled extension was not built or does not load). Without it a missing backend only
shows as skipped tests: the cross-backend tests are parametrized over every registered backend
and skip an unavailable one with its reason, and the session's header and summary list the
unavailable backends and why. CI (``.ci/run``) requires all three, so a build that silently lost
a compiled backend fails instead of passing with fewer tests.

This file sits at the repository root so that it applies to ``tests/`` and ``benchmarks/`` alike.
"""

import os

import pytest

ENV_VAR = "FASTBP_REQUIRE_BACKENDS"


def pytest_addoption(parser):
    parser.addoption(
        "--require-backends",
        default=None,
        metavar="NAMES",
        help=f"comma-separated fastbp backends that must be available, else the session fails at "
        f"the start with the reason (default: ${ENV_VAR}, else none)",
    )


def required_backends(config):
    """The backend names the session requires: the option, else the environment variable."""
    value = config.getoption("--require-backends")
    if value is None:
        value = os.environ.get(ENV_VAR, "")
    return [name.strip() for name in value.split(",") if name.strip()]


def unavailable_backends():
    """``{name: reason}`` for every registered backend that is not available here."""
    import fastbp
    from fastbp import backends

    available = fastbp.available_backends()
    reasons = {}
    for name in backends.backend_names():
        if name == "auto" or name in available:
            continue
        try:
            backends.get_backend(name)
        except ValueError as exc:  # says why: the exception fastbp caught when loading it
            reasons[name] = str(exc)
    return reasons


def pytest_configure(config):
    required = required_backends(config)
    if not required:
        return
    from fastbp import backends

    registered = [name for name in backends.backend_names() if name != "auto"]
    unknown = [name for name in required if name not in registered]
    if unknown:
        raise pytest.UsageError(
            f"{ENV_VAR} / --require-backends names unknown backend(s) {unknown}; registered: {registered}"
        )
    missing = {name: why for name, why in unavailable_backends().items() if name in required}
    if missing:
        lines = "\n".join(f"  {name}: {why}" for name, why in missing.items())
        raise pytest.UsageError(
            f"required fastbp backend(s) not available ({ENV_VAR} / --require-backends = "
            f"{','.join(required)}):\n{lines}"
        )


def pytest_report_header(config):
    import fastbp

    line = f"fastbp backends: {', '.join(fastbp.available_backends())}"
    required = required_backends(config)
    if required:
        line += f" (required: {', '.join(required)})"
    return [line] + [f"  not available: {why}" for why in unavailable_backends().values()]


def pytest_terminal_summary(terminalreporter):
    missing = unavailable_backends()
    if missing:
        terminalreporter.section("fastbp backends not available (their tests were skipped)")
        for why in missing.values():
            terminalreporter.line(why)
