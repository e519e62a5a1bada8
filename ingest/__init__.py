"""Ingest jobs: read models and corpora, write lake partitions (see memlake.core.lake)."""
