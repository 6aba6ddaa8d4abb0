"""The layout's rules. The import rules (pyproject.toml, [tool.importlinter]): the library
never imports the application, Kafka, a web framework, argparse or rich; text, keys,
attention and schemas import neither torch nor FAISS; the layers of each package point one
way; no import cycle inside the library; checked by import-linter's `lint-imports`, run here
so that `make test` runs it. Beside them: no function-local project import outside the CLI,
no function over 80 lines outside the quality harness and the benchmarks."""

import ast
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


def _functions(subdirs: tuple[str, ...]):
    """(path, function node) for every function in the project's packages."""
    for package in ("fraud", "workers"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).as_posix()
            if rel.startswith(subdirs):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield rel, node


def test_no_function_imports_a_project_module_except_the_cli():
    """A function-local import of `fraud` or `workers` hides a cycle or an upward import
    from import-linter; only the `fraud` command imports lazily (a command's start-up
    stays fast). Lazy loads of torch, FAISS or a web framework are not project modules."""
    found = []
    for rel, fn in _functions(("workers/cli/",)):
        for node in ast.walk(fn):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [
                f"{rel}:{node.lineno} {fn.name}"
                for name in names
                if name.split(".")[0] in ("fraud", "workers")
            ]
    assert not found, found


def test_no_function_is_longer_than_80_lines_outside_quality_and_bench():
    """Long functions are where a newcomer gets lost; the quality harness and the
    benchmarks (reports assembled field by field) are the agreed exceptions."""
    long = [
        f"{rel}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
        for rel, fn in _functions(("fraud/quality/", "workers/bench/"))
        if fn.end_lineno - fn.lineno + 1 > 80
    ]
    assert not long, long
