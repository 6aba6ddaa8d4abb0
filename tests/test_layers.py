"""The import rules (pyproject.toml, [tool.importlinter]): the library never imports the
application, Kafka, a web framework, argparse or rich; text, keys, attention and schemas
import neither torch nor FAISS; the layers of each package point one way; no import cycle
inside the library. Checked by import-linter's `lint-imports`, run here so that `make
test` runs it."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO_ROOT


def test_the_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    # This checkout's packages, not whichever copy the environment has installed.
    path = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken", done.stdout), done.stdout[-2000:]
