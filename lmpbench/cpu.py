"""The CPU features AOTInductor compiles for, read from Linux's ``/proc/cpuinfo``.

An AOTInductor file records the instruction sets its generated code uses in its
``AOTI_CPU_ISA`` metadata ("AVX2", "AVX512", "AVX512_VNNI", ...); running that code on a CPU
without them dies with an illegal instruction. ``ISA_FLAGS`` maps each of those names to the
``/proc/cpuinfo`` flags it needs (Linux's spellings, with underscores: ``avx512_fp16``, not
``avx512fp16``).

This table mirrors ``missing_cpu_features`` in ``pair_styles/pair_mlff.cpp``, where the pair
style refuses such a file at load time (there with ``__builtin_cpu_supports`` and GCC's names):
same ISA names, same order, same flags. Change both together.
"""

from __future__ import annotations

from pathlib import Path

# AOTInductor ISA name -> /proc/cpuinfo flags it needs (all of them); order as in pair_mlff.cpp
ISA_FLAGS: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2",),
    "AVX512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "AVX512_VNNI": ("avx512_vnni",),
    "AVX512_BF16": ("avx512_bf16",),
    "AVX512_FP16": ("avx512_fp16",),
}

CPUINFO = Path("/proc/cpuinfo")


def read_cpuinfo(path: str | Path = CPUINFO) -> str:
    """The text of ``/proc/cpuinfo``; empty where it cannot be read (not Linux)."""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of ``cpuinfo`` (the text of ``/proc/cpuinfo``): the ``flags`` lines
    (``Features`` on ARM), intersected over the processors listed, so that a flag counts only
    when every core has it. Empty for a text without such lines."""
    per_cpu = [frozenset(value.split()) for key, _, value in (line.partition(":") for line in cpuinfo.splitlines())
               if key.strip() in ("flags", "Features")]
    return frozenset.intersection(*per_cpu) if per_cpu else frozenset()


def isa_support(cpuinfo: str | None = None) -> dict[str, bool]:
    """{ISA name: whether this CPU has it} for every name of ``ISA_FLAGS``, in its order.
    ``cpuinfo``: the text to read (default: this machine's ``/proc/cpuinfo``)."""
    flags = cpu_flags(read_cpuinfo() if cpuinfo is None else cpuinfo)
    return {isa: all(flag in flags for flag in needed) for isa, needed in ISA_FLAGS.items()}


def missing_isa(isa: str, cpuinfo: str | None = None) -> list[str]:
    """The features of ``isa`` (an ``AOTI_CPU_ISA`` value: names separated by spaces) that
    this CPU lacks. Names outside ``ISA_FLAGS`` are not judged, as in the pair style."""
    support = isa_support(cpuinfo)
    return [name for name in isa.split() if name in support and not support[name]]
