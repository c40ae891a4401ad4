"""The optional compiled event-record core; everything else is configured in pyproject.toml.

``optional=True``: without a working C compiler the build of the extension is skipped with a
warning and gpudoc installs with its pure-Python core (``gpudoc doctor`` says which is active).
"""

from setuptools import Extension, setup

# Both include the CRC-32C routines of _crc32c.h (CPU-specific code by per-function target
# attributes, chosen at run time: no -march flags, so a build runs on any x86-64 or other CPU).
CRC = ["gpudoc/events/_crc32c.h"]

setup(ext_modules=[Extension("gpudoc.events._core", ["gpudoc/events/_core.c"], depends=CRC, optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall"]),
                   # events info's and export's decoder of scalar records (optional the same way).
                   Extension("gpudoc.events._scan", ["gpudoc/events/_scan.c"], depends=CRC, optional=True,
                             extra_compile_args=["-O2", "-std=c11", "-Wall"])])
