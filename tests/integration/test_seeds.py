"""``mecharule run --seeds``: one run per seed, and the spread of the headline figures across them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mecharule.cli import app
from mecharule.config import load_config
from mecharule.errors import ConfigError
from mecharule.seeds import parse_seeds

from .small_run import SMALL_RUN


def test_each_seed_is_a_run_and_the_spread_is_their_statistics(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(load_config(None, SMALL_RUN).model_dump(mode="json")))
    out = tmp_path / "seeds"
    result = CliRunner().invoke(app, ["run", "--out", str(out), "--config", str(config), "--seeds", "0,3"])
    assert result.exit_code == 0, result.output
    summaries = {s: json.loads((out / f"seed-{s}" / "summary.json").read_text()) for s in (0, 3)}
    for s in (0, 3):
        assert json.loads((out / f"seed-{s}" / "run.json").read_text())["seed"] == s
    spread = pd.read_csv(out / "seeds.csv").set_index("figure")
    accuracy = [summaries[0]["accuracy"], summaries[3]["accuracy"]]
    assert accuracy[0] != accuracy[1]  # another seed: another subsample of prompts
    row = spread.loc["accuracy"]
    assert [row["seed-0"], row["seed-3"]] == pytest.approx(accuracy, abs=1e-4)
    assert row["mean"] == pytest.approx(sum(accuracy) / 2, abs=1e-4)
    assert row["sd"] == pytest.approx(abs(accuracy[0] - accuracy[1]) / 2**0.5, abs=1e-4)
    assert row["min"] == pytest.approx(min(accuracy), abs=1e-4)
    assert 0 <= spread.loc["agonist overlap between seeds (mean Jaccard)", "mean"] <= 1
    assert "| accuracy |" in result.stdout and (out / "seeds.md").exists()


@pytest.mark.parametrize("text", ["0", "0,0", "a,b", "-1,2"])
def test_seeds_must_be_two_or_more_distinct_non_negative_integers(text):
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds(text)
    assert parse_seeds("2, 0,1") == [2, 0, 1]
