"""The library's public API: each package names it in __all__, and `import fraud` is light
and changes nothing in the process (no torch or FAISS loaded, os.environ untouched)."""

import importlib
import os
import subprocess
import sys

import pytest

from tests.paths import REPO_ROOT

PACKAGES = (
    "fraud",
    "fraud.text",
    "fraud.encoding",
    "fraud.index",
    "fraud.scoring",
    "fraud.fitting",
    "fraud.quality",
    "fraud.data",
)

THREAD_SETTINGS = ("OMP_WAIT_POLICY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
IMPORT_FRAUD = """
import os, sys
before = dict(os.environ)
import fraud
assert dict(os.environ) == before, sorted(set(os.environ.items()) ^ set(before.items()))
heavy = sorted({"torch", "faiss", "transformers", "onnxruntime", "matplotlib"} & set(sys.modules))
assert not heavy, heavy
print("light")
"""


def test_import_fraud_is_light_and_leaves_the_environment_alone():
    # Without the thread settings tests/conftest.py put in the environment, so that one
    # written by `import fraud` would show.
    env = {k: v for k, v in os.environ.items() if k not in THREAD_SETTINGS}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_FRAUD],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "light", done.stderr[-2000:]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_package_declares_its_api_and_every_name_is_there(name):
    package = importlib.import_module(name)
    assert package.__all__, name
    assert len(set(package.__all__)) == len(package.__all__), name
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing, (name, missing)
