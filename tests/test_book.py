"""The book's table of contents, its chapters' papermill parameters, and scripts/build_book.py."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jupytext
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build_book.py"


def load_build_module():
    spec = importlib.util.spec_from_file_location("build_book", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_book"] = module  # dataclasses look their module up here
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


build_book = load_build_module()
TOC = yaml.safe_load((REPO / "_toc.yml").read_text())
CHAPTER_ENTRIES = build_book.toc_entries(TOC)
NOTEBOOK_ENTRIES = [entry for entry in CHAPTER_ENTRIES if build_book.Chapter(entry, REPO).is_notebook]


def parameters_cell_values(path: Path) -> dict[str, object]:
    """Literal assignments in the chapter's code cell tagged ``parameters``."""
    notebook = jupytext.read(path)
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            f"{path.name}: the parameters cell may only hold simple assignments (papermill overrides them)"
        )
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_toc_lists_existing_chapters_and_every_chapter_is_listed():
    assert TOC["format"] == "jb-book"
    listed = {REPO / f"{entry}.md" for entry in CHAPTER_ENTRIES}
    assert [path for path in listed if not path.exists()] == []
    on_disk = {path for path in (REPO / "book").glob("*.md") if path.name != "README.md"}
    assert sorted(map(str, on_disk - listed)) == [], "chapters in book/ missing from _toc.yml are never built"
    assert len(CHAPTER_ENTRIES) == len(set(CHAPTER_ENTRIES)), "a chapter is listed twice in _toc.yml"


@pytest.mark.parametrize("entry", NOTEBOOK_ENTRIES)
def test_chapter_has_quick_and_device_parameters(entry):
    values = parameters_cell_values(REPO / f"{entry}.md")
    assert values.get("quick") is True, "chapters default to quick = True (the CPU book build)"
    assert isinstance(values.get("device"), str), 'chapters define device = "cpu" (papermill may override it)'


def test_config_renders_with_vendored_javascript_only():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    sphinx = config["sphinx"]["config"]
    scripts = list(sphinx["nb_ipywidgets_js"]) + [sphinx["mathjax_path"]]
    assert [script for script in scripts if "://" in script] == []
    vendored = {destination for _, destination, _ in build_book.VENDORED_FILES}
    for script in scripts:
        if script.startswith("vendor/"):
            assert script.removeprefix("vendor/") in vendored
        else:
            assert (REPO / "book" / "_static" / script).exists()
    assert not (REPO / "_static").exists(), "Jupyter Book would inject every .js under a top-level _static"


def test_toc_entries_walk_nested_sections_and_parts():
    toc = {
        "format": "jb-book", "root": "book/intro",
        "parts": [{"caption": "P", "chapters": [{"file": "book/a", "sections": [{"file": "book/b.md"}]}]}],
    }
    assert build_book.toc_entries(toc) == ["book/intro", "book/a", "book/b"]
    pruned = build_book.filtered_toc(toc, {"book/intro", "book/a"})
    assert pruned["parts"] == [{"caption": "P", "chapters": [{"file": "book/a"}]}]
    # a section cannot be built without its chapter, and an empty part disappears
    assert "parts" not in build_book.filtered_toc(toc, {"book/intro", "book/b"})


MINI_CHAPTER = textwrap.dedent(
    """\
    ---
    jupytext:
      text_representation: {{extension: .md, format_name: myst}}
    kernelspec: {{display_name: Python 3, language: python, name: python3}}
    ---

    # {title}

    The identity $e^{{i\\pi}} + 1 = 0$.

    ```{{code-cell}} ipython3
    :tags: [parameters]
    quick = True
    device = "cpu"
    ```

    ```{{code-cell}} ipython3
    import os
    print("quick is", quick, "static build", os.environ.get("AURORA_BOOK_STATIC"))
    print("results say:", os.environ.get("AURORA_RESULT_COMMAND"))
    {body}
    ```
    """
)


def write_mini_book(root: Path, chapters: dict[str, str]) -> None:
    (root / "book").mkdir(parents=True)
    for name, body in chapters.items():
        (root / "book" / f"{name}.md").write_text(MINI_CHAPTER.format(title=name.title(), body=body))
    names = list(chapters)
    toc = {"format": "jb-book", "root": f"book/{names[0]}", "chapters": [{"file": f"book/{n}"} for n in names[1:]]}
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    (root / "_config.yml").write_text((REPO / "_config.yml").read_text())
    (root / "book" / "_static").mkdir()
    (root / "book" / "_static" / "widgets_config.js").write_text(
        (REPO / "book" / "_static" / "widgets_config.js").read_text()
    )
    shutil.copytree(REPO / "book" / "_ext", root / "book" / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "book" / "references.bib", root / "book" / "references.bib")


def run_build(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), *arguments], capture_output=True, text=True, timeout=600
    )


def test_build_script_reports_the_failing_chapter_and_cell(tmp_path):
    write_mini_book(tmp_path, {"intro": "", "broken": "raise ValueError('deliberate failure 8214')"})
    result = run_build("--root", str(tmp_path), "--no-html", "--full")
    assert result.returncode == 1
    assert "chapter 'broken' (book/broken.md) failed" in result.stderr
    assert "deliberate failure 8214" in result.stderr
    assert "1 chapter(s) failed: broken" in result.stderr
    executed_intro = json.loads((tmp_path / "build" / "executed" / "intro.ipynb").read_text())
    assert executed_intro["metadata"]["papermill"]["parameters"]["quick"] is False
    printed = "".join(executed_intro["cells"][-1]["outputs"][0]["text"])
    assert printed.splitlines() == [
        "quick is False static build 1", "results say: python scripts/build_book.py --full --chapters intro"
    ]


def test_build_script_rejects_chapter_without_parameters_cell(tmp_path):
    write_mini_book(tmp_path, {"intro": ""})
    source = tmp_path / "book" / "intro.md"
    source.write_text(source.read_text().replace(":tags: [parameters]\n", ""))
    result = run_build("--root", str(tmp_path), "--no-html")
    assert result.returncode == 1
    assert "has no code cell tagged 'parameters'" in result.stderr


@pytest.mark.skipif(not (REPO / "node_modules").is_dir(), reason="needs `npm ci` (make setup-book)")
def test_build_script_renders_a_real_chapter_end_to_end(tmp_path):
    output = tmp_path / "out"
    result = run_build("--chapters", "intro", "--executed-dir", str(tmp_path / "executed"), "--output", str(output))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    page = (output / "html" / "book" / "intro.html").read_text()
    assert "Values this page was built with" in page
    external = re.findall(r"""<(?:script|link|img)[^>]+(?:src|href)=["'](https?://[^"']+)""", page)
    assert external == [], "the rendered page must not load anything from the internet"
    assert (output / "html" / "_static" / "vendor" / "mathjax" / "tex-chtml.js").exists()
    # chapters not executed in this run are left out of the book instead of failing it, and the
    # intro's link to one of them is not checked in such a partial build
    assert not (output / "html" / "book" / "anl_explorer.html").exists()
    static_pages = sum(not build_book.Chapter(entry, REPO).is_notebook for entry in CHAPTER_ENTRIES)
    assert f"partial book ({1 + static_pages} of {len(CHAPTER_ENTRIES)} chapters)" in result.stdout


@pytest.mark.skipif(not (REPO / "node_modules").is_dir(), reason="needs `npm ci` (make setup-book)")
def test_build_script_fails_on_any_sphinx_warning(tmp_path):
    write_mini_book(tmp_path, {"intro": ""})
    source = tmp_path / "book" / "intro.md"
    source.write_text(source.read_text() + "\nSee {doc}`no_such_chapter`.\n")
    result = run_build("--root", str(tmp_path))
    assert result.returncode == 1
    assert "unknown document: 'no_such_chapter'" in result.stdout + result.stderr
    assert "jupyter-book build failed" in result.stderr
    assert not (tmp_path / "_build" / "html").exists()


def test_build_script_and_package_agree_on_environment_names():
    import aurora.results
    import aurora.widgets

    assert build_book.STATIC_BUILD_ENV == aurora.widgets.STATIC_BUILD_ENV
    assert build_book.RESULT_COMMAND_ENV == aurora.results.COMMAND_ENV


def test_status_page_lists_every_chapter_with_mode_time_device_and_commit(tmp_path):
    write_mini_book(tmp_path, {"intro": "", "second": "", "never_run": ""})
    (tmp_path / "book" / "notes.md").write_text("# Notes\n\nA page without code.\n")
    executed = tmp_path / "executed"
    executed.mkdir()
    for name, duration, device in [("intro", 3.2, None), ("second", 754.0, "cuda")]:
        parameters = {"quick": name == "intro"} | ({"device": device} if device else {})
        notebook = {"cells": [], "metadata": {
            "papermill": {"parameters": parameters, "duration": duration, "start_time": "2026-11-30T10:11:12.5"},
            build_book.BUILD_METADATA_KEY: {"commit": "0123456789abcdef", "dirty": name == "second",
                                            "command": f"python scripts/build_book.py --chapters {name}",
                                            "host": "CPU: x86_64, 2 cores"},
        }}
        (executed / f"{name}.ipynb").write_text(json.dumps(notebook))
    results = tmp_path / "results" / "gradients"
    results.mkdir(parents=True)
    (results / "provenance.json").write_text(json.dumps({
        "command": "python -m aurora.experiments.gradients --quick", "git_commit": "fedcba9876543210",
        "device_description": "CPU: x86_64, 2 torch threads", "created_utc": "2026-11-25T15:07:44+00:00",
        "wall_time_s": 2.08,
    }))
    chapters = [build_book.Chapter(entry, tmp_path) for entry in
                ["book/intro", "book/second", "book/never_run", "book/notes"]]
    text = build_book.execution_status(chapters, executed, tmp_path / "results")
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in text.splitlines() if line.startswith("| {doc}")}
    assert list(rows) == ["{doc}`intro`", "{doc}`second`", "{doc}`never_run`", "{doc}`notes`"]
    assert rows["{doc}`intro`"] == "| {doc}`intro` | quick | CPU: x86_64, 2 cores | 3 s | 2026-11-30 10:11 | `0123456` |"
    assert "| full | cuda: CPU: x86_64, 2 cores | 12.6 min |" in rows["{doc}`second`"]
    assert "`0123456` + uncommitted changes" in rows["{doc}`second`"]
    assert "not executed in this build" in rows["{doc}`never_run`"]
    assert "plain page" in rows["{doc}`notes`"]
    assert "Execution time of the 2 executed chapters together: 12.6 min." in text
    assert ("| `gradients` | `python -m aurora.experiments.gradients --quick` | CPU: x86_64, 2 torch threads "
            "| 2 s | 2026-11-25 15:07 | `fedcba9` |") in text


@pytest.mark.skipif(not (REPO / "node_modules").is_dir(), reason="needs `npm ci` (make setup-book)")
def test_book_build_renders_static_pages_status_citations_and_md_downloads(tmp_path):
    write_mini_book(tmp_path, {"intro": "print('LoRA')"})
    intro = tmp_path / "book" / "intro.md"
    intro.write_text(intro.read_text() + "\nLow-rank adaptation {cite:p}`hu2022lora`.\n")
    (tmp_path / "book" / "bibliography.md").write_text((REPO / "book" / "bibliography.md").read_text())
    status = (REPO / "book" / "status.md").read_text()
    (tmp_path / "book" / "status.md").write_text(re.sub(r"\{ref\}`[^`]*`", "the reproduce page", status))
    toc = yaml.safe_load((tmp_path / "_toc.yml").read_text())
    toc["chapters"] = [{"file": "book/bibliography"}, {"file": "book/status"}]
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(toc))
    result = run_build("--root", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = tmp_path / "_build" / "html"
    page = (html / "book" / "intro.html").read_text()
    assert re.search(r'class="bibtex-citation".*?href="bibliography.html#', page), "citation links to the bibliography"
    assert 'href="../_sources/book/intro.md"' in page and 'href="../_sources/book/intro.ipynb"' in page
    assert (html / "_sources" / "book" / "intro.md").read_text() == intro.read_text()
    assert "Hu" in (html / "book" / "bibliography.html").read_text()
    status_page = (html / "book" / "status.html").read_text()
    assert 'href="intro.html"' in status_page and "quick" in status_page
    assert "use_repository_button" not in (tmp_path / "_config.yml").read_text() or \
        "btn-source-repository-button" not in page, "no repository button without a repository URL"


@pytest.mark.skipif(not (REPO / "node_modules").is_dir(), reason="needs `npm ci` (make setup-book)")
@pytest.mark.parametrize("url", [None, "https://example.org/aurora-book"])
def test_repository_button_only_when_a_repository_url_is_configured(tmp_path, url):
    write_mini_book(tmp_path, {"intro": ""})
    if url is not None:
        config = yaml.safe_load((tmp_path / "_config.yml").read_text())
        config["repository"] = {"url": url}
        (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    executed = tmp_path / "executed"
    executed.mkdir()
    chapter = build_book.Chapter("book/intro", tmp_path)
    source = build_book.convert_to_notebook(chapter, executed)
    source.rename(executed / "intro.ipynb")  # stands in for papermill's output (not executed here)
    toc = build_book.load_toc(tmp_path)
    build_book.stage_book(tmp_path, toc, [chapter], executed, tmp_path / "stage", quick=True)
    staged = yaml.safe_load((tmp_path / "stage" / "_config.yml").read_text())
    assert staged["html"]["use_repository_button"] is (url is not None)
    assert staged["html"]["use_download_button"] is True
    assert (tmp_path / "stage" / build_book.MARKDOWN_SOURCES_DIR / "book" / "intro.md").read_text() == \
        (tmp_path / "book" / "intro.md").read_text()
