"""The fused relative-position attention kernel. Its checks (relpos_kernel_checks.py) run here on a GPU, or in
a subprocess that runs Triton's interpreter on CPU: TRITON_INTERPRET must be set before triton is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seggpt_lab.relpos_attention import check_available, interpreting

CHECKS = Path(__file__).with_name("relpos_kernel_checks.py")

if torch.cuda.is_available() or interpreting():
    from tests.seggpt_lab.relpos_kernel_checks import *  # noqa: F403  (collected here, in this process)
else:
    def test_kernel_checks_pass_in_the_triton_interpreter():
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CHECKS)],
                              cwd=CHECKS.parents[2], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert " passed" in done.stdout and " failed" not in done.stdout

    def test_kernel_on_cpu_without_the_interpreter_is_refused_in_one_line():
        with pytest.raises(ValueError, match="attn_impl='triton' runs on CUDA devices, not cpu.*TRITON_INTERPRET"):
            check_available(torch.device("cpu"))
