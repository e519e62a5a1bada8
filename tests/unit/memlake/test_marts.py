"""Python marts read through the query layer: columns added to a mart after some of its files were
written are filled in the older files with the declared default (a literal or an expression of
the file's own columns), and keep their values in the newer ones."""

import polars as pl

import analysis.profiles.fitting  # noqa: F401 - declares the profile marts and their defaults
from memlake.core import marts, query
from memlake.core.paths import Warehouse


def test_older_files_read_with_the_declared_defaults(tmp_path):
    wh = Warehouse.at(tmp_path / "wh")
    old = pl.DataFrame(
        {"model": ["a", "a"], "method": ["relative_magnitude", "smoothness"], "bound": [1.0, 0.1]}
    )
    new = pl.DataFrame(
        {"model": ["b"], "method": ["relative_magnitude"], "bound": [1.0], "design": ["x"], "test": ["C-LF"]}
    )
    marts.write(wh, "profiles_honest", "old", old)
    marts.write(wh, "profiles_honest", "new", new)
    got = query.read(wh, "select model, method, design, test from profiles_honest order by model, method")
    assert got.rows() == [
        ("a", "relative_magnitude", "none", "C"),  # written before the hybrid test: the conditional
        ("a", "smoothness", "none", "FLCI"),
        ("b", "relative_magnitude", "x", "C-LF"),
    ]
    # a mart that never had the column gets only its own defaults
    marts.write(wh, "profiles_attgt", "old", pl.DataFrame({"model": ["a"], "att": [0.5]}))
    assert query.read(wh, "select * from profiles_attgt").columns == ["model", "att", "design"]
