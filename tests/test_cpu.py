"""lmpbench.cpu: AOTInductor ISA names read from /proc/cpuinfo (Linux's underscore spellings)."""

import re
from pathlib import Path

import pytest
import torch

from lmpbench.cpu import ISA_FLAGS, cpu_flags, isa_support, missing_isa, read_cpuinfo

# two processors as Linux lists them; the second lacks avx512_bf16 (a flag counts only on all)
SYNTHETIC = """\
processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_fp16 amx_tile
"""


def test_parses_linux_spellings():
    assert {"avx512_fp16", "avx512_vnni", "avx2"} <= cpu_flags(SYNTHETIC)
    assert "avx512_bf16" not in cpu_flags(SYNTHETIC)
    assert isa_support(SYNTHETIC) == {"AVX2": True, "AVX512": True, "AVX512_VNNI": True, "AVX512_BF16": False,
                                      "AVX512_FP16": True}
    assert missing_isa("AVX2 AVX512 AVX512_BF16 AVX512_FP16 NOT_A_FEATURE", SYNTHETIC) == ["AVX512_BF16"]
    # GCC's spelling (no underscore) is not Linux's: it must not count
    assert not isa_support(SYNTHETIC.replace("avx512_fp16", "avx512fp16"))["AVX512_FP16"]
    # AVX512 needs all four foundation flags
    assert not isa_support(SYNTHETIC.replace(" avx512vl", ""))["AVX512"]
    # no flags lines (not Linux, unreadable file): nothing is claimed
    assert cpu_flags("") == frozenset() and not any(isa_support("").values())
    assert read_cpuinfo("/nonexistent/cpuinfo") == ""


def test_table_mirrors_pair_style():
    """Same ISA names, in the same order, as missing_cpu_features in pair_mlff.cpp."""
    source = (Path(__file__).parents[1] / "pair_styles" / "pair_mlff.cpp").read_text()
    body = source[source.index("missing_cpu_features(const std::string"):]
    body = body[:body.index("};")]
    assert re.findall(r'\{"(\w+)"', body) == list(ISA_FLAGS)


def test_agrees_with_torch():
    """torch's dispatch level implies the features the module must see on this CPU."""
    if not cpu_flags(read_cpuinfo()):
        pytest.skip("cannot read this CPU's flags from /proc/cpuinfo")
    capability = torch.backends.cpu.get_cpu_capability()
    implied = {"AVX512": ["AVX2", "AVX512"], "AVX2": ["AVX2"]}.get(capability)
    if implied is None:
        pytest.skip(f"torch reports CPU capability {capability!r}, which implies none of the table's features")
    support = isa_support()
    assert all(support[name] for name in implied), (capability, support)
