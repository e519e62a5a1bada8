"""Ingest jobs: read models and corpora, write lake partitions (see memlake.lake)."""
