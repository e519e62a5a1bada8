"""The lake: its contract (`contract.py`) and the store that writes and reads it (`store.py`)."""

from memlake.core.lake.contract import TABLES, TOKENS, TableSpec, duckdb_type, spec
from memlake.core.lake.store import (
    DATA_FILE,
    MANIFEST,
    code_version,
    data_files,
    is_complete,
    list_column,
    manifest,
    package_versions,
    partition_dir,
    partitions,
    read_table,
    sha256,
    validate,
    write_partition,
    write_partition_stream,
)

__all__ = [
    "DATA_FILE",
    "MANIFEST",
    "TABLES",
    "TOKENS",
    "TableSpec",
    "code_version",
    "data_files",
    "duckdb_type",
    "is_complete",
    "list_column",
    "manifest",
    "package_versions",
    "partition_dir",
    "partitions",
    "read_table",
    "sha256",
    "spec",
    "validate",
    "write_partition",
    "write_partition_stream",
]
