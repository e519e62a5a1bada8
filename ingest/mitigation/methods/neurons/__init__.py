"""Neuron methods: score every MLP neuron on the forget set, remove the per-layer top `ratio`."""
