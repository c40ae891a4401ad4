"""Scale-aware image and regression metrics."""

from gpudoc.metrics.images import Metric, MetricInputError, RangeWarning, image_metrics, infer_range, to_y

__all__ = ["Metric", "MetricInputError", "RangeWarning", "image_metrics", "infer_range", "to_y"]
