"""Mitigation study: TinyMem data and models, mitigation methods, sweeps into the lake.

tinymem/   math + language data with planted noise and backdoors, GPT-2 models, metrics
arch.py    one view of the MLPs of GPT-2 (TinyMem) and GPT-NeoX (suite, Pythia) models
methods/   every method behind one interface, registered by name (methods.REGISTRY)
"""
