"""Peak GPU memory of training, estimated on a machine with no GPU."""

from gpudoc.oom.allocator import CachingAllocator, OutOfMemory
from gpudoc.oom.devices import CATALOG, Device, find_device
from gpudoc.oom.trace import TraceConfig

__all__ = ["CATALOG", "CachingAllocator", "Device", "OutOfMemory", "TraceConfig", "find_device"]
