"""aurora against the real peer: PEFT 0.21 (DoRA outputs, PEFT adapter export/import) and transformers (save_pretrained).

Tiny BERT / GPT-2 built from configs (random weights, nothing downloaded).
"""

import copy

import pytest
import torch

import aurora

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def tiny_bert():
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # train mode = eval mode
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


def tiny_gpt2():
    config = transformers.GPT2Config(vocab_size=60, n_embd=16, n_layer=2, n_head=2, n_positions=16,
                                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).eval()


def tokens(vocab: int = 60, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, vocab, (3, 7), generator=torch.Generator().manual_seed(seed))


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a.detach() - b.detach()) / torch.linalg.norm(b.detach()))


def randomize(model, seed: int = 0, scale: float = 0.3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in aurora.adapter_layers(model):
            for name, p in layer.named_parameters():
                if not name.startswith("base_layer."):
                    noise = torch.randn(p.shape, generator=generator) * scale
                    p.copy_(p * (1 + noise) if name == "lora_magnitude" else noise)


# -- DoRA against PEFT's use_dora=True -------------------------------------------------------------


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
@pytest.mark.parametrize("training", [False, True])
def test_dora_matches_peft_given_the_same_a_b_and_magnitude(arch, training):
    build, targets = (tiny_bert, ["query", "value"]) if arch == "bert" else (tiny_gpt2, ["c_attn"])
    ours = build()
    theirs = peft.get_peft_model(build(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_dora=True,
                                                          fan_in_fan_out=arch == "gpt2"))
    aurora.add_adapters(ours, aurora.AdapterConfig(method="dora", rank=4, alpha=8.0, target_modules=targets))
    randomize(ours)
    with torch.no_grad():
        for name, layer in aurora.adapter_layers(ours):
            peer = theirs.base_model.model.get_submodule(name)
            peer.lora_A["default"].weight.copy_(layer.lora_A)
            peer.lora_B["default"].weight.copy_(layer.lora_B)
            peer.lora_magnitude_vector["default"].weight.copy_(layer.lora_magnitude)
    ours.train(training), theirs.train(training)
    ids = tokens()
    reference = theirs(input_ids=ids).logits
    out = ours(input_ids=ids).logits
    assert relative_difference(out, reference) <= 1e-5
    assert relative_difference(out, build().train(training)(input_ids=ids).logits) > 1e-3  # DoRA does change the outputs
    # the gradients agree too (the norm is a constant in both, DoRA §4.3)
    out.sum().backward(), reference.sum().backward()
    name, layer = aurora.adapter_layers(ours)[0]
    peer = theirs.base_model.model.get_submodule(name)
    for mine, their in ((layer.lora_A, peer.lora_A["default"].weight), (layer.lora_magnitude, peer.lora_magnitude_vector["default"].weight)):
        torch.testing.assert_close(mine.grad, their.grad, atol=1e-5, rtol=1e-4)
    # merged: PEFT's merge_and_unload and ours give the same model
    ours.eval(), theirs.eval()
    aurora.merge(ours)
    merged_peer = theirs.merge_and_unload()
    assert relative_difference(logits(ours, ids), logits(merged_peer, ids)) <= 1e-5


# -- export_peft: PEFT reproduces aurora.merge ------------------------------------------------------

EXPORTS = [
    ("lora", dict(method="lora", rank=4, alpha=8.0), "static"),
    ("moslora", dict(method="moslora", rank=4, alpha=8.0), "static"),
    ("dora", dict(method="dora", rank=4, alpha=8.0), "static"),
    ("aurora-static-form", dict(method="aurora", rank=2, form="static"), "static"),
    ("aurora-static", dict(method="aurora", rank=2), "static"),
    ("aurora-linearized", dict(method="aurora", rank=2), "linearized"),
    ("aurora-least_squares", dict(method="aurora", rank=2), "least_squares"),
]


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
@pytest.mark.parametrize("options, strategy", [pytest.param(o, s, id=i) for i, o, s in EXPORTS])
def test_peft_loads_the_export_and_computes_the_merge(arch, options, strategy, tmp_path):
    build, targets, heads = (tiny_bert, ["query", "value"], ["classifier"]) if arch == "bert" else (tiny_gpt2, ["c_attn"], [])
    model = build()
    aurora.add_adapters(model, aurora.AdapterConfig(target_modules=targets, modules_to_save=heads, **options))
    randomize(model)
    if heads:
        with torch.no_grad():
            model.classifier.weight.mul_(-2)  # a trained head travels with the adapter
    ids = tokens()
    calibration = aurora.collect_calibration_inputs(model, [{"input_ids": tokens(seed=s)} for s in range(4)])
    folder = aurora.export_peft(model, tmp_path / "adapter", strategy=strategy, calibration=calibration)
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    loaded = peft.PeftModel.from_pretrained(build(), folder).eval()
    assert loaded.peft_config["default"].use_dora == (options["method"] == "dora")
    assert loaded.peft_config["default"].lora_bias == (strategy in ("linearized", "least_squares"))
    aurora.merge(model, strategy=strategy, calibration=calibration)
    assert relative_difference(logits(loaded, ids), logits(model, ids)) <= 1e-5
    assert relative_difference(logits(loaded, ids), logits(build(), ids)) > 1e-3  # the adapter is not a no-op


def test_loran_export_is_refused_and_points_to_merge_and_unload(tmp_path):
    model = tiny_bert()
    aurora.add_adapters(model, aurora.AdapterConfig(method="loran", rank=2, target_modules=["query"]))
    with pytest.raises(ValueError, match="not a rank-2 product.*merge_and_unload"):
        aurora.export_peft(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()


# -- import_peft: aurora computes what PEFT computes -------------------------------------------------


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
@pytest.mark.parametrize("variant", ["lora", "dora", "rslora"])
def test_import_peft_reproduces_the_peft_model(arch, variant, tmp_path):
    build, targets = (tiny_bert, ["query", "key", "value"]) if arch == "bert" else (tiny_gpt2, ["c_attn", "c_proj"])
    config = peft.LoraConfig(r=3, lora_alpha=5, target_modules=targets, use_dora=variant == "dora",
                             use_rslora=variant == "rslora", modules_to_save=["classifier"] if arch == "bert" else None,
                             fan_in_fan_out=arch == "gpt2")
    theirs = peft.get_peft_model(build(), config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator) * 0.2)
    theirs.save_pretrained(tmp_path)
    ours = aurora.import_peft(build(), tmp_path)
    assert {layer.method for _, layer in aurora.adapter_layers(ours)} == {"dora" if variant == "dora" else "lora"}
    ids = tokens()
    assert relative_difference(logits(ours, ids), logits(theirs.eval(), ids)) <= 1e-5


def test_import_peft_refuses_what_it_cannot_represent_and_leaves_the_model_alone(tmp_path):
    theirs = peft.get_peft_model(tiny_bert(), peft.LoraConfig(r=2, target_modules=["query"], lora_bias=True))
    theirs.save_pretrained(tmp_path / "bias")
    model = tiny_bert()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="lora_bias"):
        aurora.import_peft(model, tmp_path / "bias")
    with pytest.raises(ValueError, match="PEFT adapter folder"):
        aurora.import_peft(model, tmp_path / "missing")
    assert not aurora.adapter_layers(model) and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# -- merge_and_unload / disable_adapters with transformers ------------------------------------------


@pytest.mark.parametrize("method", list(aurora.METHODS))
def test_merge_and_unload_saves_a_model_the_original_class_loads(method, tmp_path):
    model = tiny_bert()
    aurora.add_adapters(model, aurora.AdapterConfig(method=method, rank=2, target_modules=["query", "value"], modules_to_save=["classifier"]))
    randomize(model)
    ids = tokens()
    merged_copy = copy.deepcopy(model)
    aurora.merge(merged_copy)
    expected = logits(merged_copy, ids)
    plain = aurora.merge_and_unload(model)
    plain.save_pretrained(tmp_path)
    reloaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert not any("base_layer" in key or "lora" in key for key in reloaded.state_dict())
    torch.testing.assert_close(logits(reloaded, ids), expected, atol=1e-6, rtol=1e-5)


def test_gpt2_conv1d_targets_for_every_method():
    for method in aurora.METHODS:
        model = tiny_gpt2()
        original = copy.deepcopy(model)
        assert aurora.suggest_target_modules(model) == ["c_attn"]
        aurora.add_adapters(model, aurora.AdapterConfig(method=method, rank=2, target_modules=["c_attn", "c_proj", "c_fc"]))
        assert len(aurora.adapter_layers(model)) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block
        randomize(model)
        ids = tokens()
        unmerged = logits(model, ids)
        with aurora.disable_adapters(model):
            torch.testing.assert_close(logits(model, ids), logits(original, ids), atol=0, rtol=0)
        report = aurora.merge(model)
        if all(layer.exact for layer in report.layers):
            torch.testing.assert_close(logits(model, ids), unmerged, atol=1e-5, rtol=1e-5)
        aurora.unmerge(model)
        torch.testing.assert_close(logits(model, ids), unmerged, atol=0, rtol=0)
