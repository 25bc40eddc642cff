"""GPU numbers for ``/metrics``, sampled in the replica that holds the GPU. Framework code only.

Utilisation and device memory come from NVML (``pynvml``, when installed), else from PyTorch's
``torch.cuda`` (``mem_get_info``; utilisation needs NVML either way). Fragmentation is the
allocator's: reserved but unallocated over reserved, from PyTorch's caching allocator, so only a
process that already runs PyTorch reports it (TensorFlow and ONNX Runtime expose no reserved/
allocated split). On a machine without a GPU nothing is reported: no series, no zeros.
"""

from __future__ import annotations

import sys

__all__ = ["gpu_samples", "gpu_uuid", "TRITON_NAMES"]

# Our device-wide names -> Triton's (labelled by ``gpu_uuid`` instead of our ``device``).
TRITON_NAMES = {"infergrid_gpu_utilization": "nv_gpu_utilization",
                "infergrid_gpu_memory_total_bytes": "nv_gpu_memory_total_bytes",
                "infergrid_gpu_memory_used_bytes": "nv_gpu_memory_used_bytes",
                "infergrid_gpu_power_watts": "nv_gpu_power_usage"}


def _nvml(index: int) -> dict[str, float]:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        utilization = pynvml.nvmlDeviceGetUtilizationRates(handle)
        out = {"infergrid_gpu_utilization": utilization.gpu / 100.0,
               "infergrid_gpu_memory_used_bytes": float(memory.used),
               "infergrid_gpu_memory_total_bytes": float(memory.total)}
        try:
            out["infergrid_gpu_power_watts"] = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except Exception:  # noqa: BLE001 - some boards report no power
            pass
        return out
    except Exception:  # noqa: BLE001 - no NVML here: fall back to what torch can say
        return {}


def _torch(index: int) -> dict[str, float]:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return {}
    out: dict[str, float] = {}
    try:
        free, total = torch.cuda.mem_get_info(index)
        out["infergrid_gpu_memory_used_bytes"] = float(total - free)
        out["infergrid_gpu_memory_total_bytes"] = float(total)
        stats = torch.cuda.memory_stats(index)
        reserved = float(stats.get("reserved_bytes.all.current", 0))
        allocated = float(stats.get("allocated_bytes.all.current", 0))
        if reserved > 0:
            out["infergrid_gpu_memory_fragmentation"] = (reserved - allocated) / reserved
    except Exception:  # noqa: BLE001 - a sampling failure never fails the replica
        return out
    return out


def gpu_samples(device: str) -> dict[str, float]:
    """Metric name -> value for ``device`` (``cuda:N``); {} for ``cpu`` or when nothing can be read."""
    if not device.startswith("cuda"):
        return {}
    index = int(device.partition(":")[2] or 0)
    samples = _torch(index)
    samples.update(_nvml(index))  # NVML's device-wide memory figures win over torch's
    return samples


def gpu_uuid(device: str) -> str:
    """The device's UUID as Triton labels it (``GPU-xxxxxxxx-...``); the device name when unknown."""
    index = int(device.partition(":")[2] or 0)
    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))
        return uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    except Exception:  # noqa: BLE001 - no NVML: torch knows the UUID too
        pass
    torch = sys.modules.get("torch")
    try:
        return f"GPU-{torch.cuda.get_device_properties(index).uuid}"
    except Exception:  # noqa: BLE001
        return device
