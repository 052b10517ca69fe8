"""The ptxas report parser of scripts/check_cuda.py (CI's compile check of csrc/) on reports in ptxas' format."""

import re
from pathlib import Path

from scripts_module import load_script

ROOT = Path(__file__).resolve().parent.parent

check_cuda = load_script("check_cuda")

REPORT = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z6clean_kPf' for 'sm_90'
ptxas info    : Function properties for _Z6clean_kPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 96 registers, used 1 barriers, 4096 bytes smem
ptxas info    : Compiling entry function '_Z8spills_kPf' for 'sm_80'
ptxas info    : Function properties for _Z8spills_kPf
    24 bytes stack frame, 20 bytes spill stores, 16 bytes spill loads
ptxas info    : Used 64 registers, used 1 barriers, 24 bytes cumulative stack size
ptxas info    : Compiling entry function '_Z7local_kPf' for 'sm_90'
ptxas info    : Function properties for _Z7local_kPf
    128 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 140 registers, used 1 barriers, 128 bytes cumulative stack size
"""


def test_parser_reads_registers_shared_memory_and_spills():
    clean, spills, local = check_cuda.parse_ptxas_report(REPORT)
    assert (clean.name, clean.arch, clean.registers, clean.shared_bytes) == ("_Z6clean_kPf", "sm_90", 96, 4096)
    assert clean.problem is None
    assert (spills.arch, spills.spill_stores, spills.spill_loads, spills.registers) == ("sm_80", 20, 16, 64)
    assert "spills" in spills.problem
    assert local.stack_bytes == 128 and "local memory" in local.problem


def test_parser_keeps_one_entry_per_kernel_and_architecture():
    twice = REPORT + REPORT.replace("'sm_90'", "'sm_80'")
    kernels = check_cuda.parse_ptxas_report(twice)
    assert len({(k.name, k.arch) for k in kernels}) == len(kernels) == 5


def test_cuda_build_copies_every_script_it_runs_into_its_tree():
    """scripts/cuda_build.sh runs its checks from a copy of the sources: each scripts/*.py it runs must be in the
    copy (a clean-clone CI run failed on one that was not)."""
    text = (ROOT / "scripts" / "cuda_build.sh").read_text()
    copy = text[text.index("tar cf -"):text.index("| tar xf -")]
    run = set(re.findall(r"python\S* (scripts/\w+\.py)", text))
    assert run, "no script runs found: the pattern no longer matches cuda_build.sh"
    assert {script for script in run if script not in copy} == set()
