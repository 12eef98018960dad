"""Sphinx extension of the aurora book: a ".md" entry in each chapter's download menu, author-year labels.

``scripts/build_book.py`` stages every executed chapter as ``book/<name>.ipynb`` (so the theme's
download menu offers the executed ``.ipynb``) and puts the chapter's MyST source in
``_markdown_sources/book/<name>.md``, which Sphinx does not parse. This extension adds a ``.md``
button next to ``.ipynb`` and copies those sources to ``_sources/`` in the HTML output.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

MARKDOWN_SOURCES_DIR = "_markdown_sources"  # same name as scripts/build_book.py


def _markdown_source(app, pagename: str) -> Path:
    return Path(app.srcdir) / MARKDOWN_SOURCES_DIR / f"{pagename}.md"


def add_markdown_download(app, pagename, templatename, context, doctree) -> None:
    if not _markdown_source(app, pagename).exists():
        return
    for button in context.get("header_buttons", []):
        if button.get("label") == "download-buttons":
            position = next((i + 1 for i, b in enumerate(button["buttons"]) if b.get("text") == ".ipynb"), 0)
            button["buttons"].insert(position, {
                "type": "link",
                "url": f"{context['pathto']('_sources', 1)}/{pagename}.md",
                "text": ".md",
                "tooltip": "Download the chapter's MyST-markdown source",
                "icon": "fas fa-file-lines",
                "label": "download-markdown-button",
            })


def copy_markdown_sources(app, exception) -> None:
    source_dir = Path(app.srcdir) / MARKDOWN_SOURCES_DIR
    if exception is not None or app.builder.format != "html" or not source_dir.is_dir():
        return
    shutil.copytree(source_dir, Path(app.outdir) / "_sources", dirs_exist_ok=True)


class AuthorYearLabels(BaseLabelStyle):
    """Bibliography labels as the text cites them ({cite:p} with ``bibtex_reference_style: author_year``):
    "Hu et al., 2022", "Eckart and Young, 1936", "Wightman, 2019"."""

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = [" ".join(person.prelast_names + person.last_names) for person in people]
            names = [name.replace("{", "").replace("}", "") for name in names]
            who = names[0] if len(names) == 1 else f"{names[0]} and {names[1]}" if len(names) == 2 else f"{names[0]} et al."
            yield f"{who or entry.key}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(PlainStyle):
    """pybtex's plain style with :class:`AuthorYearLabels` (``bibtex_default_style: authoryear``)."""

    default_label_style = AuthorYearLabels


register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app):
    app.connect("html-page-context", add_markdown_download, priority=600)  # after the theme's buttons (501)
    app.connect("build-finished", copy_markdown_sources)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
