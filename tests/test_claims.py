"""The claims ledger (aurora.claims): verdicts computed from result files, never from the sign of a mean."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from aurora import claims


def _spec(**detail) -> str:
    return json.dumps({"kind": "aurora", "detail": detail}, sort_keys=True)


def _write_text(folder, effects: dict[str, float], noise: float = 0.002, seeds: int = 10) -> None:
    rng = np.random.default_rng(0)
    base = 0.7 + 0.02 * rng.standard_normal(seeds)  # seed effect shared by all methods (pairing removes it)
    rows = []
    for label, effect in effects.items():
        for seed in range(seeds):
            rows.append(dict(phase="final", task="t", label=label, seed=seed, test_metric=base[seed] + effect + noise * rng.standard_normal(),
                             adapter_params=3112 if "AuroRA" in label else 12288, method_spec=_spec(method="lora"), smoke=False))
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)


def test_empty_results_folder_gives_every_row_a_reason(tmp_path):
    ledger = claims.build_ledger(tmp_path)
    assert list(ledger.columns) == list(claims.COLUMNS)
    assert set(ledger["verdict"]) <= set(claims.VERDICTS)
    ids = set(ledger["claim_id"])
    for wanted in ("T1", "T3", "EQ", "F2", "MOS", "T4", "T5", "F5", "T7a", "T7b", "INF", "P21", "P22", "PAR", "LN1", "LN2", "LN3", "T2", "F4"):
        assert wanted in ids
    assert any(i.startswith("BL") for i in ids)
    missing = ledger[ledger["verdict"] == "not testable here"]
    assert missing["note"].str.len().gt(10).all()
    t1 = ledger.set_index("claim_id").loc["T1"]
    assert t1["verdict"] == "not testable here" and "python -m aurora.experiments.text_classification" in t1["note"]
    assert ledger.set_index("claim_id").loc["PAR", "verdict"] != "not testable here"  # computed from model configs


def test_text_verdicts_follow_the_paired_intervals(tmp_path):
    _write_text(tmp_path / "text_classification" / "austen", {
        "LoRA r=8": 0.0, "LoRA r=2": -0.01, "MoSLoRA r=2": -0.0095, "AuroRA r̃=2": 0.02, "PEFT LoRA r=8": 0.0,
        "PEFT DoRA r=8": 0.02, "PEFT FourierFT n=1000": -0.05, "PEFT VeRA r=256": 0.05, "PEFT PiSSA r=8": 0.015,
    })
    ledger = claims.build_ledger(tmp_path).set_index("claim_id")
    assert ledger.loc["T1", "verdict"] == "supported" and ledger.loc["T1", "our_value"] == pytest.approx(0.02, abs=0.003)
    assert "25%" in ledger.loc["T1", "note"]  # 3,112 of 12,288 parameters
    assert ledger.loc["EQ", "verdict"] == "supported"  # +3 points over LoRA r=2
    assert ledger.loc["MOS", "verdict"] == "supported"  # within ±1 point of LoRA r=2
    assert ledger.loc["FAIR", "verdict"] == "supported"
    assert ledger.loc["BL-FourierFT", "verdict"] == "supported"
    assert ledger.loc["BL-VeRA", "verdict"] == "contradicted"
    assert ledger.loc["BL-DoRA", "verdict"] == "inconclusive"  # same effect: the interval straddles 0
    assert ledger.loc["BL-PiSSA", "verdict"] == "supported"  # +0.5 points with 0.2-point noise per run
    ci = ledger.loc["BL-DoRA"]
    assert ci["ci_low"] < 0 < ci["ci_high"]


def test_loran_studies_rows(tmp_path):
    _write_text(tmp_path / "text_classification" / "fine_foods", {
        "LoRA r=8": 0.0, "LoRAN r=8": 0.0001, "LoRAN r=8 tanh": 0.0, "LoRAN r=8 sigmoid": -0.03, "LoRAN r=8 relu": -0.2,
        "LoRA r=64": 0.01, "LoRAN r=64": 0.01,
    })
    ledger = claims.build_ledger(tmp_path).set_index("claim_id")
    assert ledger.loc["LN1", "verdict"] == "inconclusive"
    assert ledger.loc["LN2", "verdict"] == "inconclusive"  # tanh ties Sinter, so Sinter does not beat every function
    assert "relu" in ledger.loc["LN2", "note"]
    assert ledger.loc["LN3", "verdict"] == "inconclusive"


def test_measurement_rules(tmp_path):
    (tmp_path / "benchmark").mkdir()
    rows = [dict(method="aurora", phase="train", rank=r, ratio_to_lora=1.02 + 0.01 * i, same_ops_as_base=None, device="cpu")
            for i, r in enumerate((2, 8, 16))]
    rows += [dict(method=m, phase="infer_merged", rank=2, ratio_to_lora=1.0, same_ops_as_base=True, device="cpu") for m in ("lora", "aurora")]
    rows += [dict(method="base", phase="infer_merged", rank=2, ratio_to_lora=1.0, same_ops_as_base=None, device="cpu")]
    pd.DataFrame(rows).to_csv(tmp_path / "benchmark" / "timings.csv", index=False)
    ledger = claims.build_ledger(tmp_path).set_index("claim_id")
    assert ledger.loc["T7b", "verdict"] == "supported" and ledger.loc["T7b", "our_value"] == pytest.approx(1.03)
    assert ledger.loc["INF", "verdict"] == "supported" and ledger.loc["INF", "our_value"] == 1.0
    rows[-2]["same_ops_as_base"] = False
    pd.DataFrame(rows).to_csv(tmp_path / "benchmark" / "timings.csv", index=False)
    assert claims.build_ledger(tmp_path).set_index("claim_id").loc["INF", "verdict"] == "contradicted"


def _merges(tmp_path, static_minus_dynamic):
    """A synthetic ablations/merges.csv: 10 seeds scored dynamically and after a static merge."""
    import numpy as np

    (tmp_path / "ablations").mkdir(exist_ok=True)
    dynamic = 0.8 + 0.01 * np.random.default_rng(0).standard_normal(10)
    static = dynamic + static_minus_dynamic + 0.002 * np.random.default_rng(1).standard_normal(10)
    rows = [dict(task="t", seed=k, merge=m, test_metric=v) for k in range(10) for m, v in (("none", dynamic[k]), ("static", static[k]))]
    pd.DataFrame(rows).to_csv(tmp_path / "ablations" / "merges.csv", index=False)


def test_t7a_pairs_the_static_merge_with_the_dynamic_model_over_seeds(tmp_path):
    _merges(tmp_path, -0.30)
    row = claims.build_ledger(tmp_path).set_index("claim_id").loc["T7a"]
    assert row["verdict"] == "contradicted" and row["our_value"] == pytest.approx(-0.30, abs=0.01) and row["ci_high"] < -0.01
    _merges(tmp_path, 0.0)
    row = claims.build_ledger(tmp_path).set_index("claim_id").loc["T7a"]
    assert row["verdict"] == "supported" and -0.01 < row["ci_low"] < row["ci_high"] < 0.01


def test_verdict_rules_by_hand():
    assert claims._beats(0.001, 0.02) == "supported" and claims._beats(-0.02, -0.001) == "contradicted"
    assert claims._beats(-0.001, 0.02) == "inconclusive"
    assert claims._at_least(-0.005, 0.01) == "supported" and claims._at_least(-0.02, 0.01) == "inconclusive"
    assert claims._at_least(-0.02, -0.001) == "contradicted"
    assert claims._about_equal(-0.005, 0.005) == "supported" and claims._about_equal(0.02, 0.03) == "contradicted"
    assert claims._about_equal(-0.005, 0.02) == "inconclusive"
    assert claims._adds_little(-0.08, -0.04) == "supported" and claims._adds_little(0.02, 0.03) == "contradicted"
    assert claims._agree(-0.005, 0.011) == "supported" and claims._agree(0.001, 0.02) == "contradicted"
    assert claims._combine(["supported", "supported"]) == "supported"
    assert claims._combine(["supported", "inconclusive"]) == "inconclusive"
    assert claims._combine(["supported", "contradicted"]) == "contradicted"


def test_write_ledger_writes_claims_csv_with_provenance(tmp_path):
    folder = claims.write_ledger(tmp_path)
    assert (folder / "claims.csv").is_file() and (folder / "provenance.json").is_file()
    assert len(pd.read_csv(folder / "claims.csv")) == len(claims.CLAIMS)


def test_path_lengths_from_a_table_with_label_and_method_columns(tmp_path):
    (tmp_path / "trajectories").mkdir()
    rows = [dict(task=task, seed=seed, label=f"{m} r=2", method=m, path_length_full=length + 0.01 * seed)
            for task in ("dtd", "resisc45") for seed in range(5) for m, length in (("lora", 10.0), ("moslora", 9.0), ("aurora", 30.0))]
    pd.DataFrame(rows).to_csv(tmp_path / "trajectories" / "summary.csv", index=False)
    row = claims.build_ledger(tmp_path).set_index("claim_id").loc["F2"]
    assert row["verdict"] == "supported" and row["our_value"] == pytest.approx(20.0)
