"""The tutorials in notebooks/ run from top to bottom (and are committed without outputs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_every_tutorial_is_here_and_committed_without_outputs() -> None:
    assert [p.stem for p in NOTEBOOKS] == ["data", "quickstart", "video"]
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(not c["outputs"] and c["execution_count"] is None for c in code), path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # the kernel inherits the environment: the real data, no trained checkpoint (an untrained model stands in,
    # so the run does not depend on `make demo` having been run), nothing sent to W&B
    monkeypatch.setenv("SEGGPT_LAB_SHARED_DATA", str(shared_data))
    monkeypatch.setenv("SEGGPT_LAB_CHECKPOINT", str(tmp_path / "none.ckpt"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    images = [o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"{path.name} showed no picture"
    assert os.listdir(REPO / "outputs" / "notebooks")
