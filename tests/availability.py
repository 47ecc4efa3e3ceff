"""Which fastbp backends are available here and, for those that are not, why: so that every skip
of a compiled backend's tests carries the reason fastbp recorded when it failed to load (``-ra``
prints it in the summary). ``FASTBP_REQUIRE_BACKENDS`` (see the repository's ``conftest.py``)
turns a missing backend into a failure of the whole session instead."""

import fastbp
from fastbp import backends

#: every registered backend, available or not
REGISTERED = tuple(name for name in backends.backend_names() if name != "auto")


def unavailable_reason(name):
    """None if backend ``name`` is available here, else why not (fastbp's message)."""
    if name in fastbp.available_backends():
        return None
    try:
        backends.get_backend(name)
    except ValueError as exc:
        return str(exc)
    return None  # pragma: no cover - available after all
