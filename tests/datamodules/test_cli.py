from __future__ import annotations

import pytest

from datamodules.cli import main


def test_data_tool_lists_its_commands_and_sources(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "{convert,inspect}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out = capsys.readouterr().out
    for flag in ("--shard-size", "--workers", "--skip-bad", "--root", "--split", "--out", "synthetic", "youtube-vos"):
        assert flag in out


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    code = main(["convert", "drive", "--root", str(tmp_path / "missing"), "--split", "training",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("seggpt-lab-data: error:") and "missing" in err and "\n" not in err
    code = main(["inspect", str(tmp_path)])
    assert code == 2 and "no <split>-index.json" in capsys.readouterr().err
