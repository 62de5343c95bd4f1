"""What machine this is: the CPU model, its SIMD vector extensions, and the memory available.

Timings depend on the CPU's vector width (numba compiles for the CPU it runs on: AVX-512 machines run
the same kernels up to ~2x faster than AVX2-only ones), so every timing this project prints or quotes
names the CPU it was measured on (:func:`cpu_description`). :func:`available_memory` lets loaders and
model builders refuse a size that cannot fit before allocating it.
"""
import os
import platform

# vector extensions worth naming, widest first (Linux /proc/cpuinfo flag names)
_VECTOR_FLAGS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
                 ("asimd", "NEON"))


def _cpuinfo():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return ""


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), or ``platform.processor()``, or ``"unknown CPU"``."""
    for line in _cpuinfo().splitlines():
        if line.lower().startswith(("model name", "hardware")):
            return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or "unknown CPU"


def vector_extensions():
    """The SIMD extensions the CPU reports, widest first, e.g. ``["AVX2", "AVX", "SSE4.2"]``."""
    flags = set()
    for line in _cpuinfo().splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
            break
    return [name for flag, name in _VECTOR_FLAGS if flag in flags]


def cpu_description():
    """One line: model, widest vector extension, cores, e.g. ``"AMD EPYC 7B13 (AVX2, no AVX-512), 2 cores"``."""
    extensions = vector_extensions()
    if extensions:
        widest = extensions[0] + ("" if "AVX-512" in extensions or "NEON" in extensions else ", no AVX-512")
    else:
        widest = "vector extensions unknown"
    return f"{cpu_model()} ({widest}), {os.cpu_count()} cores"


def available_memory():
    """Bytes of memory available for new allocations (Linux ``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(nbytes, what):
    """Raise ``ValueError`` (before allocating) if ``nbytes`` exceeds the available memory.

    ``what`` names the thing (e.g. ``"the shapes dataset (100000000 images of 3 x 32 x 32)"``).
    Does nothing when the available memory is unknown.
    """
    available = available_memory()
    if available is not None and nbytes > available:
        raise ValueError(f"{what} needs {_gigabytes(nbytes)} of memory, but only {_gigabytes(available)} is "
                         f"available")


def _gigabytes(nbytes):
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"
