"""Device and numeric precision: bf16 autocast with channels_last on CPUs that support it, CUDA autocast
on GPUs, plain fp32 otherwise."""

from __future__ import annotations

import contextlib
import os

import torch

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def device_problem(device: str | None) -> str | None:
    """Why ``device`` cannot be used on this machine, in one sentence; None when it can."""
    if device in (None, "auto", "cpu"):
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N"
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            return f"--device {device} asks for a GPU, and this machine has no usable CUDA GPU; use auto or cpu"
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0"
        return None
    if parsed.type != "cpu":
        return f"--device {device} is not supported here; use auto, cpu, cuda or cuda:N"
    return None


def machinery_problems(device: str | None, precision: str, num_workers: int | None) -> list[str]:
    """What is wrong with the settings every command shares (device, precision, decoding processes)."""
    problems = [problem for problem in [device_problem(device)] if problem]
    if precision not in PRECISIONS:
        problems.append(f"--precision must be one of {', '.join(PRECISIONS)}")
    if num_workers is not None and not 0 <= num_workers <= 64:
        problems.append("--num-workers must be between 0 and 64")
    return problems


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_supports_bf16() -> bool:
    """True when oneDNN has fast bf16 kernels here (AVX-512 bf16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA with bf16 support or on a bf16-capable CPU, fp16 on other GPUs, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to ``device`` in channels_last, the layout oneDNN and cuDNN convolutions are fastest in."""
    return model.to(device=device, memory_format=torch.channels_last)


def default_workers(cap: int) -> int:
    """Data-loading processes when the user names none: none on two cores or fewer, where decoding in the
    main process (measured: 20.2 img/s in training) beats one worker competing with the two compute
    threads (18.5 img/s); else half the cores, at most ``cap``."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(cap, cpus // 2)


def cpu_summary() -> dict:
    """The CPU a timing comes from: its model name, whether it has AMX (bf16 matrix tiles) and AVX-512 bf16, and
    how many cores this process may use. Benchmarks print it beside every figure."""
    import os
    from pathlib import Path

    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "amx": "amx_tile" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "cores_online": os.cpu_count(), "cores_usable": usable}


def cpu_description() -> str:
    cpu = cpu_summary()
    return (f"{cpu['model']}, {'with' if cpu['amx'] else 'without'} AMX, "
            f"{'with' if cpu['avx512_bf16'] else 'without'} AVX-512 bf16, {cpu['cores_usable']} cores")
