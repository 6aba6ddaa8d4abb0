"""The `fraud` command: one module per command group, each registering its subcommands;
main.py puts them together (the console script is workers.cli.main:main).

Nothing is imported here: `python -m workers.cli.main` must load main.py once, as the
program, and main.py sets the process's thread settings before anything loads torch.
"""

__all__: list[str] = []
