"""Pure, model-free per-sequence functions (no I/O), usable from ingest jobs and DuckDB."""
