"""The `fraud serve` process (workers/serve/main.py): one readable line for a bad token file
or a taken port."""

import pytest

from workers.processes import bind

pytestmark = [pytest.mark.model]


def test_fraud_serve_refuses_a_missing_token_file_and_a_taken_port(tmp_path, capsys):
    from workers.cli.main import main

    assert main(["bench-serve"]) == 2  # no --csv
    assert capsys.readouterr().err.startswith("fraud: error: fraud bench-serve needs")

    assert main(["serve", "--token-file", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fraud: error: token file") and "\n" not in err
    with bind("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        taken.listen()
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fraud: error: cannot listen on 127.0.0.1:{port}")
