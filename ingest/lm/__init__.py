"""Language-model runtime shared by the jobs: devices, dtypes, modes (`ingest.lm.runtime`)."""
