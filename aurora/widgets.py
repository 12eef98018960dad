"""Sliders that keep working in the static HTML book.

A slider that calls Python does nothing once the notebook has been rendered to HTML: there is no
kernel behind the page. :func:`frame_slider` and :func:`frame_slider_2d` therefore render one
matplotlib figure per slider position *while the notebook runs*, store the frames as PNG images in
an ``ipywidgets.Stack``, and link the slider to the stack in JavaScript (``jslink``). The browser
then switches frames without any Python. The widget state is saved into the executed notebook and
rendered by the vendored ``@jupyter-widgets/html-manager`` (see ``book/README.md``).

:func:`live_explorer` is the opposite trade-off: ``ipywidgets.interact`` sliders that recompute on
every move, for people running the notebook in Jupyter. In the static book build (environment
variable ``AURORA_BOOK_STATIC=1``, set by ``scripts/build_book.py``) or outside a kernel it only
prints a note, so the book never shows dead sliders.

Chapter: ``book/anl_explorer.md`` (the ANL explorer) uses all three.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import ipywidgets
import matplotlib.pyplot as plt
from IPython import get_ipython
from IPython.display import display
from matplotlib.figure import Figure

__all__ = [
    "STATIC_BUILD_ENV",
    "figure_to_png",
    "frame_slider",
    "frame_slider_2d",
    "live_explorer",
]

STATIC_BUILD_ENV = "AURORA_BOOK_STATIC"
"""Environment variable that ``scripts/build_book.py`` sets to ``1`` for the notebooks it runs."""

FRAME_SLIDER_CLASS = "aurora-frame-slider"
"""CSS class on every precomputed-frame slider box (the browser test looks for it)."""

SLIDER_CAPTION_CLASS = "aurora-slider-caption"
"""CSS class of the caption under a slider's figure (the book's figures all carry one)."""

LIVE_EXPLORER_NOTE = (
    "Live sliders appear here when you run this notebook in Jupyter; "
    "the precomputed sliders above also work in the static page."
)

Value = TypeVar("Value")
Value2 = TypeVar("Value2")


def figure_to_png(figure: Figure, dpi: int = 80) -> bytes:
    """Render ``figure`` to PNG bytes and close it (so notebooks do not also display it)."""
    if dpi <= 0:
        raise ValueError(f"dpi must be a positive integer, got {dpi!r}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _labels(values: Sequence[Any], format_value: Callable[[Any], str] | None) -> list[str]:
    formatter = format_value if format_value is not None else str
    labels = [formatter(value) for value in values]
    if len(set(labels)) != len(labels):
        raise ValueError(
            f"format_value must give distinct labels for distinct slider values, got {labels!r}"
        )
    return labels


def _check_values(values: Sequence[Any], name: str) -> None:
    if isinstance(values, (str, bytes)) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of slider values, got {values!r}")


def _initial_index(values: Sequence[Any], initial: Any | None, name: str) -> int:
    if initial is None:
        return 0
    for index, value in enumerate(values):
        if value == initial:
            return index
    raise ValueError(f"{name} must be one of the slider values {list(values)!r}, got {initial!r}")


def _selection_slider(
    labels: list[str], index: int, description: str, description_width: str = "initial"
) -> ipywidgets.SelectionSlider:
    return ipywidgets.SelectionSlider(
        options=[(label, position) for position, label in enumerate(labels)],
        index=index,
        description=description,
        continuous_update=True,
        style={"description_width": description_width},
        layout=ipywidgets.Layout(width="min(640px, 100%)"),
    )


def _caption(caption: str) -> ipywidgets.HTML:
    """The caption under a slider's frames: plain text (HTML-escaped), like a figure's figcaption."""
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError(f"caption must be a non-empty string saying what to look at; got {caption!r}")
    label = ipywidgets.HTML(value=f"<p>{html.escape(caption.strip())}</p>")
    label.add_class(SLIDER_CAPTION_CLASS)
    return label


def _image(png: bytes) -> ipywidgets.Image:
    return ipywidgets.Image(value=png, format="png", layout=ipywidgets.Layout(max_width="100%"))


def frame_slider(
    render: Callable[[Value], Figure],
    values: Sequence[Value],
    description: str,
    *,
    caption: str,
    initial: Value | None = None,
    format_value: Callable[[Value], str] | None = None,
    dpi: int = 80,
) -> ipywidgets.VBox:
    """A slider over ``values`` that switches between precomputed figures, also in static HTML.

    ``render(value)`` must return a new matplotlib figure; it is called once per value now.
    ``caption`` is shown under the figure (what to look at, as for every figure of the book).
    ``format_value`` turns a value into its slider label (default ``str``).
    Returns a ``VBox(slider, Stack(images), caption)`` whose slider index is ``jslink``-ed to the stack.
    """
    caption_widget = _caption(caption)
    _check_values(values, "values")
    labels = _labels(values, format_value)
    index = _initial_index(values, initial, "initial")
    stack = ipywidgets.Stack(
        children=[_image(figure_to_png(render(value), dpi)) for value in values],
        selected_index=index,
    )
    slider = _selection_slider(labels, index, description)
    ipywidgets.jslink((slider, "index"), (stack, "selected_index"))
    box = ipywidgets.VBox([slider, stack, caption_widget])
    box.add_class(FRAME_SLIDER_CLASS)
    return box


def frame_slider_2d(
    render: Callable[[Value, Value2], Figure],
    values: Sequence[Value],
    values2: Sequence[Value2],
    description: str,
    description2: str,
    *,
    caption: str,
    initial: Value | None = None,
    initial2: Value2 | None = None,
    format_value: Callable[[Value], str] | None = None,
    format_value2: Callable[[Value2], str] | None = None,
    dpi: int = 80,
) -> ipywidgets.VBox:
    """Two sliders over a grid of precomputed figures ``render(value, value2)``.

    ``len(values) * len(values2)`` figures are rendered now. The first slider selects a row of an
    outer ``Stack``; each row is an inner ``Stack`` over ``values2`` whose index is linked to the
    second slider, so both sliders work in the browser without arithmetic in JavaScript.
    ``caption`` is shown under the figure.
    """
    caption_widget = _caption(caption)
    _check_values(values, "values")
    _check_values(values2, "values2")
    labels = _labels(values, format_value)
    labels2 = _labels(values2, format_value2)
    index = _initial_index(values, initial, "initial")
    index2 = _initial_index(values2, initial2, "initial2")
    aligned_width = f"{max(len(description), len(description2)) + 1}ch"  # both tracks start together
    slider = _selection_slider(labels, index, description, aligned_width)
    slider2 = _selection_slider(labels2, index2, description2, aligned_width)
    rows = []
    for value in values:
        row = ipywidgets.Stack(
            children=[_image(figure_to_png(render(value, value2), dpi)) for value2 in values2],
            selected_index=index2,
        )
        ipywidgets.jslink((slider2, "index"), (row, "selected_index"))
        rows.append(row)
    stack = ipywidgets.Stack(children=rows, selected_index=index)
    ipywidgets.jslink((slider, "index"), (stack, "selected_index"))
    box = ipywidgets.VBox([slider, slider2, stack, caption_widget])
    box.add_class(FRAME_SLIDER_CLASS)
    return box


def kernel_is_live() -> bool:
    """True inside a Jupyter kernel that is not a static book build (see ``STATIC_BUILD_ENV``)."""
    shell = get_ipython()
    in_kernel = shell is not None and getattr(shell, "kernel", None) is not None
    return in_kernel and os.environ.get(STATIC_BUILD_ENV) != "1"


def live_explorer(
    render: Callable[..., Figure], **controls: ipywidgets.ValueWidget | Sequence[Hashable]
) -> ipywidgets.interactive | None:
    """``ipywidgets.interact`` sliders that call ``render(**values)`` on every move.

    ``controls`` are whatever ``interact`` accepts (a widget, a ``(min, max, step)`` tuple, a list
    of options). Only a live kernel can answer these sliders: in the static book build or outside
    Jupyter this prints a note instead and returns ``None``.
    """
    if not controls:
        raise ValueError("live_explorer needs at least one control, e.g. scale=(0.1, 3.0, 0.1)")
    if not kernel_is_live():
        print(LIVE_EXPLORER_NOTE)
        return None

    def show(**values: Any) -> None:
        figure = render(**values)
        display(figure)
        plt.close(figure)

    explorer = ipywidgets.interactive(show, **controls)
    display(explorer)
    return explorer
