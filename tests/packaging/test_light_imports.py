"""Commands that need no trainer stay free of Lightning (about 6 s of import on a 2-core CPU, paid by every CLI call
and by the test suite's ~40 CLI subprocesses): the judge, ``prepare``, ``evaluate`` (toy), ``submit`` and the
datamodules package root."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

LIGHT = ("mav_train.evaluation.toy_judge", "mav_train.cli.prepare", "mav_train.cli.evaluate", "mav_train.cli.submit",
         "mav_train.cli.fit", "datamodules", "datamodules.toy_world", "datamodules.heldout")


def test_light_modules_do_not_import_lightning():
    code = (f"import importlib, sys\nfor m in {LIGHT!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m == 'lightning' or m.startswith('lightning.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout[:500]


def test_the_datamodules_package_still_gives_its_names():
    import datamodules

    assert datamodules.build_datamodule.__module__ == "datamodules.factory"
    assert set(datamodules.__all__) >= {"VideoDataModule", "ImageTextDataModule", "ensure_demo_data"}


def test_help_reads_every_verbs_help_without_importing_it():
    import importlib

    from mav_train.cli.main import VERBS, help_text, usage

    for verb, module in VERBS.items():
        assert help_text(verb) == importlib.import_module(module).HELP.strip(), verb
    code = "import sys\nfrom mav_train.cli.main import usage\nusage()\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
    assert all(f"  {verb}" in usage() for verb in VERBS)
