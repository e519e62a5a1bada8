"""memlake: a lakehouse for studying memorisation in language models.

The shared core lives here: paths, configuration, the lake contract, the query layer and the
CLI. Stages live in the top-level packages `ingest`, `transforms` and `analysis`.
"""

__version__ = "0.1.0"
