import os
import sys

import pytest

import fastbp

sys.path.insert(0, os.path.dirname(__file__))  # tests/naive.py

BACKENDS = fastbp.available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every backend that registered and imports here; a new backend is tested with no new code."""
    return request.param
