"""The interface every GPU backend implements."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from types import TracebackType

from gpudoc.gpu.errors import GpuError
from gpudoc.gpu.model import DriverInfo, GpuDevice, GpuSnapshot


class GpuBackend(ABC):
    """A source of GPU readings. Methods raise :class:`GpuError` subclasses, never crash."""

    name: str = "gpu"

    @abstractmethod
    def driver(self) -> DriverInfo:
        """Driver, CUDA and NVML versions."""

    @abstractmethod
    def device_count(self) -> int:
        """How many GPUs the backend sees."""

    @abstractmethod
    def device(self, index: int) -> GpuDevice:
        """One GPU's readings and processes; unsupported fields are ``NA``."""

    def close(self) -> None:
        """Release the backend's resources."""

    def process_info(self, pid: int) -> tuple[str | None, str | None]:
        """User and command of a process the backend itself describes (a simulated one);
        real backends know nothing beyond NVML's list, and /proc tells the rest."""
        return None, None

    def snapshot(self) -> GpuSnapshot:
        """Poll everything; a failing GPU or backend is reported in ``error`` fields."""
        stamp = time.time()
        try:
            driver = self.driver()
            count = self.device_count()
        except GpuError as exc:
            return GpuSnapshot(backend=self.name, timestamp=stamp, error=str(exc))
        devices = []
        for index in range(count):
            try:
                devices.append(self.device(index))
            except GpuError as exc:
                devices.append(GpuDevice(index=index, error=str(exc)))
        return GpuSnapshot(
            backend=self.name, timestamp=stamp, driver=driver, devices=tuple(devices)
        )

    def __enter__(self) -> GpuBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
