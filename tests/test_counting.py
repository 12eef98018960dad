"""The paper's Params columns, reproduced from model configs on the meta device."""

import pytest

import aurora
from aurora.counting import count_adapter_parameters, main, paper_parameter_table


def closed_form(shapes: list[tuple[int, int]], layers: int, r: int, extra_per_module: int) -> int:
    return layers * sum(r * (d_in + d_out) + extra_per_module for d_in, d_out in shapes)


def paper_rounding(count: int, printed: str) -> bool:
    """Does ``count`` print as the paper printed it (e.g. 74,592 -> '0.075M', 74,208 -> '74K')?"""
    if printed.endswith("M"):
        digits = len(printed[:-1].split(".")[1]) if "." in printed else 0
        return f"{count / 1e6:.{digits}f}M" == printed
    return f"{round(count / 1e3)}K" == printed


def within_printed_unit(count: int, printed: str) -> bool:
    """Is ``count`` within one unit of the paper's last printed digit (rounding or truncation)?"""
    value, unit = (float(printed[:-1]) * 1e6, "M") if printed.endswith("M") else (float(printed[:-1]) * 1e3, "K")
    digits = len(printed[:-1].split(".")[1]) if "." in printed else 0
    return abs(count - value) < (1e6 if unit == "M" else 1e3) / 10**digits


def test_table_rows_match_closed_forms_and_paper():
    rows = {(r["model"], r["method"], r["spline_mode"]): r for r in paper_parameter_table()}
    q_v_base, q_v_large = [(768, 768)] * 2, [(1024, 1024)] * 2
    assert rows["roberta-base", "aurora", "per_unit"]["ours"] == closed_form(q_v_base, 12, 2, 4 + 2 * 8) == 74_208
    assert rows["roberta-base", "aurora", "per_edge"]["ours"] == closed_form(q_v_base, 12, 2, 4 + 2 * 2 * 8) == 74_592
    assert rows["roberta-base", "lora", "-"]["ours"] == closed_form(q_v_base, 12, 8, 0)
    assert rows["roberta-large", "aurora", "per_unit"]["ours"] == closed_form(q_v_large, 24, 2, 20)
    assert rows["google/vit-base-patch16-224-in21k", "aurora", "sum"]["ours"] == 74_208
    llama = [(4096, 4096), (4096, 1024), (4096, 1024), (4096, 14336), (14336, 4096)]
    assert rows["meta-llama/Meta-Llama-3-8B", "aurora", "per_unit"]["ours"] == closed_form(llama, 32, 2, 20)
    assert rows["meta-llama/Meta-Llama-3-8B", "lora", "-"]["ours"] == closed_form(llama, 32, 32, 0)
    # the paper's printed numbers: the GLUE table's 0.075M fits "per_edge", the image table's 74K fits "per_unit"/"sum"
    assert paper_rounding(74_592, "0.075M") and not paper_rounding(74_208, "0.075M")
    assert paper_rounding(74_208, "74K")
    for key in [("roberta-base", "lora", "-"), ("roberta-large", "aurora", "per_unit"), ("roberta-large", "lora", "-"),
                ("google/vit-large-patch16-224-in21k", "aurora", "per_unit"), ("meta-llama/Meta-Llama-3-8B", "aurora", "per_unit"),
                ("meta-llama/Meta-Llama-3-8B", "lora", "-"), ("google/vit-large-patch16-224-in21k", "lora", "-")]:
        assert within_printed_unit(rows[key]["ours"], rows[key]["paper"]), key
    # ViT-L: 197,568 rounds to 198K; the paper's 197K is A and B alone (196,608) or a truncation
    assert not paper_rounding(197_568, "197K") and paper_rounding(196_608, "197K")


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="model_name must be one of"):
        count_adapter_parameters("bert-tiny", aurora.AdapterConfig())


def test_cli_prints_the_table(capsys):
    main(["--model", "roberta-base", "--method", "lora", "--rank", "8"])
    assert "294,912" in capsys.readouterr().out


def test_printed_count_matches_rounding_and_truncation():
    from aurora.counting import printed_count_matches

    assert printed_count_matches(74_592, "0.075M") == {"rounds_to_paper": True, "truncates_to_paper": False}
    assert printed_count_matches(74_208, "74K") == {"rounds_to_paper": True, "truncates_to_paper": True}
    assert printed_count_matches(197_999, "197K") == {"rounds_to_paper": False, "truncates_to_paper": True}
    with pytest.raises(ValueError, match="printed must end with K or M"):
        printed_count_matches(1, "74")


def test_benchmark_backbones_have_the_published_widths():
    """The benchmark's backbones are the paper's configs at a chosen depth: every adapted matrix has its real shape."""
    from aurora.counting import BACKBONES, MODEL_CONFIGS

    published = {"roberta-base": MODEL_CONFIGS["roberta-base"](), "vit-base": MODEL_CONFIGS["google/vit-base-patch16-224-in21k"](),
                 "llama-block": MODEL_CONFIGS["meta-llama/Meta-Llama-3-8B"]()}
    for name, config in published.items():
        ours = BACKBONES[name].config(layers=1)
        for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
            assert getattr(ours, key, None) == getattr(config, key, None), (name, key)
    model = BACKBONES["tiny-llama"].build(1)
    assert not any(p.requires_grad for p in model.parameters()) and model.training
    inputs = BACKBONES["tiny-llama"].inputs(2, 5, "cpu", requires_grad=False)
    assert model(**inputs).last_hidden_state.shape == (2, 5, 64)
