"""Agonist cards: the anchor stage's agonist_cards.json (flip examples with the answers under
ablation, activation histograms, promoted tokens) and the report's card per anchored agonist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mecharule.anchoring.cards import output_direction, promoted_tokens
from mecharule.config import load_config
from mecharule.io.rundir import read_parquet
from mecharule.models import Site, handle_from_model
from mecharule.pipeline import Pipeline, default_stages
from mecharule.report.sections_cards import card_anchor

from .small_run import SMALL_RUN
from .tiny_models import tiny_model


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cards") / "run"
    pipe = Pipeline(load_config(None, SMALL_RUN), out)
    for stage in default_stages(pipe.config):
        assert getattr(pipe, stage)() is True
    return out


def test_every_anchored_agonist_has_a_card_with_real_flips(finished):
    cards = json.loads((finished / "agonist_cards.json").read_text())["agonists"]
    anchored = [a["site"] for a in json.loads((finished / "neuron_rules.json").read_text())["agonists"]]
    assert sorted(cards) == sorted(anchored) and cards
    behaviour = read_parquet(finished / "behaviour.parquet")
    flips = read_parquet(finished / "flips.parquet")
    examples = [(unit, e) for unit, card in cards.items() for e in card["examples"]]
    assert examples
    for unit, example in examples:
        row = flips[flips["row"] == example["row"]].iloc[0]
        assert bool(row["baseline"]) == (example["direction"] == "right_to_wrong")  # the flip recorded
        assert bool(row[unit]) != bool(row["baseline"])
        assert example["prompt"] == behaviour["prompt"].iloc[example["row"]]
        assert example["ablated_answer"] != example["answer"]  # the answer the ablation produced
    for card in cards.values():
        hist = card["activations"]
        assert len(hist["edges"]) == len(hist["covered"]) + 1 == len(hist["unrelated"]) + 1
        assert sum(hist["covered"]) + sum(hist["unrelated"]) > 0
        assert len(card["promoted_tokens"]["up"]) == 8


def test_the_report_shows_a_card_per_agonist_with_its_examples(finished):
    html = (finished / "report" / "index.html").read_text()
    cards = json.loads((finished / "agonist_cards.json").read_text())["agonists"]
    unit, card = next((u, c) for u, c in cards.items() if c["examples"])
    assert 'id="agonists"' in html and f'id="{card_anchor(unit)}"' in html
    example = card["examples"][0]
    assert example["ablated_answer"] in html and "Direct logit effect" in html
    assert f'<a href="#{card_anchor(unit)}">{unit}</a>' in html  # tables naming the unit link to it


def test_the_output_direction_is_the_down_projection_column_for_linear_and_conv1d(char_tokenizer):
    for model_type in ("llama", "gpt2"):
        model = tiny_model(model_type, vocab_size=len(char_tokenizer), seed=1)
        handle = handle_from_model(model, char_tokenizer, name=f"tiny-{model_type}")
        unit = Site(0, "mlp", 3)
        direction = output_direction(handle, unit)
        assert direction.shape == (handle.arch.d_model,)
        from mecharule.models.architectures import down_proj_module

        module = down_proj_module(handle.model, handle.arch.row, 0)
        hidden = torch.zeros(1, 1, handle.arch.d_mlp)
        hidden[0, 0, 3] = 1.0
        bias = getattr(module, "bias", None)
        out = module(hidden)[0, 0] - (bias if bias is not None else 0)
        torch.testing.assert_close(out, direction)  # one unit of activation adds this to the stream
        tokens = promoted_tokens(handle, unit)
        assert tokens["up"][0][1] >= tokens["up"][-1][1] and tokens["down"][0][1] <= tokens["down"][-1][1]


CHROMIUM = Path("/usr/bin/chromium")
PROBE = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.decoded = imgs.filter(function (i) { return i.naturalWidth > 0; }).length;
  var table = document.querySelector("table[data-sortable]");
  var th = Array.prototype.find.call(table.tHead.rows[0].cells, function (h, col) {
    return Array.prototype.every.call(table.tBodies[0].rows, function (r) {
      return r.cells[col] && !isNaN(parseFloat(r.cells[col].textContent));
    }) && table.tBodies[0].rows.length > 2;
  });
  if (!th) { document.body.dataset.sorted = "no numeric column"; return; }
  var col = th.cellIndex;
  function column() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return parseFloat(r.cells[col].textContent);
    });
  }
  th.click();
  var up = column();
  th.click();
  var down = column();
  var sortedUp = up.every(function (v, i) { return i === 0 || up[i - 1] <= v; });
  var sortedDown = down.every(function (v, i) { return i === 0 || down[i - 1] >= v; });
  document.body.dataset.sorted = sortedUp && sortedDown ? "yes" : "no: " + up.join(",");
  document.body.dataset.distinct = new Set(up).size;
});
</script>
"""


@pytest.mark.browser
def test_the_report_of_a_real_run_renders_in_chromium_with_cards_and_sorting(finished, tmp_path):
    """Every section and every image renders, a card is on the page, and a click on a numeric
    header sorts its table both ways (checked by a probe script in a copy of the page)."""
    import re
    import subprocess

    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    html = (finished / "report" / "index.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri(),
    ]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert int(attrs["images"]) == html.count("<img ") > 10 and attrs["decoded"] == attrs["images"]
    assert attrs["sorted"] == "yes" and int(attrs["distinct"]) > 1, attrs  # a real reordering
    for ident in ("overview", "behaviour", "rules", "localization", "anchored-rules", "agonists", "tables"):
        assert f'id="{ident}"' in dom, ident
    assert 'class="card"' in dom
