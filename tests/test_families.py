"""Model families: a sweep whose sizes change depth (or any shape rule of the recipe) is refused
unless it says so; plans and results name each size's family; one-family recipes stay one family
over a decade of N (real planning, real tables)."""

import math

import pandas as pd
import pytest

from research.errors import UserError
from research.fit.data import model_families
from research.sweep.plan import load_sweep, plan

SWEEP = """
name = "families"
[data]
corpus = "shakespeare"
tokenizer = "bytes"
[model]
seq_len = 32
[train]
batch_size = 4
[design]
kind = "grid"
d_model = {widths}
tokens = [2560]
[recipe]
{recipe}
head_dim = 8
"""
ASPECT = 'class = "research.sweep.recipe:AspectRatioRecipe"\naspect_ratio = 32'


def sweep_file(tmp_path, widths, recipe=ASPECT, extra=""):
    path = tmp_path / "families.toml"
    path.write_text(SWEEP.format(widths=widths, recipe=recipe).replace("[recipe]", extra + "\n[recipe]"))
    return path


def test_a_design_across_a_depth_change_is_refused_in_one_line_naming_both_families(tmp_path):
    # aspect ratio 32: d_model 40 has round(40/32) = 1 layer, d_model 48 has 2
    with pytest.raises(UserError, match=r"2 model families.*1 layer: d_model 16-40.*2 layers: d_model 48.*"
                                        r"allow_mixed_families = true") as err:
        plan(load_sweep(sweep_file(tmp_path, [16, 40, 48])))
    assert "\n" not in str(err.value)


def test_allowing_mixed_families_plans_them_and_marks_where_the_family_changes(tmp_path):
    p = plan(load_sweep(sweep_file(tmp_path, [16, 40, 48], extra="allow_mixed_families = true")))
    families = p.families()
    assert [f["family"] for f in families] == ["1 layer", "2 layers"]
    assert families[0]["d_model"] == [16, 40] and families[1]["layers"] == [2]
    (change,) = p.family_changes()
    assert "d_model 40 (1 layer" in change and "d_model 48 (2 layers" in change
    assert {t.coords["family"] for t in p.trials} == {"1 layer", "2 layers"}
    assert p.to_dict()["family_changes"] == [change]


def test_a_misspelt_switch_gets_did_you_mean(tmp_path):
    with pytest.raises(UserError, match="did you mean 'allow_mixed_families'"):
        load_sweep(sweep_file(tmp_path, [16], extra="allow_mixed_family = true"))


@pytest.mark.parametrize("recipe, family", [
    ('class = "research.sweep.recipe:FixedDepthRecipe"\nlayers = 2', "2 layers"),
    ('class = "research.sweep.recipe:ProportionalRecipe"\naspect_ratio = 16', "d_model = 16 x layers"),
])
def test_one_family_recipes_span_a_decade_of_n_in_one_family(tmp_path, recipe, family):
    widths = [16, 32, 48, 64] if "Proportional" in recipe else [16, 32, 48, 64, 80]
    p = plan(load_sweep(sweep_file(tmp_path, widths, recipe)))
    (only,) = p.families()
    assert only["family"] == family and not p.family_changes()
    n = sorted({t.n_params for t in p.trials})
    assert math.log10(n[-1] / n[0]) >= 1.0  # a decade of N, one family
    if "Proportional" in recipe:  # depth and width on one rule: d_model / layers is the same for every size
        assert {t.config.model.d_model / t.config.model.layers for t in p.trials} == {16.0}


def test_a_table_names_families_from_its_family_column_else_its_depth():
    raw = pd.DataFrame({"layers": [1, 2, 2, None], "family": ["wide", "", None, ""]})
    assert list(model_families(raw)) == ["wide", "2 layers", "2 layers", "unknown"]
    assert model_families(pd.DataFrame({"n_params": [1, 2]})) is None
