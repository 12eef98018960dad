# aurora-book: `make test` is what CI runs (.ci/run). Every target first runs the idempotent setup.
VENV_PYTHON := .venv/bin/python

.PHONY: help setup setup-book setup-browser test book book-full

help:
	@echo "make setup      .venv with pinned packages, offline model and data (scripts/setup.sh)"
	@echo "make test       setup + npm packages + chromium, the whole book in quick mode, then the test suite"
	@echo "make book       setup, then build the book in quick mode (minutes on 2 CPU cores)"
	@echo "make book-full  setup, then build the book in full mode (hub models and data; GPU)"

setup:
	bash scripts/setup.sh

setup-book:
	bash scripts/setup.sh --npm

setup-browser:
	bash scripts/setup.sh --browser

# The whole book is executed once, in quick mode (every chapter through papermill, then
# jupyter-book -W: a failing cell or any Sphinx warning stops here, naming the chapter). The test
# suite then checks that HTML: AURORA_BOOK_HTML makes tests/test_browser.py open every page of it
# and fail if a page of _toc.yml is missing.
test: setup-browser
	$(VENV_PYTHON) scripts/build_book.py --quick
	AURORA_BOOK_HTML=_build/html $(VENV_PYTHON) -m pytest -q

book: setup-book
	$(VENV_PYTHON) scripts/build_book.py --quick

# Full mode's device: cuda when torch sees a GPU, else cpu with a warning (the CPU build of torch never sees one;
# `bash scripts/setup.sh --cuda` installs the CUDA build, see README "Full mode on a GPU").
FULL_MODE_DEVICE := import sys, torch; gpu = torch.cuda.is_available(); print("cuda" if gpu else "cpu"); gpu or print(f"make book-full: WARNING: torch {torch.__version__} sees no CUDA GPU, so full mode runs on the CPU (paper-sized runs take days); on a GPU machine run bash scripts/setup.sh --cuda first", file=sys.stderr)

book-full: setup-book
	@device="$$($(VENV_PYTHON) -c '$(FULL_MODE_DEVICE)')" && echo "book-full: --device $$device" && \
		$(VENV_PYTHON) scripts/build_book.py --full --device "$$device"
