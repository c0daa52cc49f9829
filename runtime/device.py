"""Device and thread choice for the runtime: CUDA where a GPU build is present, else CPU.

The two engines are checked separately, because they come from separate packages:

* the ECG tokenizer runs on onnxruntime; it can use CUDA when ``onnxruntime-gpu`` is
  installed (``CUDAExecutionProvider`` listed by ``onnxruntime.get_available_providers()``);
* the LLM runs on llama.cpp; it can offload layers when llama-cpp-python was built with a GPU
  backend (``llama_cpp.llama_supports_gpu_offload()``).

``device="auto"`` picks CUDA for each engine that has it, CPU otherwise; ``"cuda"`` demands it
for both and raises when either lacks it; ``"cpu"`` never touches a GPU. The device actually
used is always reported (:class:`DeviceChoice`), never a silent fallback: the ONNX session
checks after creation that the provider it asked for is really active (see ``ecg_session``).

Threads: :func:`default_threads` gives half the logical CPUs (llama.cpp's own default, since
SMT siblings add little to matmul throughput and this leaves the other half for the host
application's UI), capped at 8 (token generation is memory-bandwidth bound beyond that),
and at least 1.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import os
from collections.abc import Callable

from diagecg.errors import InferenceError

logger = logging.getLogger(__name__)

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
MAX_DEFAULT_THREADS = 8
MAX_THREADS = 256  # refused above this (onnxruntime crashes on absurd counts; llama.cpp caps at 512)

# onnxruntime's own provider identifiers
ORT_CUDA = "CUDAExecutionProvider"


def check_device(device: str) -> str:
    """Return ``device`` if it is one of :data:`DEVICES`.

    Raises:
        ValueError: any other value.
    """
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is invalid: one of {list(DEVICES)}")
    return device


def logical_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """Sensible thread count for a desktop host: ``max(1, min(logical_cpus // 2, 8))``."""
    return max(1, min(logical_cpus() // 2, MAX_DEFAULT_THREADS))


def resolve_threads(threads: int | None) -> int:
    """``threads`` if given (checked), else :func:`default_threads`.

    More threads than the CPUs this process may run on are capped at that count, with a warning: they
    would only compete for the same cores (the README's ``--threads`` gives what that cost).

    Raises:
        ValueError: ``threads`` is not an int in 1..``MAX_THREADS``.
    """
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(
            f"threads={threads!r} is invalid: an int in 1..{MAX_THREADS} or None "
            f"(default {default_threads()})"
        )
    cpus = logical_cpus()
    if threads > cpus:
        logger.warning(
            "threads=%d capped at %d, the CPUs this process may run on (more threads only compete "
            "for the cores); the default is %d",
            threads,
            cpus,
            default_threads(),
        )
        return cpus
    return threads


def available_memory_bytes() -> int | None:
    """Memory a new allocation can take now (Linux ``MemAvailable``; else free physical pages); None
    where the OS does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to call
        return None


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc's ``malloc_trim``; a no-op elsewhere). glibc keeps
    memory freed by native code for reuse, so without this, loading, answering with and closing
    pipelines, or answering large records one after another, grows the resident size although nothing
    stays allocated (measured in the README's Python API section)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def ort_cuda_available() -> bool:
    """Whether the installed onnxruntime offers the CUDA execution provider."""
    import onnxruntime as ort

    return ORT_CUDA in ort.get_available_providers()


def llama_gpu_available() -> bool:
    """Whether llama-cpp-python was built with a GPU backend (CUDA, Metal, Vulkan...)."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    """What each engine will run on, decided before loading.

    Attributes:
        requested: the user's ``device`` argument.
        ecg_tokenizer: ``"cuda"`` or ``"cpu"`` for the ONNX session.
        llm: ``"cuda"`` or ``"cpu"`` for llama.cpp.
        threads: CPU threads for both engines.
    """

    requested: str
    ecg_tokenizer: str
    llm: str
    threads: int

    @property
    def n_gpu_layers(self) -> int:
        return -1 if self.llm == "cuda" else 0  # -1 = offload every layer

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def choose_device(device: str = "auto", threads: int | None = None) -> DeviceChoice:
    """Decide the device of each engine.

    Args:
        device: ``"auto"`` (CUDA per engine where present), ``"cpu"`` or ``"cuda"`` (both engines,
            else an error).
        threads: CPU threads; None = :func:`default_threads`.

    Returns:
        The per-engine choice.

    Raises:
        ValueError: unknown ``device`` or bad ``threads``.
        InferenceError: ``device="cuda"`` but an engine has no GPU build installed.
    """
    check_device(device)
    n_threads = resolve_threads(threads)
    if device == "cpu":
        return DeviceChoice(device, "cpu", "cpu", n_threads)
    ort_cuda, llama_gpu = ort_cuda_available(), llama_gpu_available()
    if device == "cuda":
        missing = []
        if not ort_cuda:
            missing.append(f"onnxruntime has no {ORT_CUDA} (install onnxruntime-gpu)")
        if not llama_gpu:
            missing.append(
                "llama-cpp-python was built without GPU offload (reinstall it with CMAKE_ARGS=-DGGML_CUDA=on)"
            )
        if missing:
            raise InferenceError(
                "device='cuda' requested but " + "; ".join(missing) + "; or use device 'cpu'/'auto'"
            )
        return DeviceChoice(device, "cuda", "cuda", n_threads)
    choice = DeviceChoice(device, "cuda" if ort_cuda else "cpu", "cuda" if llama_gpu else "cpu", n_threads)
    logger.debug(
        "device auto: ECG tokenizer on %s, LLM on %s, %d threads", choice.ecg_tokenizer, choice.llm, n_threads
    )
    return choice
