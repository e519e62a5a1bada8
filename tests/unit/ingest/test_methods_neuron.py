"""Neuron-unlearning methods and the gradient-ascent baselines do what they say, on tiny models.

A 2-layer GPT-2 (d_ff = 64, ReLU, the 14-token TinyMem vocabulary) is trained for 300 steps on
a few random "forget" rows (only memorisable) plus arithmetic-progression "retain" rows
(learnable by rule). A method that localises memorisation must raise the forget loss more
than the retain loss, and clearly more so than removing as many random neurons.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from ingest.lm.arch import mlps
from ingest.mitigation.methods import REGISTRY, AttributionCache, EditTask, SequenceSet, get, sequence_loss
from ingest.mitigation.methods.baselines.gradient_ascent import BATCH_SIZE, ascend
from ingest.mitigation.methods.neurons import hard_concrete, slimming
from ingest.mitigation.methods.neurons import integrated_gradients as ig_module
from ingest.mitigation.methods.neurons import zero_out as zero_out_module
from ingest.mitigation.methods.neurons._attribution import MaskTraining, mask_method, n_remove, remove_top

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

T, PROMPT, PAD, VOCAB = 16, 6, 13, 14
NEURON = ["zero_out", "activations", "slimming", "hard_concrete", "integrated_gradients"]
RATIO = 0.1  # 6 of 64 neurons per layer
# Hyper-parameters under which each method is checked to localise. Slimming and HardConcrete use
# Adam lr 0.01 (HardConcrete also λ = 30) instead of the paper's lr 0.1, λ = 1000: on a
# 128-neuron model the L1/L0 pull per coefficient is 8x TinyMem's, every coefficient collapses
# at Adam's sign-like rate within ~10 steps and the ranking left is close to random (the paper,
# too, found Slimming weak on TinyMem).
LOCALISE = {
    "zero_out": {},
    "activations": {},
    "slimming": {"epochs": 20, "training": MaskTraining(lr=0.01)},
    "hard_concrete": {"epochs": 100, "training": MaskTraining(lr=0.01, lam=30.0)},
    "integrated_gradients": {"ig_steps": 20},
}
QUICK = {  # the cheapest settings, for shape and determinism checks
    "zero_out": {},
    "activations": {},
    "slimming": {"epochs": 3},
    "hard_concrete": {"epochs": 3},
    "integrated_gradients": {"ig_steps": 4, "max_sequences": 3},
}


@pytest.fixture(scope="module")
def sets() -> tuple[SequenceSet, SequenceSet]:
    g = torch.Generator().manual_seed(0)
    forget = torch.randint(0, 10, (6, T), generator=g)
    start = torch.randint(0, 10, (64, 1), generator=g)
    step = torch.randint(1, 4, (64, 1), generator=g)
    retain = (start + step * torch.arange(T)) % 10
    retain[:8, -3:] = PAD  # some padding, which every loss must ignore
    return SequenceSet(forget, PROMPT, PAD), SequenceSet(retain, PROMPT, PAD)


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=T,
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_inner=64,
        activation_function="relu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=10,
        eos_token_id=11,
        pad_token_id=PAD,
    )
    return GPT2LMHeadModel(cfg)


@pytest.fixture(scope="module")
def trained(sets) -> GPT2LMHeadModel:
    forget, retain = sets
    model = tiny_gpt2()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rows = torch.cat([forget.tokens, retain.tokens])
    for _ in range(300):
        opt.zero_grad()
        sequence_loss(model, rows, PAD).mean().backward()
        opt.step()
    model.eval()
    f, r = losses(model, sets)
    assert f < 0.2 and r < 0.05, "the fixture model should have memorised the forget rows"
    return model


@pytest.fixture(scope="module")
def neox() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=T,
        hidden_act="gelu",
        bos_token_id=10,
        eos_token_id=11,
        pad_token_id=PAD,
    )
    return GPTNeoXForCausalLM(cfg).eval()


@torch.no_grad()
def loss(model, seqs: SequenceSet) -> float:
    """Mean suffix CE: the loss on what the memorisation metric judges."""
    return sequence_loss(model, seqs.tokens, seqs.pad_id, start=seqs.prompt_len).mean().item()


def losses(model, sets) -> tuple[float, float]:
    return loss(model, sets[0]), loss(model, sets[1])


def selectivity(model, base: tuple[float, float], sets) -> tuple[float, float]:
    """(rise in forget loss, rise in forget loss minus rise in retain loss)."""
    f, r = losses(model, sets)
    return f - base[0], (f - base[0]) - (r - base[1])


@pytest.fixture(scope="module")
def random_control(trained, sets) -> float:
    """The mean selectivity of 8 random removals at the same ratio."""
    base = losses(trained, sets)
    sel = []
    for seed in range(8):
        model = copy.deepcopy(trained)
        gen = torch.Generator().manual_seed(seed)
        remove_top(model, [torch.rand(m.d_ff, generator=gen) for m in mlps(model)], RATIO)
        sel.append(selectivity(model, base, sets)[1])
    return sum(sel) / len(sel)


def localise(name: str, model, task: EditTask, *, training: MaskTraining | None = None, **hp):
    """`name` applied as LOCALISE sets it up: the learned-mask methods with their mask training
    changed (the registered methods fix it), the others as registered."""
    if training is None:
        return get(name).fn(model, task, **hp)
    attribute = {"slimming": slimming, "hard_concrete": hard_concrete}[name].attribute
    return mask_method(model, task, attribute, method=name, training=training, **hp)


def test_registry_names_kinds_and_grids():
    for name in NEURON:
        method = REGISTRY[name]
        assert method.kind == "neuron"
        assert method.grid and all(1e-4 < hp["ratio"] <= 0.05 for hp in method.grid)
    assert {hp["epochs"] for hp in REGISTRY["slimming"].grid} == {1, 10, 20}
    assert {hp["epochs"] for hp in REGISTRY["hard_concrete"].grid} == {1, 10, 20}
    assert all(hp["ig_steps"] == 20 for hp in REGISTRY["integrated_gradients"].grid)
    for name in ("gradient_ascent", "gradient_ascent_kl"):
        assert REGISTRY[name].kind == "baseline"
        assert all({"lr", "steps"} <= hp.keys() for hp in REGISTRY[name].grid)


def test_n_remove_floors_but_never_removes_nothing():
    assert n_remove(0.1, 64) == 6
    assert n_remove(0.05, 512) == 25
    assert n_remove(1e-3, 512) == 1  # the original's int(0.512) = 0 made this ratio a no-op
    assert n_remove(1.0, 64) == 64


@pytest.mark.parametrize("name", NEURON)
def test_neuron_method_removes_neurons_that_carry_the_forget_set(name, trained, sets, random_control):
    forget, retain = sets
    model = copy.deepcopy(trained)
    before = [(m.neuron_in_weights().clone(), m.up.bias.clone()) for m in mlps(model)]
    base = losses(trained, sets)
    result = localise(name, model, EditTask(forget, retain), seed=0, ratio=RATIO, **LOCALISE[name])
    assert result.model is model
    assert result.stats["neurons_removed"] == [6, 6]
    for mlp, idx, (w, b) in zip(mlps(model), result.stats["removed"], before):
        gone = torch.zeros(mlp.d_ff, dtype=torch.bool)
        gone[idx] = True
        assert (mlp.neuron_in_weights()[gone] == 0).all() and (mlp.up.bias[gone] == 0).all()
        assert torch.equal(mlp.neuron_in_weights()[~gone], w[~gone])  # nothing else touched
        assert torch.equal(mlp.up.bias[~gone], b[~gone])
    rise, sel = selectivity(model, base, sets)
    assert sel > 0, f"{name}: forget loss should rise more than retain loss"
    assert sel > 1.5 * random_control, f"{name}: selectivity {sel:.3f} vs random {random_control:.3f}"
    assert rise > 1.0
    assert result.stats["seconds"] >= result.stats["attribution_seconds"] >= 0


def test_zero_out_attribution_equals_brute_force(trained, sets):
    forget, _ = sets
    model = copy.deepcopy(trained)
    scores, _ = zero_out_module.attribute(model, forget, torch.Generator(), max_rows=40)  # 6 neurons/batch
    base = loss(model, forget)
    for mlp in mlps(model):
        brute = torch.zeros(mlp.d_ff)
        for i in range(mlp.d_ff):

            def zero(_m, _inp, out, i=i):
                out = out.clone()
                out[..., i] = 0
                return out

            handle = mlp.act.register_forward_hook(zero)
            brute[i] = loss(model, forget) - base
            handle.remove()
        torch.testing.assert_close(scores[mlp.layer], brute, atol=1e-5, rtol=1e-4)
        assert brute.max() > 0.05  # some neuron does matter, so the comparison is not vacuous


def naive_ig(model, seqs: SequenceSet, steps: int) -> list[torch.Tensor]:
    """IG straight from the definition: re-run the whole prefix for every (sequence, position,
    layer), scaling that layer's activation at the position by k/steps."""
    layers = mlps(model)
    scores = [torch.zeros(m.d_ff) for m in layers]
    alpha = torch.arange(1, steps + 1).float()[:, None] / steps
    for row in seqs.tokens:
        positions = [t for t in range(seqs.prompt_len - 1, T - 1) if row[t + 1] != seqs.pad_id]
        for mlp in layers:
            for t in positions:
                seen: list[torch.Tensor] = []
                handle = mlp.act.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out))
                with torch.no_grad():
                    model(input_ids=row[None, : t + 1])
                handle.remove()
                base = seen[0][0, t]
                scaled = (base * alpha).requires_grad_(True)

                def scale(_m, _i, out, t=t, scaled=scaled):
                    out = out.repeat(steps, 1, 1)
                    out[:, t] = scaled
                    return out

                handle = mlp.act.register_forward_hook(scale)
                logits = model(input_ids=row[None, : t + 1]).logits[:, t]
                handle.remove()
                prob = logits.softmax(-1)[:, row[t + 1]].sum()
                (grad,) = torch.autograd.grad(prob, scaled)
                scores[mlp.layer] += (base * grad.mean(0)).detach() / len(positions)
    return scores


@pytest.mark.parametrize("arch", ["gpt2", "neox"])
def test_integrated_gradients_equals_the_definition(arch, trained, neox, sets):
    """The KV-cache shortcut must give exactly what re-running every prefix gives."""
    forget, _ = sets
    model = copy.deepcopy(trained if arch == "gpt2" else neox)
    small = SequenceSet(forget.tokens[:3], PROMPT, PAD)
    fast, _ = ig_module.attribute(model, small, torch.Generator(), steps=4, max_sequences=None, max_rows=8)
    for got, want in zip(fast, naive_ig(model, small, 4)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        assert want.abs().max() > 1e-4


@pytest.mark.parametrize("name", NEURON)
def test_neuron_methods_run_on_gpt_neox(name, neox, sets):
    forget, retain = sets
    model = copy.deepcopy(neox)
    result = get(name).fn(model, EditTask(forget, retain), seed=0, ratio=0.05, **QUICK[name])
    assert [m.d_ff for m in mlps(model)] == [48, 48]
    assert result.stats["neurons_removed"] == [2, 2]
    for mlp, idx in zip(mlps(model), result.stats["removed"]):
        assert mlp.neuron_in_weights().shape == (48, 32)
        assert (mlp.neuron_in_weights()[idx] == 0).all() and (mlp.up.bias[idx] == 0).all()
    with torch.no_grad():
        logits = model(input_ids=forget.tokens).logits
    assert logits.shape == (len(forget), T, VOCAB) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["hard_concrete", "integrated_gradients", "slimming"])
def test_neuron_methods_are_deterministic_given_a_seed(name, trained, sets):
    forget, retain = sets
    runs = [
        get(name).fn(copy.deepcopy(trained), EditTask(forget, retain), seed=3, ratio=RATIO, **QUICK[name])
        for _ in range(2)
    ]
    assert runs[0].stats["removed"] == runs[1].stats["removed"]
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert torch.equal(a, b)


def test_a_ratio_sweep_reuses_the_attribution(trained, sets):
    forget, retain = sets
    fresh = get("zero_out").fn(copy.deepcopy(trained), EditTask(forget, retain), ratio=0.1)
    cached = EditTask(forget, retain, attributions=AttributionCache())
    small = get("zero_out").fn(copy.deepcopy(trained), cached, ratio=0.05)
    large = get("zero_out").fn(copy.deepcopy(trained), cached, ratio=0.1)
    other_seed = get("zero_out").fn(copy.deepcopy(trained), cached, ratio=0.1, seed=1)
    edited = copy.deepcopy(trained)
    mlps(edited)[0].remove_neurons(torch.tensor([0]))
    other_weights = get("zero_out").fn(edited, cached, ratio=0.1)
    assert not fresh.stats["attribution_reused"] and not small.stats["attribution_reused"]
    assert large.stats["attribution_reused"]
    assert large.stats["attribution_seconds"] == small.stats["attribution_seconds"]
    assert large.stats["removed"] == fresh.stats["removed"]
    assert all(set(a) <= set(b) for a, b in zip(small.stats["removed"], large.stats["removed"]))
    assert not other_seed.stats["attribution_reused"] and not other_weights.stats["attribution_reused"]
    after = get("zero_out").fn(copy.deepcopy(trained), EditTask(forget, retain), ratio=0.1)
    assert not after.stats["attribution_reused"]  # the memo lives only inside the block


def test_gradient_ascent_raises_forget_loss(trained, sets):
    forget, retain = sets
    base = losses(trained, sets)
    result = get("gradient_ascent").fn(
        copy.deepcopy(trained), EditTask(forget, retain), seed=0, lr=1e-3, steps=10
    )
    assert result.stats["steps"] == 10
    assert losses(result.model, sets)[0] > base[0] + 1.0


def test_gradient_ascent_kl_keeps_retain_loss_lower_than_plain_ascent(trained, sets):
    forget, retain = sets
    hp = {"seed": 0, "lr": 1e-3, "steps": 20}
    plain = get("gradient_ascent").fn(copy.deepcopy(trained), EditTask(forget, retain), **hp).model
    kl = get("gradient_ascent_kl").fn(copy.deepcopy(trained), EditTask(forget, retain), **hp)
    f_plain, r_plain = losses(plain, sets)
    f_kl, r_kl = losses(kl.model, sets)
    assert f_kl > losses(trained, sets)[0] + 1.0  # it still forgets
    assert r_kl < r_plain / 2
    assert "retain_kl_last" in kl.stats


def test_gradient_ascent_stops_early_and_is_deterministic(trained, sets):
    forget, retain = sets
    hp = {"seed": 1, "lr": 1e-3, "steps": 50, "max_forget_loss": 3.0}
    # the registered methods run all their steps: `ascend` is where the early stop is open
    a = ascend(copy.deepcopy(trained), forget, retain, batch_size=BATCH_SIZE, kl_weight=1.0, **hp)
    b = ascend(copy.deepcopy(trained), forget, retain, batch_size=BATCH_SIZE, kl_weight=1.0, **hp)
    assert a.stats["stopped_early"] and a.stats["steps"] < 50
    assert a.stats == {**b.stats, "seconds": a.stats["seconds"]}
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", NEURON + ["gradient_ascent", "gradient_ascent_kl"])
def test_bad_input_is_a_clear_error(name, trained, sets):
    forget, retain = sets
    empty = SequenceSet(forget.tokens[:0], PROMPT, PAD)
    hp = {"ratio": RATIO} if name in NEURON else {}
    with pytest.raises(ValueError, match="forget set is empty"):
        get(name).fn(copy.deepcopy(trained), EditTask(empty, retain), **hp)
    padded = forget.tokens.clone()
    padded[:, PROMPT:] = PAD  # nothing after the prompt to unlearn
    with pytest.raises(ValueError, match="no non-padding tokens"):
        get(name).fn(copy.deepcopy(trained), EditTask(SequenceSet(padded, PROMPT, PAD), retain), **hp)
    if name in NEURON:
        for ratio in (0.0, -0.1, 1.5, float("nan")):
            with pytest.raises(ValueError, match="ratio"):
                get(name).fn(copy.deepcopy(trained), EditTask(forget, retain), ratio=ratio)
        llama = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=T,
            )
        )
        with pytest.raises(ValueError, match="unsupported architecture"):
            get(name).fn(llama, EditTask(forget, retain), ratio=RATIO)
    if name == "gradient_ascent_kl":
        with pytest.raises(ValueError, match="retain set is empty"):
            get(name).fn(
                copy.deepcopy(trained), EditTask(forget, SequenceSet(retain.tokens[:0], PROMPT, PAD))
            )
