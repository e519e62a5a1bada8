"""Mitigation study: TinyMem data and models, mitigation methods, sweeps into the lake.

tinymem/      math + language data with planted noise and backdoors, GPT-2 models, metrics
methods/      every method behind one interface, one folder per kind, registered by name
studies.py    the two kinds of study (TinyMem, any Hugging Face LM) and the EditTask each builds
sweep.py      runs of a study: one `mitigation_runs` row each
landscape.py  loss landscapes of a study's unedited model and edits, into `mitigation_landscape`

The MLP view the methods edit through is the LM layer's (`ingest.lm.arch`).
"""
