"""Jane Austen passages -> novel: a 6-way offline text classification set with thousands of test passages.

Source: Debian ``r-cran-janeaustenr`` 1.0.0 (MIT, Julia Silge), the R package's lazy-load database
of the six completed novels, one character vector of text lines per novel (read with
:func:`aurora.data.text.read_r_lazyload_object`). A *passage* is a paragraph (lines between blank
lines, joined by spaces) of at least :data:`MIN_WORDS` words, which drops chapter headings and
titles: 9,112 passages. A fixed split (seed 0, stratified by novel) puts a third of them in the test
split (3,038 passages) and the rest in train (6,074); ``n_train``/``n_test`` subsample those.
Adjacent paragraphs of a novel can fall into different splits (as in the usual random splits of
authorship tasks), so the test measures recognising a novel's style and names, not new authors.
"""

from __future__ import annotations

import functools

import numpy as np

from .specs import JANE_AUSTEN, debian_file, subsample_indices
from .text import TextSplits, read_r_lazyload_object

JANEAUSTENR_DIR = "usr/lib/R/site-library/janeaustenr/data"
# (R object name, title), in publication order; the label is the position here
NOVELS: tuple[tuple[str, str], ...] = (
    ("sensesensibility", "Sense & Sensibility"),
    ("prideprejudice", "Pride & Prejudice"),
    ("mansfieldpark", "Mansfield Park"),
    ("emma", "Emma"),
    ("northangerabbey", "Northanger Abbey"),
    ("persuasion", "Persuasion"),
)
MIN_WORDS = 10
TEST_FRACTION = 1 / 3


def paragraphs(lines: np.ndarray) -> list[str]:
    """Lines grouped into paragraphs at blank lines, whitespace runs collapsed to single spaces."""
    result, current = [], []
    for line in [*map(str, lines), ""]:
        line = line.strip()
        if line:
            current.append(line)
        elif current:
            result.append(" ".join(" ".join(current).split()))
            current = []
    return result


@functools.lru_cache(maxsize=1)
def _passages() -> tuple[tuple[str, ...], np.ndarray]:
    data_dir = debian_file("r-cran-janeaustenr", f"{JANEAUSTENR_DIR}/Rdata.rdb").parent
    texts, labels = [], []
    for label, (name, _) in enumerate(NOVELS):
        kept = [p for p in paragraphs(read_r_lazyload_object(data_dir, name)) if len(p.split()) >= MIN_WORDS]
        texts.extend(kept)
        labels.extend([label] * len(kept))
    return tuple(texts), np.asarray(labels, dtype=np.int64)


def _fixed_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: per novel, a seed-0 random third goes to test."""
    generator = np.random.default_rng(0)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test.append(generator.choice(members, size=round(len(members) * TEST_FRACTION), replace=False))
    test_indices = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_indices), test_indices


def load_austen(n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> TextSplits:
    """Train/test ``(passage, novel)`` examples; ``n_train``/``n_test`` draw novel-stratified subsamples with ``seed``."""
    texts, labels = _passages()
    result = []
    for indices, count, parameter in zip(_fixed_split(labels), (n_train, n_test), ("n_train", "n_test")):
        chosen = indices[subsample_indices(labels[indices], count, seed, stratify=True, parameter=parameter)]
        result.append([(texts[i], int(labels[i])) for i in chosen])
    return TextSplits(result[0], result[1], tuple(title for _, title in NOVELS), JANE_AUSTEN)
