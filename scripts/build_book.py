"""Build the executable book: run every chapter with papermill, then render it with Jupyter Book.

    python scripts/build_book.py                 # quick mode, all chapters in _toc.yml
    python scripts/build_book.py --full          # full mode (long: real fine-tuning runs)
    python scripts/build_book.py --chapters anl_explorer intro --jobs 2

Steps (see book/README.md):
1. each chapter ``book/<name>.md`` (a MyST-markdown notebook) is converted with jupytext to
   ``build/executed/<name>.source.ipynb`` and executed by papermill into
   ``build/executed/<name>.ipynb`` with ``-p quick True|False`` (and ``-p device ...`` if given),
   in ``book/`` as working directory and with ``AURORA_BOOK_STATIC=1`` in the environment;
   a raising cell fails the build with a message naming the chapter, the cell and the log;
2. the executed notebooks, ``_config.yml``, ``_toc.yml``, the non-chapter files of ``book/`` and the
   JavaScript vendored from ``node_modules/`` (widget renderer, RequireJS, MathJax) are staged in
   ``_build/stage``;
3. ``jupyter-book build -W --keep-going`` renders the stage (notebooks are not executed again),
   so any Sphinx warning fails the build; the HTML lands in ``_build/html``.

With ``--chapters``, chapters not selected reuse their executed notebook from an earlier run if one
exists and are left out of this HTML build (with a note) if not. The root chapter is always included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
NODE_MODULES = REPO / "node_modules"
STATIC_BUILD_ENV = "AURORA_BOOK_STATIC"  # same name as aurora.widgets.STATIC_BUILD_ENV
RESULT_COMMAND_ENV = "AURORA_RESULT_COMMAND"  # same name as aurora.results.COMMAND_ENV
VENDOR_SUBDIR = Path("book/_static/vendor")

# (source under node_modules, destination under book/_static/vendor, what it is for)
VENDORED_FILES: list[tuple[str, str, str]] = [
    ("requirejs/require.js", "require.js", "module loader the widget renderer needs"),
    ("@jupyter-widgets/html-manager/dist/embed-amd.js", "html-manager/embed-amd.js",
     "ipywidgets renderer for static pages"),
    ("mathjax/es5/tex-chtml.js", "mathjax/tex-chtml.js", "MathJax 3 (Sphinx math)"),
]
# folders copied whole: fonts and lazily loaded components of the files above
VENDORED_DIRS: list[tuple[str, str]] = [
    ("mathjax/es5/input/tex/extensions", "mathjax/input/tex/extensions"),
    ("mathjax/es5/output/chtml", "mathjax/output/chtml"),
    ("mathjax/es5/ui", "mathjax/ui"),
    ("mathjax/es5/a11y", "mathjax/a11y"),
]
HTML_MANAGER_FONT_SUFFIXES = (".woff", ".woff2", ".ttf", ".eot", ".svg")


class BuildError(RuntimeError):
    """A step of the book build failed; the message says which and what to do."""


@dataclass(frozen=True)
class Chapter:
    """One chapter listed in ``_toc.yml``: ``entry`` is the toc path without suffix, under ``root``."""

    entry: str
    root: Path

    @property
    def name(self) -> str:
        return Path(self.entry).name

    @property
    def source(self) -> Path:
        return self.root / f"{self.entry}.md"

    @property
    def label(self) -> str:
        return f"{self.name!r} ({self.entry}.md)"

    @property
    def is_notebook(self) -> bool:
        """A MyST notebook (has code cells, is executed); otherwise a plain page copied as it is."""
        return "```{code-cell}" in self.source.read_text()

    @property
    def title(self) -> str:
        """The first ``# `` heading of the source (the name if it has none)."""
        for line in self.source.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
        return self.name


@dataclass
class ExecutionResult:
    chapter: Chapter
    seconds: float
    returncode: int
    log: Path


def toc_entries(toc: dict) -> list[str]:
    """All ``file:`` entries of a jb-book toc, root first, in reading order."""
    entries = [toc["root"]]

    def walk(items: list[dict]) -> None:
        for item in items:
            if "file" in item:
                entries.append(item["file"])
            for key in ("chapters", "sections"):
                walk(item.get(key, []))
            for part in item.get("parts", []):
                walk(part.get("chapters", []))

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return [str(Path(entry).with_suffix("")) if entry.endswith((".md", ".ipynb")) else entry
            for entry in entries]


def load_toc(root: Path) -> dict:
    path = root / "_toc.yml"
    if not path.exists():
        raise BuildError(f"no _toc.yml in {root}")
    toc = yaml.safe_load(path.read_text())
    if not isinstance(toc, dict) or toc.get("format") != "jb-book" or "root" not in toc:
        raise BuildError(f"{path} must be a jb-book toc with a 'root' entry")
    return toc


def chapters_in_toc(toc: dict, root: Path) -> list[Chapter]:
    chapters = [Chapter(entry, root) for entry in toc_entries(toc)]
    missing = [f"{chapter.entry}.md" for chapter in chapters if not chapter.source.exists()]
    if missing:
        raise BuildError(f"_toc.yml lists chapters without a source file: {', '.join(missing)}")
    return chapters


def select_chapters(chapters: list[Chapter], requested: list[str] | None) -> list[Chapter]:
    """Chapters named by ``requested`` (names like ``anl_explorer`` or paths like ``book/x.md``)."""
    if not requested:
        return chapters
    by_name = {chapter.name: chapter for chapter in chapters}
    selected = []
    for request in requested:
        name = Path(request).with_suffix("").name
        if name not in by_name:
            raise BuildError(
                f"--chapters: unknown chapter {request!r}; chapters in _toc.yml: {', '.join(by_name)}"
            )
        if by_name[name] not in selected:
            selected.append(by_name[name])
    return selected


def convert_to_notebook(chapter: Chapter, executed_dir: Path) -> Path:
    """jupytext: ``book/<name>.md`` → ``<executed_dir>/<name>.source.ipynb``."""
    import jupytext

    notebook = jupytext.read(chapter.source)
    has_parameters = any(
        "parameters" in cell.metadata.get("tags", []) for cell in notebook.cells if cell.cell_type == "code"
    )
    if not has_parameters:
        raise BuildError(
            f"chapter {chapter.label} has no code cell tagged "
            "'parameters' (it must define at least quick = True and device = \"cpu\")"
        )
    target = executed_dir / f"{chapter.name}.source.ipynb"
    jupytext.write(notebook, target, fmt="ipynb")
    return target


def _pump(stream: IO[bytes], log: IO[bytes], echo: bool) -> None:
    for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
        log.write(chunk)
        log.flush()
        if echo:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()


def execute_chapter(
    chapter: Chapter, executed_dir: Path, quick: bool, device: str | None, kernel: str, echo: bool
) -> ExecutionResult:
    """Run papermill on one chapter (in a subprocess of this interpreter, so the kernel uses it)."""
    source = convert_to_notebook(chapter, executed_dir)
    output = executed_dir / f"{chapter.name}.ipynb"
    log_path = executed_dir / f"{chapter.name}.log"
    command = [
        sys.executable, "-m", "papermill", str(source), str(output),
        "--cwd", str(chapter.source.parent), "--kernel", kernel, "--progress-bar",
        "-p", "quick", str(quick),
    ]
    if device is not None:
        command += ["-p", "device", device]
    rerun = f"python scripts/build_book.py --{'quick' if quick else 'full'} --chapters {chapter.name}"
    if device is not None:
        rerun += f" --device {device}"
    environment = dict(os.environ, **{STATIC_BUILD_ENV: "1", RESULT_COMMAND_ENV: rerun, "PYTHONPATH": _pythonpath()})
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment)
        assert process.stdout is not None
        pump = threading.Thread(target=_pump, args=(process.stdout, log, echo))
        pump.start()
        returncode = process.wait()
        pump.join()
    if output.exists():
        record_build_metadata(output, rerun, device)
    return ExecutionResult(chapter, time.perf_counter() - started, returncode, log_path)


BUILD_METADATA_KEY = "aurora_build"


def _git(*arguments: str) -> str:
    completed = subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True)
    return completed.stdout.strip() if completed.returncode == 0 else ""


def host_description(device: str | None) -> str:
    """What the chapter ran on: the GPU name for a CUDA device, else the CPU and its core count."""
    if device and device.startswith("cuda") and shutil.which("nvidia-smi"):
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.split("\n")
        if gpus and gpus[0].strip():
            return f"GPU: {gpus[0].strip()}"
    return f"CPU: {platform.machine()}, {os.cpu_count()} cores"


def record_build_metadata(notebook_path: Path, command: str, device: str | None) -> None:
    """Add the commit, the rerun command and the host to the executed notebook (the status page reads it).

    ``dirty`` is true when code (anything but ``data/results``) differs from the commit.
    """
    notebook = json.loads(notebook_path.read_text())
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)data/results")
    notebook.setdefault("metadata", {})[BUILD_METADATA_KEY] = {
        "commit": _git("rev-parse", "HEAD") or None,
        "dirty": bool(changed),
        "command": command,
        "host": host_description(device),
    }
    notebook_path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False))


def _pythonpath() -> str:
    """The repository first, so chapters import this checkout's ``aurora`` package."""
    existing = os.environ.get("PYTHONPATH")
    return str(REPO) if not existing else os.pathsep.join([str(REPO), existing])


def failure_message(result: ExecutionResult) -> str:
    lines = result.log.read_text(errors="replace").replace("\r", "\n").splitlines()
    tail = "\n".join(line for line in lines[-40:] if line.strip())
    return (
        f"chapter {result.chapter.label} failed "
        f"after {result.seconds:.1f} s (papermill exit {result.returncode}).\n"
        f"--- last lines of {result.log} ---\n{tail}\n---\n"
        f"The partially executed notebook is {result.log.with_suffix('.ipynb')}."
    )


def execute_chapters(
    chapters: list[Chapter], executed_dir: Path, quick: bool, device: str | None, kernel: str, jobs: int
) -> list[ExecutionResult]:
    executed_dir.mkdir(parents=True, exist_ok=True)
    echo = jobs == 1
    results: list[ExecutionResult] = []
    with tqdm(total=len(chapters), desc="chapters", unit="chapter", file=sys.stdout) as progress:
        def run(chapter: Chapter) -> ExecutionResult:
            progress.write(f"executing {chapter.name} ({'quick' if quick else 'full'} mode)")
            result = execute_chapter(chapter, executed_dir, quick, device, kernel, echo)
            status = "ok" if result.returncode == 0 else "FAILED"
            progress.write(f"{chapter.name}: {status} in {result.seconds:.1f} s")
            progress.update(1)
            return result

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(run, chapters))
    return results


def notebook_mode(path: Path) -> str | None:
    """``"quick"``/``"full"`` from the papermill metadata of an executed notebook."""
    metadata = json.loads(path.read_text()).get("metadata", {})
    parameters = metadata.get("papermill", {}).get("parameters", {})
    if "quick" not in parameters:
        return None
    return "quick" if parameters["quick"] in (True, "True") else "full"


STATUS_PAGE = "status"
STATUS_MARKER = "<!-- execution status: the tables are written here by scripts/build_book.py -->"
RESULTS_DIR = Path("data/results")


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _commit_text(commit: str | None, dirty: bool) -> str:
    if not commit:
        return "unknown"
    return f"`{commit[:7]}`" + (" + uncommitted changes" if dirty else "")


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def default_parameters(chapter: Chapter) -> dict:
    """The literal values of the chapter's ``parameters`` cell (e.g. its default ``device``)."""
    import ast

    import jupytext

    for cell in jupytext.read(chapter.source).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            values = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        values[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
            return values
    return {}


def chapter_status_row(chapter: Chapter, executed_dir: Path) -> list[str]:
    """Page, mode, device, run time, executed (UTC) and commit of one chapter."""
    link = f"{{doc}}`{chapter.name}`"
    if not chapter.is_notebook:
        return [link, "plain page", "–", "–", "–", "–"]
    executed = executed_dir / f"{chapter.name}.ipynb"
    if not executed.exists():
        return [link, "not executed in this build", "–", "–", "–", "–"]
    metadata = json.loads(executed.read_text()).get("metadata", {})
    papermill = metadata.get("papermill", {})
    build = metadata.get(BUILD_METADATA_KEY, {})
    device = papermill.get("parameters", {}).get("device", default_parameters(chapter).get("device", "?"))
    mode = notebook_mode(executed) or "?"
    if papermill.get("exception"):
        mode += " (failed)"
    start = (papermill.get("start_time") or "")[:16].replace("T", " ")
    host = build.get("host")
    device_text = str(device) if not host else host if device == "cpu" else f"{device}: {host}"
    return [link, mode, device_text, _duration_text(papermill.get("duration")), start or "–",
            _commit_text(build.get("commit"), bool(build.get("dirty")))]


def results_status_rows(results_dir: Path) -> list[list[str]]:
    """One row per ``data/results/<name>/provenance.json``: command, device, wall time, date, commit."""
    rows = []
    for path in sorted(results_dir.glob("*/provenance.json")):
        provenance = json.loads(path.read_text())
        wall = provenance.get("wall_time_s")
        rows.append([
            f"`{path.parent.name}`",
            f"`{provenance.get('command', '?')}`",
            str(provenance.get("device_description", provenance.get("device", "?"))),
            _duration_text(float(wall) if wall is not None else None),
            str(provenance.get("created_utc", "?"))[:16].replace("T", " "),
            _commit_text(provenance.get("git_commit"), bool(provenance.get("git_dirty", False))),
        ])
    return rows


def execution_status(chapters: list[Chapter], executed_dir: Path, results_dir: Path) -> str:
    """The status page's two tables (markdown): every page of the book, then every result set."""
    chapter_rows = [chapter_status_row(chapter, executed_dir) for chapter in chapters if chapter.name != STATUS_PAGE]
    chapter_table = _markdown_table(
        ["Chapter", "Mode", "Device", "Run time", "Executed (UTC)", "Commit"], chapter_rows
    )
    durations = [json.loads((executed_dir / f"{c.name}.ipynb").read_text()).get("metadata", {}).get("papermill", {}).get("duration")
                 for c in chapters if c.is_notebook and (executed_dir / f"{c.name}.ipynb").exists()]
    total = sum(d for d in durations if d is not None)
    chapter_table += f"\n\nExecution time of the {len(durations)} executed chapters together: {_duration_text(total)}."
    result_rows = results_status_rows(results_dir)
    results_table = (
        _markdown_table(["Results", "Written by", "Device", "Wall time", "Written (UTC)", "Commit"], result_rows)
        if result_rows else "No result sets under `data/results/`."
    )
    return f"(status-chapters)=\n## Chapters\n\n{chapter_table}\n\n(status-results)=\n## Result sets\n\n{results_table}\n"


def vendor_javascript(static_dir: Path, node_modules: Path = NODE_MODULES) -> None:
    """Copy the widget renderer, RequireJS and MathJax from ``node_modules`` (no CDN at view time)."""
    required = {source.split("/")[0] if not source.startswith("@") else "/".join(source.split("/")[:2])
                for source, _, _ in VENDORED_FILES}
    missing = sorted(package for package in required if not (node_modules / package).is_dir())
    if missing:
        raise BuildError(
            f"node_modules lacks {', '.join(missing)}: run `npm ci` in the repository root "
            "(scripts/setup.sh does) before building the book"
        )
    vendor = static_dir / "vendor"
    for source, destination, _ in VENDORED_FILES:
        (vendor / destination).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(node_modules / source, vendor / destination)
    for source, destination in VENDORED_DIRS:
        shutil.copytree(node_modules / source, vendor / destination, dirs_exist_ok=True)
    html_manager_dist = node_modules / "@jupyter-widgets/html-manager/dist"
    for font in html_manager_dist.iterdir():
        if font.suffix in HTML_MANAGER_FONT_SUFFIXES:
            shutil.copy2(font, vendor / "html-manager" / font.name)


def filtered_toc(toc: dict, keep: set[str]) -> dict:
    """``toc`` without the chapters whose entry is not in ``keep`` (the root always stays)."""

    def prune(items: list[dict]) -> list[dict]:
        kept = []
        for item in items:
            item = dict(item)
            for key in ("chapters", "sections"):
                if key in item:
                    item[key] = prune(item[key])
                    if not item[key]:
                        del item[key]
            if "file" in item and str(Path(item["file"]).with_suffix("")) not in keep:
                continue
            kept.append(item)
        return kept

    pruned = dict(toc)
    if "chapters" in pruned:
        pruned["chapters"] = prune(pruned["chapters"])
        if not pruned["chapters"]:
            del pruned["chapters"]
    if "parts" in pruned:
        pruned["parts"] = [dict(part, chapters=prune(part.get("chapters", []))) for part in pruned["parts"]]
        pruned["parts"] = [part for part in pruned["parts"] if part["chapters"]]
        if not pruned["parts"]:
            del pruned["parts"]
    return pruned


# Sphinx warnings about references to documents that a partial build (--chapters) leaves out.
PARTIAL_BUILD_WARNINGS = ["ref.doc", "ref.ref", "myst.xref_missing"]

# The chapters' MyST sources travel in the stage here (not parsed by Sphinx); the book's Sphinx
# extension (book/_ext/aurora_book.py) publishes them under _sources/ for the ".md" download button.
MARKDOWN_SOURCES_DIR = "_markdown_sources"

INJECTED_PARAMETERS_HEADER = "# Values this page was built with (set by scripts/build_book.py)"


def label_injected_parameters(notebook: dict) -> dict:
    """Say in the rendered page that papermill's ``# Parameters`` cell holds the values actually used."""
    for cell in notebook["cells"]:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = source.replace("# Parameters", INJECTED_PARAMETERS_HEADER, 1)
    return notebook


def stage_book(
    root: Path, toc: dict, chapters: list[Chapter], executed_dir: Path, stage_dir: Path, quick: bool
) -> list[Chapter]:
    """Assemble the Sphinx source tree; returns the chapters that made it into the stage."""
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    chapter_sources = {chapter.source for chapter in chapters if chapter.is_notebook}
    shutil.copytree(
        root / "book", stage_dir / "book",
        ignore=lambda folder, names: [
            name for name in names
            if Path(folder, name) in chapter_sources or name in {"__pycache__", ".ipynb_checkpoints"}
        ],
    )
    staged = []
    mode = "quick" if quick else "full"
    for chapter in chapters:
        if not chapter.is_notebook:
            staged.append(chapter)
            continue
        markdown_copy = stage_dir / MARKDOWN_SOURCES_DIR / f"{chapter.entry}.md"
        markdown_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(chapter.source, markdown_copy)
        executed = executed_dir / f"{chapter.name}.ipynb"
        if not executed.exists():
            print(f"note: {chapter.name} has no executed notebook yet; left out of this build")
            continue
        if notebook_mode(executed) != mode:
            print(f"note: {chapter.name} reuses a {notebook_mode(executed)}-mode notebook from an earlier run")
        if executed.stat().st_mtime < chapter.source.stat().st_mtime:
            print(f"note: {chapter.name}: {chapter.source.name} changed after its notebook was executed")
        target = stage_dir / f"{chapter.entry}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(label_injected_parameters(json.loads(executed.read_text())), indent=1))
        staged.append(chapter)
    root_entry = toc_entries(toc)[0]
    if root_entry not in {chapter.entry for chapter in staged}:
        raise BuildError(f"the root chapter {root_entry!r} has no executed notebook")
    (stage_dir / "_toc.yml").write_text(
        yaml.safe_dump(filtered_toc(toc, {chapter.entry for chapter in staged}), sort_keys=False)
    )
    status = next((chapter for chapter in staged if chapter.name == STATUS_PAGE), None)
    if status is not None:
        page = stage_dir / f"{status.entry}.md"
        text = page.read_text()
        if STATUS_MARKER not in text:
            raise BuildError(f"{status.source} lacks the line {STATUS_MARKER!r} where the status tables go")
        page.write_text(text.replace(STATUS_MARKER, execution_status(chapters, executed_dir, root / RESULTS_DIR)))
    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    config["exclude_patterns"] = [*config.get("exclude_patterns", []), f"{MARKDOWN_SOURCES_DIR}/**"]
    if (config.get("repository") or {}).get("url"):  # a repository button only where one is configured
        config.setdefault("html", {})["use_repository_button"] = True
    if len(staged) < len(chapters):
        print(f"note: partial book ({len(staged)} of {len(chapters)} chapters): "
              "links to the chapters left out are not checked")
        sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
        sphinx_config["suppress_warnings"] = [*sphinx_config.get("suppress_warnings", []), *PARTIAL_BUILD_WARNINGS]
    (stage_dir / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    vendor_javascript(stage_dir / "book" / "_static")
    return staged


def build_html(stage_dir: Path, html_dir: Path) -> None:
    """``jupyter-book build -W --keep-going``: any warning fails; result moved to ``html_dir``."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(stage_dir), "-W", "--keep-going", "--path-output", str(stage_dir)]
    print("rendering HTML:", " ".join(command[1:]))
    completed = subprocess.run(command, cwd=stage_dir)
    if completed.returncode != 0:
        raise BuildError(
            f"jupyter-book build failed (exit {completed.returncode}); its warnings are printed above. "
            f"The staged sources are in {stage_dir}."
        )
    if html_dir.exists():
        shutil.rmtree(html_dir)
    html_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(stage_dir / "_build" / "html"), str(html_dir))


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="run chapters with quick = True (default; minutes on a laptop CPU)")
    mode.add_argument("--full", dest="quick", action="store_false",
                      help="run chapters with quick = False (the full experiments)")
    parser.add_argument("--chapters", nargs="+", metavar="NAME",
                        help="execute only these chapters (names from _toc.yml, e.g. anl_explorer)")
    parser.add_argument("--jobs", type=int, default=1, help="chapters executed in parallel (default 1)")
    parser.add_argument("--device", help="inject -p device DEVICE into every chapter (default: chapter's own)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name for papermill (default python3)")
    parser.add_argument("--root", type=Path, default=REPO,
                        help="folder with _config.yml, _toc.yml and book/ (default: this repository)")
    parser.add_argument("--executed-dir", type=Path,
                        help="where executed notebooks and logs go (default ROOT/build/executed)")
    parser.add_argument("--output", type=Path,
                        help="stage and HTML go to OUTPUT/stage and OUTPUT/html (default ROOT/_build)")
    parser.add_argument("--no-html", action="store_true", help="only execute the chapters")
    arguments = parser.parse_args(argv)
    if arguments.jobs < 1:
        parser.error(f"--jobs must be a positive integer, got {arguments.jobs}")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    started = time.perf_counter()
    try:
        root: Path = arguments.root.resolve()
        toc = load_toc(root)
        chapters = chapters_in_toc(toc, root)
        selected = [chapter for chapter in select_chapters(chapters, arguments.chapters) if chapter.is_notebook]
        executed_dir: Path = (arguments.executed_dir or root / "build" / "executed").resolve()
        root_chapter = chapters[0]
        if root_chapter not in selected and not (executed_dir / f"{root_chapter.name}.ipynb").exists():
            selected.insert(0, root_chapter)
        results = execute_chapters(
            selected, executed_dir, arguments.quick, arguments.device, arguments.kernel, arguments.jobs
        )
        failures = [result for result in results if result.returncode != 0]
        if failures:
            for failure in failures:
                print(f"\nBUILD FAILED: {failure_message(failure)}", file=sys.stderr)
            raise BuildError(f"{len(failures)} chapter(s) failed: {', '.join(f.chapter.name for f in failures)}")
        print("\n".join(f"  {result.chapter.name:<32} {result.seconds:7.1f} s" for result in results))
        if not arguments.no_html:
            output: Path = (arguments.output or root / "_build").resolve()
            staged = stage_book(root, toc, chapters, executed_dir, output / "stage", arguments.quick)
            build_html(output / "stage", output / "html")
            print(f"book with {len(staged)} chapter(s) in {output / 'html'}")
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
