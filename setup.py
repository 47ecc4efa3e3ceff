"""Build script: the compiled extensions built from src_kernels/ are declared here.

Metadata and dependencies live in pyproject.toml.
"""

from setuptools import setup

ext_modules = []

setup(ext_modules=ext_modules)
