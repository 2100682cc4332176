"""Small shared helpers: atomic writes, config hashing, devices, seeding, timing, memory."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.errors import DiskFullError, UsageError


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (changing it, even briefly, races with
    other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename: readers never see a partial file. The file
    gets the permissions an ordinary ``open`` would (0666 less the umask), not mkstemp's private 0600, so that a
    teammate can read a run. A full disk is a one-line DiskFullError naming the folder."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file() and not path.is_dir():
            # a device or a pipe (--out /dev/null, /dev/stdout): a rename would put a plain file in its place
            with open(path, "wb") as f:
                f.write(data)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_then_rename(path, data)
    except OSError as e:
        # the OS names no file: say which folder to make room in
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise DiskFullError(f"no space left on the device holding {path.parent} ({e.strerror}) while writing "
                                f"{path.name}; free space there, or choose another folder") from None
        raise


def figure_bytes(fig: Any, fmt: str, **kwargs: Any) -> bytes:
    """A matplotlib figure as a file's bytes (``fmt``: png, pdf, ...), for ``atomic_write_bytes``."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, bbox_inches="tight", **kwargs)
    return buf.getvalue()


def _write_then_rename(path: Path, data: bytes) -> None:
    from bench import faults

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        faults.hit(f"write:{path.parent.name}/{path.name}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "key_fields"):  # fields added later are left out at their defaults (Options): cache
            return {k: to_jsonable(v) for k, v in obj.key_fields().items()}  # keys and saved configs stay as they were
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-able description (dataclasses allowed); key order does not matter."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def resolve_device(spec: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cpu'; 'cuda' or 'cuda:N' (checked)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto")
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise UsageError(f"--device {spec!r} is not a valid device; use auto, cpu, cuda or cuda:N") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise UsageError(f"--device {spec!r} is not valid; use auto, cpu, cuda or cuda:N")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name and widest vector extension (AVX-512 and AVX2 kernels round differently, so trainings on
    the two give different networks); the machine type where /proc/cpuinfo is not there to read."""
    import platform

    try:
        with open(cpuinfo) as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    isa = next((x for x in ("avx512f", "avx2", "avx") if x in flags), "")
    return ", ".join(p for p in (name or platform.machine(), isa.replace("avx512f", "avx512")) if p)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    return f"cpu ({cpu_model()}, {n} thread{'' if n == 1 else 's'})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall-clock timer that synchronises CUDA before reading the clock, so GPU work is counted."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._t0


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[str, float]:
    """(metric name, MiB). CUDA: max allocated since the last reset. CPU: the process's peak RSS, which
    never resets and so includes everything the process did before; the metric name says which."""
    if device.type == "cuda":
        return "peak_cuda_mem_mb", torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return "peak_rss_mb", rss * scale / 2**20


class single_thread:
    """On a CPU device, torch runs on one thread inside the block (per-image loops such as DeepFool's are faster and
    steadier so on a shared machine); the thread count is restored after it. Does nothing on other devices."""

    def __init__(self, device: torch.device):
        self.cpu = device.type == "cpu"

    def __enter__(self) -> None:
        if self.cpu:
            self.threads = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self.cpu:
            torch.set_num_threads(self.threads)
