"""The embedded model suite: Pythia-architecture (GPTNeoX) models trained on the corpus."""
