"""gpudoc: diagnostics and ops for deep-learning GPU boxes."""

__version__ = "0.1.0"
