"""Scale-aware image and regression metrics, and checks that logged metrics use the right scale."""

from gpudoc.metrics.check import ScaleError, assert_scale, compare_reported
from gpudoc.metrics.images import Metric, MetricInputError, RangeWarning, image_metrics, infer_range, to_y
from gpudoc.metrics.scale import ScaleReport, detect_scale

__all__ = ["Metric", "MetricInputError", "RangeWarning", "ScaleError", "ScaleReport", "assert_scale",
           "compare_reported", "detect_scale", "image_metrics", "infer_range", "to_y"]
