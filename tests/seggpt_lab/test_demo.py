from __future__ import annotations

from PIL import Image

from seggpt_lab.demo import main as demo_main


def test_demo_writes_the_picture(tmp_path):
    out = demo_main(["--output", str(tmp_path / "demo.png")])
    image = Image.open(out)
    assert image.size == (6 * 256, 256)
