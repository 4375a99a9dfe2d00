"""``pneumocxr model-card``: writes the card; a bad checkpoint is one line on stderr and exit 2."""

from __future__ import annotations

import torch

from pneumocxr.cli.main import main
from pneumocxr.models import create_model, save_checkpoint


def checkpoint(path):
    torch.manual_seed(0)
    model = create_model("custom_cnn", image_size=32, in_channels=1)
    return save_checkpoint(
        path, model, model_name="custom_cnn", model_kwargs={"image_size": 32, "in_channels": 1},
        preprocess=model.spec.preprocess, class_names=("NORMAL", "PNEUMONIA"), threshold=0.3,
    )  # fmt: skip


def test_model_card_writes_the_card_from_a_run_folder(tmp_path, capsys):
    checkpoint(tmp_path / "runs" / "m" / "best.pt")
    out = tmp_path / "cards" / "m.md"
    code = main(["model-card", "--checkpoint", str(tmp_path / "runs" / "m"), "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    card = out.read_text(encoding="utf-8")
    assert card.startswith("# Model card: m (custom_cnn, binary)")
    assert "**Not run:**" in card and "0.3000" in card


def test_a_missing_corrupt_or_foreign_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a zip file at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path in (tmp_path / "missing.pt", corrupt, foreign, tmp_path):
        code = main(["model-card", "--checkpoint", str(path), "--out", str(tmp_path / "card.md")])
        err = capsys.readouterr().err.strip()
        assert code == 2, path
        assert err.startswith("pneumocxr: error: ") and "\n" not in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "card.md").exists()


def test_an_unwritable_out_path_is_a_user_error(tmp_path, capsys):
    ckpt = checkpoint(tmp_path / "m.pt")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["model-card", "--checkpoint", str(ckpt), "--out", str(blocker / "card.md")])
    assert code == 2
    assert "cannot write the model card" in capsys.readouterr().err
