"""The language-model layer shared by the jobs: runtime (devices, dtypes, modes, `ingest.lm.runtime`)
and one view of a causal LM's MLP blocks (`ingest.lm.arch`). It imports nothing else from `ingest`."""
