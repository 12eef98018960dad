"""Make ``import torchvision`` work with a CPU-only torch whose torchvision ops cannot load.

Why this exists
---------------
PyPI has no CPU build of torchvision. The release that matches torch 2.13 (torchvision 0.28.0)
installs next to the CPU torch wheel, but its compiled operator library (``torchvision/_C.so``)
is built against the CUDA torch and does not load. ``torchvision.extension`` notices this and
sets ``_has_ops()`` to False; most of ``torchvision/_meta_registrations.py`` respects that flag,
but two fake-kernel registrations (``torchvision::nms`` and ``torchvision::qnms``) are made
unconditionally with ``@torch.library.register_fake(...)``. Registering a fake kernel for an
operator that was never defined raises::

    RuntimeError: operator torchvision::nms does not exist

at ``import torchvision`` -- and therefore at ``import timm`` and in parts of ``transformers``.

The fix
-------
Wrap each unconditional ``@torch.library.register_fake("torchvision::...")`` decorator so that it
only registers when ``torchvision.extension._has_ops()`` is True, exactly as the file's own
``register_meta`` helper already does for the other operators. When the ops do load (a matching
CUDA or CPU build), behaviour is unchanged. Only ``nms``/``roi_align``-style detection operators
are lost, which aurora-book never uses; transforms, datasets and models import normally.

The script is idempotent (a patched file is recognised and left alone), finds torchvision without
importing it, and exits non-zero with a message if the file has an unexpected shape.

Usage: ``python scripts/patch_torchvision.py`` with the interpreter of the environment to patch.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

PATCH_MARKER = "# aurora-book: registered only when torchvision's compiled ops loaded"
UNCONDITIONAL_FAKE_REGISTRATION = re.compile(
    r'^@torch\.library\.register_fake\((?P<operator>"torchvision::\w+")\)$', re.MULTILINE
)
CONDITIONAL_FAKE_REGISTRATION = (
    "@(torch.library.register_fake(\\g<operator>) if torchvision.extension._has_ops() "
    "else (lambda function: function))  " + PATCH_MARKER
)


def meta_registrations_path() -> Path:
    """Locate ``torchvision/_meta_registrations.py`` without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise SystemExit("patch_torchvision: torchvision is not installed in this environment")
    return Path(spec.origin).parent / "_meta_registrations.py"


def patch_source(source: str) -> tuple[str, int]:
    """Return ``(patched source, number of registrations made conditional)``."""
    return UNCONDITIONAL_FAKE_REGISTRATION.subn(CONDITIONAL_FAKE_REGISTRATION, source)


def main() -> int:
    path = meta_registrations_path()
    source = path.read_text()
    patched, replaced = patch_source(source)
    if replaced == 0:
        if PATCH_MARKER in source:
            print(f"patch_torchvision: already patched ({path})")
            return 0
        if "register_fake" not in source:
            print(f"patch_torchvision: no unconditional fake registrations, nothing to do ({path})")
            return 0
        print(f"patch_torchvision: unexpected layout of {path}; patch not applied", file=sys.stderr)
        return 1
    path.write_text(patched)
    print(f"patch_torchvision: made {replaced} fake-kernel registrations conditional ({path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
