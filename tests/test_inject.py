"""Injection into real architectures (transformers RoBERTa / ViT / LLaMA, timm ViT), freezing, config errors."""

import pytest
import torch
from torch import nn

import aurora
from conftest import TinyNet


def tiny_roberta(num_labels: int = 2):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=40, num_labels=num_labels)
    torch.manual_seed(0)
    return RobertaForSequenceClassification(config).eval()


def tiny_hf_vit():
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    return ViTForImageClassification(config).eval()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def tiny_timm_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=2,
                             num_heads=2, num_classes=3).eval()


def expected_count(model: nn.Module, endings: list[str], per_module) -> int:
    """Closed-form adapter count: per_module(d_in, d_out) summed over matching Linear layers (read before injection)."""
    return sum(per_module(m.in_features, m.out_features) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in endings)


ARCHITECTURES = {
    "roberta": (tiny_roberta, ["query", "value"], lambda m: m(input_ids=torch.randint(0, 100, (2, 9))).logits, "classifier"),
    "hf-vit": (tiny_hf_vit, ["q_proj", "v_proj"], lambda m: m(pixel_values=torch.randn(2, 1, 16, 16)).logits, "classifier"),
    "llama": (tiny_llama, ["q_proj", "v_proj"], lambda m: m(input_ids=torch.randint(0, 64, (2, 7))).logits, None),
    "timm-vit": (tiny_timm_vit, ["qkv"], lambda m: m(torch.randn(2, 3, 32, 32)), "head"),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("method", aurora.METHODS)
def test_injection_into_real_architectures(arch, method):
    build, endings, run, head = ARCHITECTURES[arch]
    model = build()
    assert aurora.suggest_target_modules(model) == endings
    r = 2
    per_module = {
        "lora": lambda i, o: r * (i + o),
        "loran": lambda i, o: r * (i + o),
        "moslora": lambda i, o: r * (i + o) + r * r,
        "aurora": lambda i, o: r * (i + o) + r * r + r * (5 + 3),
        "dora": lambda i, o: r * (i + o) + o,  # DoRA adds the magnitude m, one per output unit
    }[method]
    expected = expected_count(model, endings, per_module)
    head_params = 0 if head is None else sum(p.numel() for p in model.get_submodule(head).parameters())
    config = aurora.AdapterConfig(method=method, rank=r, target_modules=endings, modules_to_save=[head] if head else [])
    aurora.add_adapters(model, config)
    assert aurora.trainable_parameters(model) == expected
    report = aurora.parameter_report(model)
    assert report["adapter"] == expected and report["head"] == head_params
    assert report["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad) == expected + head_params
    out = run(model)
    assert torch.all(torch.isfinite(out))
    out.float().pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_only_adapters_and_head_train():
    torch.manual_seed(0)
    model = tiny_roberta()
    before = [(name, p, p.detach().clone()) for name, p in model.named_parameters()]  # wrapping keeps the objects
    aurora.add_adapters(model, aurora.AdapterConfig(method="aurora", target_modules=["query", "value"], modules_to_save=["classifier"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = dict(input_ids=torch.randint(0, 100, (4, 9)), labels=torch.tensor([0, 1, 1, 0]))
    for _ in range(3):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    for name, parameter, original in before:
        assert torch.equal(parameter, original) != name.startswith("classifier."), name
    assert all(not torch.equal(l.lora_B, torch.zeros_like(l.lora_B)) for _, l in aurora.adapter_layers(model))


def test_regex_targets_and_list_targets():
    model = TinyNet()
    aurora.add_adapters(model, aurora.AdapterConfig(method="lora", target_modules=r"(query|value)"))
    assert [n for n, _ in aurora.adapter_layers(model)] == ["query", "value"]


def test_wrong_target_names_are_reported_with_the_available_ones():
    with pytest.raises(ValueError, match=r"target_modules \['valeu'\] matched no nn.Linear.*'query'.*'value'"):
        aurora.add_adapters(TinyNet(), aurora.AdapterConfig(target_modules=["query", "valeu"]))
    with pytest.raises(ValueError, match="matched no nn.Linear"):
        aurora.add_adapters(TinyNet(), aurora.AdapterConfig(target_modules=r"attn\..*"))
    with pytest.raises(ValueError, match="modules_to_save entry 'head'"):
        aurora.add_adapters(TinyNet(), aurora.AdapterConfig(target_modules=["query"], modules_to_save=["head"]))


def test_adding_twice_is_refused():
    model = aurora.add_adapters(TinyNet(), aurora.AdapterConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="already has adapters"):
        aurora.add_adapters(model, aurora.AdapterConfig(target_modules=["value"]))


@pytest.mark.parametrize("options,match", [
    (dict(rank=0), "rank must be an integer >= 1, got 0"),
    (dict(rank=-2), "rank must be an integer >= 1"),
    (dict(rank=2.5), "rank must be an integer"),
    (dict(grid_size=0), "grid_size must be an integer >= 1, got 0"),
    (dict(method="vera"), "method must be one of 'lora', 'moslora', 'aurora', 'loran', 'dora'; got 'vera'"),
    (dict(activation="relu"), "activation must be one of 'tanh', 'leaky_relu', 'sigmoid'; got 'relu'"),
    (dict(spline_mode="tensor"), "spline_mode must be one of"),
    (dict(form="hybrid"), "form must be one of 'dynamic', 'static'"),
    (dict(alpha=0), "alpha must be > 0"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(grid_range=(1.0, 1.0)), "grid_range"),
    (dict(target_modules=[]), "target_modules must be a non-empty"),
    (dict(fixed_nonlinearity=False, learnable_nonlinearity=False), "cannot both be False"),
])
def test_config_errors_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        aurora.AdapterConfig(**options)


def test_config_round_trips_through_a_dict():
    config = aurora.AdapterConfig(method="loran", rank=8, grid_range=(-2, 3), modules_to_save=["classifier"])
    assert aurora.AdapterConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown AdapterConfig options"):
        aurora.AdapterConfig.from_dict({"rnak": 2})


def test_suggest_target_modules_explains_failure():
    with pytest.raises(ValueError, match="no query/value projections"):
        aurora.suggest_target_modules(nn.Sequential(nn.Linear(2, 2)))
