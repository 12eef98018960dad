"""aurora.widgets: precomputed-frame sliders (checked by decoding their PNG frames) and the live explorer.

Whether the sliders actually switch frames in a browser is checked in tests/test_browser.py.
"""

from __future__ import annotations

import io

import ipywidgets
import matplotlib

matplotlib.use("agg")  # before pyplot: tests never open windows

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
from ipywidgets.widgets.widget import _instances as live_widgets
from ipywidgets.widgets.widget_link import Link

from aurora import widgets

COLORS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 0.5, 0.0), "blue": (0.0, 0.0, 1.0), "grey": (0.5, 0.5, 0.5)}


def solid_figure(color: tuple[float, float, float]) -> plt.Figure:
    """A pyplot figure whose centre pixel has exactly ``color``."""
    figure = plt.figure(figsize=(1.0, 0.8))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_facecolor(color)
    axes.set_xticks([])
    axes.set_yticks([])
    return figure


def centre_colour(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(io.BytesIO(png))
    return pixels[pixels.shape[0] // 2, pixels.shape[1] // 2, :3]


def links_between(source: ipywidgets.Widget, target: ipywidgets.Widget) -> list[Link]:
    return [
        widget for widget in list(live_widgets.values())
        if isinstance(widget, Link) and widget.source[0] is source and widget.target[0] is target
    ]


def test_figure_to_png_renders_at_dpi_and_closes_the_figure():
    plt.close("all")
    png = widgets.figure_to_png(solid_figure(COLORS["red"]), dpi=50)
    height, width = matplotlib.image.imread(io.BytesIO(png)).shape[:2]
    # the axes fill the 1.0 x 0.8 inch figure; the tight bounding box adds 0.1 inch on every side
    assert (width, height) == (round(1.2 * 50), round(1.0 * 50))
    assert plt.get_fignums() == []
    with pytest.raises(ValueError, match="dpi"):
        widgets.figure_to_png(plt.figure(), dpi=0)


def test_frame_slider_holds_one_frame_per_value_in_order_and_links_index_to_stack():
    plt.close("all")
    names = ["red", "green", "blue"]
    box = widgets.frame_slider(lambda name: solid_figure(COLORS[name]), names, "colour", initial="green",
                               caption="Colours <by> name")
    slider, stack, caption = box.children
    assert widgets.SLIDER_CAPTION_CLASS in caption._dom_classes
    assert caption.value == "<p>Colours &lt;by&gt; name</p>", "captions are text, escaped"
    assert widgets.FRAME_SLIDER_CLASS in box._dom_classes
    assert [label for label, _ in slider.options] == names
    assert slider.index == 1 and stack.selected_index == 1
    assert len(stack.children) == 3
    for name, image in zip(names, stack.children):
        assert image.format == "png"
        np.testing.assert_allclose(centre_colour(image.value), COLORS[name], atol=1 / 255)
    assert len(links_between(slider, stack)) == 1
    assert links_between(slider, stack)[0].source[1] == "index"
    assert links_between(slider, stack)[0].target[1] == "selected_index"
    assert plt.get_fignums() == [], "frames must not stay open (they would also be shown as plain outputs)"


def test_frame_slider_2d_grid_matches_both_values():
    plt.close("all")
    rows, columns = ["red", "blue"], [0.0, 0.5, 1.0]

    def render(name: str, brightness: float) -> plt.Figure:
        return solid_figure(tuple(brightness * channel for channel in COLORS[name]))

    box = widgets.frame_slider_2d(
        render, rows, columns, "colour", "brightness", initial2=0.5, format_value2=lambda v: f"{v:.1f}",
        caption="Brightness rises to the right.",
    )
    slider, slider2, stack, caption = box.children
    assert "Brightness rises" in caption.value
    assert slider.index == 0 and slider2.index == 1
    assert slider.style.description_width == slider2.style.description_width, "tracks start together"
    assert [label for label, _ in slider2.options] == ["0.0", "0.5", "1.0"]
    assert len(stack.children) == 2
    for name, row in zip(rows, stack.children):
        assert row.selected_index == 1
        assert len(links_between(slider2, row)) == 1
        for brightness, image in zip(columns, row.children):
            expected = [brightness * channel for channel in COLORS[name]]
            np.testing.assert_allclose(centre_colour(image.value), expected, atol=1.5 / 255)
    assert len(links_between(slider, stack)) == 1


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(values=[]), "values must be a non-empty sequence"),
        (dict(values="abc"), "values must be a non-empty sequence"),
        (dict(values=[1, 2], initial=3), "initial must be one of"),
        (dict(values=[0.10, 0.11], format_value=lambda v: f"{v:.1f}"), "distinct labels"),
        (dict(values=[1, 2], caption="  "), "caption must be a non-empty string"),
    ],
)
def test_frame_slider_rejects_bad_input(arguments, message):
    arguments = {"caption": "A caption.", **arguments}
    with pytest.raises(ValueError, match=message):
        widgets.frame_slider(lambda value: solid_figure(COLORS["grey"]), description="x", **arguments)
    plt.close("all")


def test_live_explorer_is_a_note_in_the_static_build_and_outside_a_kernel(monkeypatch, capsys):
    calls = []
    monkeypatch.delenv(widgets.STATIC_BUILD_ENV, raising=False)
    assert widgets.live_explorer(lambda scale: calls.append(scale), scale=(0.0, 1.0, 0.5)) is None
    monkeypatch.setattr(widgets, "get_ipython", lambda: type("Shell", (), {"kernel": object()})())
    monkeypatch.setenv(widgets.STATIC_BUILD_ENV, "1")
    assert widgets.live_explorer(lambda scale: calls.append(scale), scale=(0.0, 1.0, 0.5)) is None
    assert calls == [], "no figure is rendered when nobody can move the sliders"
    assert "Live sliders appear here" in capsys.readouterr().out
    with pytest.raises(ValueError, match="at least one control"):
        widgets.live_explorer(lambda: None)


def test_live_explorer_recomputes_on_every_slider_move(monkeypatch):
    plt.close("all")
    monkeypatch.delenv(widgets.STATIC_BUILD_ENV, raising=False)
    monkeypatch.setattr(widgets, "get_ipython", lambda: type("Shell", (), {"kernel": object()})())
    seen = []

    def render(name: str, scale: float) -> plt.Figure:
        seen.append((name, scale))
        return solid_figure(COLORS[name])

    explorer = widgets.live_explorer(render, name=["red", "blue"], scale=(0.0, 2.0, 0.5))
    assert isinstance(explorer, ipywidgets.interactive)
    name_widget, scale_widget = explorer.kwargs_widgets
    scale_widget.value = 1.5
    name_widget.value = "blue"
    assert seen == [("red", 1.0), ("red", 1.5), ("blue", 1.5)]
    assert plt.get_fignums() == []
