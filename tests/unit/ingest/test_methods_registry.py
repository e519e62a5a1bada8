"""A method's hyper-parameters are exactly its registered grid's keys, checked when it registers."""

import pytest

from ingest.mitigation.methods import REGISTRY, EditResult, hyper_parameters, register


def test_every_registered_grid_names_exactly_the_hyper_parameters():
    for name in REGISTRY:
        method = REGISTRY[name]
        assert all(set(point) == hyper_parameters(method.fn) for point in method.grid), name


def test_a_grid_that_does_not_match_the_keyword_parameters_raises_at_registration():
    before = REGISTRY.names()

    def edit(model, task, *, seed=0, ratio, epochs=1) -> EditResult:
        return EditResult(model)

    with pytest.raises(
        TypeError, match=r"grid point \{'ratio': 0.1\} does not name exactly.*'epochs', 'ratio'"
    ):
        register("test_missing_key", "weight", [{"ratio": 0.1, "epochs": 1}, {"ratio": 0.1}])(edit)
    with pytest.raises(TypeError, match="does not name exactly"):
        register("test_extra_key", "weight", [{"ratio": 0.1, "epochs": 1, "batch_size": 8}])(edit)

    def positional(model, forget, retain, *, seed=0, ratio) -> EditResult:
        return EditResult(model)

    with pytest.raises(TypeError, match=r"must be fn\(model, task, \*, seed"):
        register("test_old_signature", "weight", [{"ratio": 0.1}])(positional)

    def open_ended(model, task, *, seed=0, ratio, **settings) -> EditResult:
        return EditResult(model)

    with pytest.raises(TypeError, match=r"must be fn\(model, task, \*, seed"):
        register("test_open_ended", "weight", [{"ratio": 0.1}])(open_ended)
    assert REGISTRY.names() == before  # a method that fails the check is not registered
