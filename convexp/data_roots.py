"""Where the data lives: `root: auto` in a config becomes a real folder before the run starts.

The shipped configs say `root: auto` so that one command trains on the real data wherever it
is. The first of these that holds the set wins:

    $CONVEXP_DATA/<set>           a shared data folder named by the user (CI sets it)
    ../shared/data/<set>          the team's shared data beside the checkout
    data/<set-fallback>           the project's own data/ (MNIST is downloaded there when online)

The resolved path, not `auto`, is what config.yaml records, so a run can be repeated from its
folder on another machine by pointing `data.root` elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

AUTO = "auto"
SHARED_DATA = Path("../shared/data")

# set name -> (file or folder that proves the set is there, fallback root under data/)
DATA_SETS = {
    "mnist": ("MNIST/raw/train-images-idx3-ubyte", "data/"),
    "mnist-varres": ("train", "data/mnist-varres"),
}


def candidates(name: str) -> list[Path]:
    """The folders searched for data set `name`, in order."""
    places = []
    if os.environ.get("CONVEXP_DATA"):
        places.append(Path(os.environ["CONVEXP_DATA"]) / name)
    places.append(SHARED_DATA / name)
    return places


def resolve_root(root: str, name: str) -> str:
    """`root` as given, with `~` and $VARIABLES expanded; `auto` becomes the first folder holding `name`."""
    if root != AUTO:
        return os.path.expandvars(os.path.expanduser(root))
    marker, fallback = DATA_SETS[name]
    for place in candidates(name):
        if (place / marker).exists():
            return str(place)
    return fallback
