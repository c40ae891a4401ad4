"""Keeping the frameworks' own output off stderr while gpudoc imports and builds models: the
only stderr lines an estimate prints are gpudoc's."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_frameworks() -> Iterator[None]:
    """File descriptor 2 to /dev/null and Python warnings off meanwhile. TensorFlow's C++ layer
    writes there on import and device set-up (oneDNN, CPU features, a cuInit failure), some of
    it before any log level is read; ``TF_CPP_MIN_LOG_LEVEL=3`` (unless set) and absl's and
    TensorFlow's Python loggers at ERROR keep it quiet afterwards. Exceptions pass through."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
        for name in ("absl", "tensorflow", "keras"):
            logging.getLogger(name).setLevel(logging.ERROR)
