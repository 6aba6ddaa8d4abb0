"""Where the tests find the repository's files and the shared data sets."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# ../shared/data beside the checkout (README): public labeled SMS sets, used by path.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
