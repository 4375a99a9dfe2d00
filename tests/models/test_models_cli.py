"""``pneumocxr models list``."""

from __future__ import annotations

from pneumocxr.cli.main import main
from pneumocxr.models import list_models


def test_models_list_prints_a_row_per_model_with_sizes_and_sources(capsys):
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "total"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == list_models()
    assert rows["custom_cnn"][1:5] == ["27.00M", "27.00M", "224x224", "3"]
    assert rows["vgg16_transfer"][1:3] == ["27.56M", "12.85M"]  # frozen VGG16 base
    assert rows["efficientnet_lite0"][3] == "224x224" and "PyPI" in " ".join(rows["efficientnet_lite0"])


def test_models_without_an_action_is_a_usage_error(capsys):
    try:
        code = main(["models"])
    except SystemExit as exc:  # argparse: a required action is missing
        code = exc.code
    assert code == 2
    assert "ACTION" in capsys.readouterr().err
