"""The optional compiled event-record core; everything else is configured in pyproject.toml.

``optional=True``: without a working C compiler the build of the extension is skipped with a
warning and gpudoc installs with its pure-Python core (``gpudoc doctor`` says which is active).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("gpudoc.events._core", ["gpudoc/events/_core.c"], optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall"]),
                   # events info's and export's decoder of scalar records (optional the same way).
                   Extension("gpudoc.events._scan", ["gpudoc/events/_scan.c"], optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall"])])
