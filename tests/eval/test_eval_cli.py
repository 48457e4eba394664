"""`rlvr eval --out DIR` never writes over an earlier evaluation, and says so before loading a model."""

import pytest

import rlvr.cli
from rlvr.cli import main


@pytest.mark.parametrize("name", ["eval.json", "samples.jsonl"])
def test_eval_refuses_an_out_folder_holding_an_eval(tmp_path, monkeypatch, name):
    out = tmp_path / "run" / "eval"  # e.g. a training run's own final eval, which `rlvr compare` reads
    out.mkdir(parents=True)
    (out / name).write_text("the run's own")
    monkeypatch.setattr(rlvr.cli, "eval_model", lambda *a: pytest.fail("evaluated into a taken folder"))
    with pytest.raises(SystemExit, match=f"{out / name} already exists; give another --out, or remove it"):
        main(["eval", "--model", str(tmp_path / "no-model"), "--out", str(out)])
    assert (out / name).read_text() == "the run's own"


def test_eval_takes_an_out_folder_without_an_eval(tmp_path, monkeypatch):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("other files are no eval")
    seen = []
    monkeypatch.setattr(rlvr.cli, "eval_model", lambda model, cfg, where: seen.append(where))
    main(["eval", "--model", str(tmp_path / "no-model"), "--out", str(out)])
    main(["eval", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "new")])
    assert seen == [out, tmp_path / "new"]
