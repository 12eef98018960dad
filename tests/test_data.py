"""Offline datasets and models: sizes against published figures, balance, and hub errors offline."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch

import aurora.data as data
from aurora.data import specs
from aurora.data.text import MODELDATA_DIR, read_r_lazyload_object


# ---------------------------------------------------------------- subsampling
def test_stratified_subsample_gives_each_class_its_share():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    chosen = specs.subsample_indices(labels, 10, seed=0, stratify=True, parameter="n_train")
    assert Counter(labels[chosen].tolist()) == {0: 5, 1: 3, 2: 2}
    assert len(set(chosen.tolist())) == 10 and np.all(np.diff(chosen) > 0)


def test_subsample_is_seeded_and_rejects_bad_counts():
    labels = np.arange(1000) % 7
    same = [specs.subsample_indices(labels, 100, seed=4, stratify=True, parameter="n_train") for _ in range(2)]
    other = specs.subsample_indices(labels, 100, seed=5, stratify=True, parameter="n_train")
    assert np.array_equal(*same) and not np.array_equal(same[0], other)
    with pytest.raises(ValueError, match="n_test"):
        specs.subsample_indices(labels, 1001, seed=0, stratify=True, parameter="n_test")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="n_train"):
            specs.subsample_indices(labels, bad, seed=0, stratify=True, parameter="n_train")


# ---------------------------------------------------------------- text
def test_fine_foods_matches_modeldata_documentation():
    """modeldata documents small_fine_foods as 4,000 training and 1,000 test reviews."""
    splits = data.load_text_classification("fine_foods")
    assert (len(splits.train), len(splits.test)) == (4000, 1000)
    assert splits.label_names == ("other", "great")
    for text, label in splits.train + splits.test:
        assert isinstance(text, str) and text and "<br" not in text and label in (0, 1)
    # Majority ('great') share of the test split, the baseline quoted in the toolchain notes: 0.658.
    assert Counter(label for _, label in splits.test)[1] == 658


def test_fine_foods_subsample_keeps_label_balance():
    full = data.load_text_classification("fine_foods")
    small = data.load_text_classification("fine_foods", n_train=300, n_test=100, seed=1)
    assert (len(small.train), len(small.test)) == (300, 100)
    full_share = np.mean([label for _, label in full.train])
    assert abs(np.mean([label for _, label in small.train]) - full_share) <= 1 / 300
    assert {text for text, _ in small.train} <= {text for text, _ in full.train}


def test_r_lazyload_reader_against_palmer_penguins():
    """Another object of the same database, checked against the published palmerpenguins counts."""
    data_dir = specs.debian_file("r-cran-modeldata", f"{MODELDATA_DIR}/Rdata.rdb").parent
    penguins = read_r_lazyload_object(data_dir, "penguins")
    assert penguins.shape == (344, 7)
    assert Counter(penguins["species"].astype(str)) == {"Adelie": 152, "Gentoo": 124, "Chinstrap": 68}


def test_unknown_dataset_names_are_rejected():
    with pytest.raises(ValueError, match="name must be one of"):
        data.load_text_classification("imdb")
    with pytest.raises(ValueError, match="name must be one of"):
        data.load_image_classification("mnist")


# ---------------------------------------------------------------- images
def _reference_idx(path, header_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as handle:  # the reader shipped with Fashion-MNIST: fixed offsets
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=header_bytes)


def test_fashion_mnist_sizes_pixels_and_balance():
    splits = data.load_image_classification("fashion_mnist")
    assert splits.train_images.shape == (60000, 1, 28, 28) and splits.test_images.shape == (10000, 1, 28, 28)
    assert splits.train_images.dtype == torch.uint8 and splits.train_labels.dtype == torch.int64  # compact
    assert torch.equal(torch.bincount(splits.train_labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(splits.test_labels), torch.full((10,), 1000))
    folder = specs.debian_file("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").parent
    pixels = _reference_idx(folder / "t10k-images-idx3-ubyte.gz", 16).reshape(10000, 28, 28)
    labels = _reference_idx(folder / "t10k-labels-idx1-ubyte.gz", 8)
    assert torch.equal(splits.test_images[:, 0], torch.from_numpy(pixels.copy()))
    assert np.array_equal(splits.test_labels.numpy(), labels)
    assert splits.label_names[9] == "Ankle boot"


def test_image_dtypes_hold_the_same_pixels_and_preprocess_identically():
    compact = data.load_image_classification("fashion_mnist", n_train=20, n_test=10, seed=3)
    floats = data.load_image_classification("fashion_mnist", n_train=20, n_test=10, seed=3, dtype=torch.float32)
    assert compact.train_images.dtype == torch.uint8 and floats.train_images.dtype == torch.float32
    assert float(floats.train_images.max()) <= 1.0
    assert torch.equal((floats.train_images * 255).round().to(torch.uint8), compact.train_images)
    preprocess = data.ImagePreprocessing(32, mean=(0.3, 0.3, 0.3), std=(0.4, 0.4, 0.4))
    assert torch.equal(preprocess(compact.train_images), preprocess(floats.train_images))  # bit for bit
    digits = data.load_image_classification("digits", n_train=30, n_test=10)
    assert digits.train_images.dtype == torch.float32  # 17 grey levels: not 8-bit, kept exact
    rounded = data.load_image_classification("digits", n_train=30, n_test=10, dtype=torch.uint8).train_images
    assert torch.equal(rounded, (digits.train_images * 255).round().to(torch.uint8))
    for bad in ("uint8", torch.float64):
        with pytest.raises(ValueError, match="dtype"):
            data.load_image_classification("digits", dtype=bad)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.int64))


def test_fashion_mnist_quick_subsample_is_balanced():
    splits = data.load_image_classification("fashion_mnist", n_train=500, n_test=100, seed=2)
    assert torch.equal(torch.bincount(splits.train_labels), torch.full((10,), 50))
    assert torch.equal(torch.bincount(splits.test_labels), torch.full((10,), 10))


def test_digits_split_covers_sklearn_digits():
    from sklearn.datasets import load_digits

    splits = data.load_image_classification("digits")
    assert splits.train_images.shape == (1437, 1, 8, 8) and splits.test_images.shape == (360, 1, 8, 8)
    together = torch.cat([splits.train_images, splits.test_images]).flatten(1).double() * 16
    reference = torch.from_numpy(load_digits().data)
    assert torch.equal(together.sum(0), reference.sum(0))  # same 1,797 images, split without loss
    assert float(together.max()) == 16.0 and float(together.min()) == 0.0
    counts = torch.bincount(splits.test_labels)
    assert int(counts.max() - counts.min()) <= 2


# ---------------------------------------------------------------- models
def _bert_parameter_count(config: dict, num_labels: int) -> int:
    """Closed form for BertForSequenceClassification: embeddings, layers, pooler, head."""
    h, ffn, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    embeddings = (config["vocab_size"] + config["max_position_embeddings"] + config["type_vocab_size"]) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * ffn + ffn) + (ffn * h + h) + 2 * h
    return embeddings + layers * layer + (h * h + h) + (h * num_labels + num_labels)


def test_minilm_loads_offline_with_its_pretrained_weights():
    config = json.loads((data.minilm_path() / "config.json").read_text())
    model = data.load_text_model("minilm", num_labels=2, seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) == _bert_parameter_count(config, 2)
    tokenizer = data.load_tokenizer("minilm")
    sentences = ["A man is playing a guitar.", "Someone plays the guitar.", "Interest rates rose sharply today."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        hidden = model.bert(**batch).last_hidden_state
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    mask = batch["attention_mask"].unsqueeze(-1)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    paraphrase, unrelated = float(embeddings[0] @ embeddings[1]), float(embeddings[0] @ embeddings[2])
    assert paraphrase > unrelated + 0.3  # a sentence-similarity model, not random weights


def test_model_seed_fixes_the_head_without_touching_global_randomness():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = data.load_text_model("minilm", num_labels=3, seed=7)
    assert torch.equal(torch.rand(1), before)
    second = data.load_text_model("minilm", num_labels=3, seed=7)
    third = data.load_text_model("minilm", num_labels=3, seed=8)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    assert not torch.equal(first.classifier.weight, third.classifier.weight)
    with pytest.raises(ValueError, match="num_labels"):
        data.load_text_model("minilm", num_labels=0)


def test_efficientnet_lite0_is_pretrained_and_classifies_fashion_mnist_batches():
    model = data.load_vision_model("efficientnet_lite0", num_labels=10, image_size=64, seed=0).eval()
    assert model._fc.out_features == 10
    assert not torch.allclose(model._bn0.running_var, torch.ones_like(model._bn0.running_var))  # ImageNet stats
    preprocess = data.vision_preprocessing("efficientnet_lite0", image_size=64)
    images = data.load_image_classification("fashion_mnist", n_train=10, n_test=10).train_images[:4]
    with torch.no_grad():
        logits = model(preprocess(images))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


def test_preprocessing_resizes_repeats_grey_and_normalises():
    preprocess = data.ImagePreprocessing(16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    grey = torch.full((2, 1, 8, 8), 0.75)
    out = preprocess(grey)
    assert out.shape == (2, 3, 16, 16)
    expected = torch.tensor([(0.75 - 0.5) / 0.5, (0.75 - 0.25) / 0.25, 0.75]).view(1, 3, 1, 1)
    assert torch.allclose(out, expected.expand_as(out))
    with pytest.raises(ValueError, match="images"):
        preprocess(torch.zeros(2, 2, 8, 8))


# ---------------------------------------------------------------- hub loaders offline
class _Session:
    """Stands in for huggingface_hub's HTTP session: records requests, answers or raises ``error``."""

    def __init__(self, error: Exception | None = None):
        self.error, self.requests = error, []

    def head(self, url, timeout=None):
        self.requests.append((url, timeout))
        if self.error is not None:
            raise self.error
        return object()


@pytest.fixture
def online(monkeypatch):
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)

    def no_sockets(*args, **kwargs):
        raise AssertionError("hub_reachable must ask the Hugging Face client, not open a socket")

    import socket

    monkeypatch.setattr(socket, "create_connection", no_sockets)


def test_hub_reachable_asks_the_hugging_face_session(online, monkeypatch):
    import httpx2
    import huggingface_hub.utils

    from huggingface_hub import constants

    answering = _Session()
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: answering)
    assert specs.hub_reachable(timeout_s=1.5)
    assert answering.requests == [(constants.ENDPOINT, 1.5)]
    for error in (httpx2.ConnectError("refused"), httpx2.ProxyError("407"), httpx2.ConnectTimeout("slow"),
                  ConnectionError("offline mode")):
        monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda error=error: _Session(error))
        assert not specs.hub_reachable()
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: _Session(KeyError("a bug, not an outage")))
    with pytest.raises(KeyError):
        specs.hub_reachable()
    untouched = _Session()
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: untouched)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not specs.hub_reachable() and untouched.requests == []


def test_hub_reachable_goes_through_the_proxy_in_the_environment(tmp_path):
    """A hub host that does not resolve, reachable only through HTTP_PROXY: the client must use the proxy."""
    import http.server
    import threading

    seen = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        environment = {key: value for key, value in os.environ.items() if "PROXY" not in key.upper() and not key.startswith("HF_")}
        environment.update(HF_ENDPOINT="http://hub.invalid", HTTP_PROXY=f"http://127.0.0.1:{server.server_port}",
                           HF_HOME=str(tmp_path), NO_PROXY="")
        code = "from aurora.data import specs\nprint('reachable', specs.hub_reachable(timeout_s=5))"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=environment)
    finally:
        server.shutdown()
    assert "reachable True" in result.stdout, result.stderr[-2000:]
    assert seen and seen[0].startswith("http://hub.invalid")


def test_a_hub_set_with_a_loading_script_names_the_set_and_an_alternative(online, monkeypatch):
    import datasets

    monkeypatch.setattr(specs, "hub_reachable", lambda timeout_s=3.0: True)
    calls = []

    def load_dataset(path, name=None, revision=None):
        calls.append((path, name, revision))
        raise RuntimeError(f"Dataset scripts are no longer supported, but found {path.split('/')[-1]}.py")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(data.HubDatasetScriptError) as raised:
        data.load_image_classification("dtd", n_train=10)
    message = str(raised.value)
    assert "'dtd'" in message and "tanganke/dtd" in message and "loading script" in message
    assert data.PARQUET_EXPORT in message and "HUB_IMAGE_SETS['dtd']" in message
    assert isinstance(raised.value, data.HubDataError) and calls == [("tanganke/dtd", None, None)]
    with pytest.raises(data.HubDatasetScriptError, match="glue/rte|'rte'"):
        data.load_text_classification("glue/rte")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full") as other:
        data.load_image_classification("dtd", n_train=10)
    assert not isinstance(other.value, data.HubDataError)  # other failures are not disguised


@pytest.fixture
def unreachable_hub(monkeypatch):
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setattr(specs, "hub_reachable", lambda timeout_s=3.0: False)


@pytest.mark.parametrize("load, substitute", [
    (lambda: data.load_text_classification("glue/cola", n_train=10), "fine_foods"),
    (lambda: data.load_image_classification("dtd", n_train=10), "fashion_mnist"),
    (lambda: data.load_text_model("roberta-base", num_labels=2), "minilm"),
    (lambda: data.load_vision_model("google/vit-base-patch16-224-in21k", num_labels=47), "efficientnet_lite0"),
])
def test_hub_loaders_fail_fast_with_the_offline_substitute(unreachable_hub, load, substitute):
    started = time.perf_counter()
    with pytest.raises(data.HubUnavailableError, match="needs the internet") as raised:
        load()
    assert substitute in str(raised.value)
    assert time.perf_counter() - started < 10  # no library retry loop


def test_hub_loader_with_hf_hub_offline_reports_the_documented_error(tmp_path):
    code = (
        "import aurora.data as d\n"
        "try:\n    d.load_text_classification('glue/rte')\n"
        "except d.HubUnavailableError as e:\n    print('HubUnavailableError:', e)\n"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environment)
    assert "HubUnavailableError:" in result.stdout, result.stderr[-2000:]
    assert "needs the internet" in result.stdout and "fine_foods" in result.stdout


def test_offline_items_document_what_they_stand_in_for():
    for name in ("fine_foods", "fashion_mnist"):
        assert data.DATASETS[name].offline and data.DATASETS[name].stands_in_for
    assert data.MODELS["minilm"].stands_in_for.startswith("RoBERTa")
    assert not data.DATASETS["glue/sst2"].offline and not data.DATASETS["cifar100"].offline
