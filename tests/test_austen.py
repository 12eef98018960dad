"""The offline Jane Austen passages set (aurora.data.austen, Debian r-cran-janeaustenr)."""

from collections import Counter

import numpy as np
import pytest

from aurora import data
from aurora.data import austen


@pytest.fixture(scope="module")
def splits():
    try:
        return data.load_text_classification("austen")
    except FileNotFoundError as error:
        pytest.skip(str(error))


def test_six_novels_thousands_of_test_passages_disjoint_splits(splits):
    assert splits.label_names == tuple(title for _, title in austen.NOVELS) and len(splits.label_names) == 6
    assert (len(splits.train), len(splits.test)) == (data.DATASETS["austen"].train_size, data.DATASETS["austen"].test_size)
    assert len(splits.test) > 3000
    assert len(set(splits.train) & set(splits.test)) == 0
    train_counts, test_counts = Counter(y for _, y in splits.train), Counter(y for _, y in splits.test)
    for label in range(6):  # a third of each novel's passages is in test
        assert test_counts[label] / (train_counts[label] + test_counts[label]) == pytest.approx(1 / 3, abs=1e-3)


def test_passages_are_paragraphs_of_the_novels(splits):
    examples = splits.train + splits.test
    first = next(label for text, label in examples if text.startswith("It is a truth universally acknowledged"))
    assert splits.label_names[first] == "Pride & Prejudice"
    assert all(len(text.split()) >= austen.MIN_WORDS and "  " not in text for text, _ in examples)
    assert austen.paragraphs(np.array(["a b", "c", "", "", "d", ""])) == ["a b c", "d"]


def test_subsample_is_stratified_and_seeded(splits):
    small = data.load_text_classification("austen", 600, 300, seed=3)
    assert (len(small.train), len(small.test)) == (600, 300)
    assert set(small.test) <= set(splits.test)
    assert small.test == data.load_text_classification("austen", 600, 300, seed=3).test
    with pytest.raises(ValueError, match="n_test"):
        data.load_text_classification("austen", 10, 10**6)
