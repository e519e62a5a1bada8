"""Weight-level unlearning methods (greedy, durable, durable_aggregate, second_order, subnet,
balanced_subnet) on a tiny GPT-2 that has memorised a few random rows among patterned ones.

Each method must zero only MLP weights, exactly as many as it says, raise the forget loss, and
(for the scored methods) do so better than zeroing as many random MLP weights. The pieces with
their own maths (block Fisher inverse, global vs per-tensor ranking, mixed batches) are checked
directly; the same methods must run on a tiny GPT-NeoX.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from ingest.lm.arch import mlp_parameters
from ingest.mitigation.methods import REGISTRY, EditTask, SequenceSet, get, sequence_loss
from ingest.mitigation.methods.weights._shared import MixedBatches, global_masks, n_selected, per_tensor_masks
from ingest.mitigation.methods.weights.greedy import zero_greedily
from ingest.mitigation.methods.weights.second_order import BlockFisherInverse

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

T, PROMPT, BOS = 16, 4, 10
WEIGHT_METHODS = ("greedy", "durable", "durable_aggregate", "second_order", "subnet", "balanced_subnet")
# Small settings: the tiny GPT-2 has 8,192 MLP weights and ~10 k parameters in all.
HPARAMS = {
    "greedy": {"ratio": 0.003},
    "durable": {"ratio": 0.02},
    # the global top-k lands mostly outside the MLPs here: 0.02 zeroes only ~40 MLP weights
    "durable_aggregate": {"ratio": 0.1},
    "second_order": {"ratio": 0.02},
    "subnet": {"ratio": 0.3, "epochs": 20},
    "balanced_subnet": {"ratio": 0.3, "epochs": 20},
}


def _data() -> tuple[SequenceSet, SequenceSet]:
    """Retain: 30 arithmetic progressions mod 10 (learnable rule). Forget: 4 random digit rows
    (only learnable by memorising them)."""
    retain = torch.tensor(
        [[BOS] + [(a + c * j) % 10 for j in range(T - 1)] for a in range(10) for c in (1, 2, 3)]
    )
    gen = torch.Generator().manual_seed(0)
    forget = torch.cat([torch.full((4, 1), BOS), torch.randint(0, 10, (4, T - 1), generator=gen)], 1)
    return SequenceSet(forget, prompt_len=PROMPT), SequenceSet(retain, prompt_len=PROMPT)


def _gpt2() -> GPT2LMHeadModel:
    cfg = GPT2Config(
        vocab_size=14,
        n_positions=T,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_inner=64,
        activation_function="relu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=BOS,
        eos_token_id=11,
    )
    return GPT2LMHeadModel(cfg)


def _neox() -> GPTNeoXForCausalLM:
    cfg = GPTNeoXConfig(
        vocab_size=14,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=T,
        bos_token_id=BOS,
        eos_token_id=11,
    )
    return GPTNeoXForCausalLM(cfg)


def _losses(model, forget: SequenceSet, retain: SequenceSet) -> tuple[float, float]:
    """(forget loss on the memorised suffix, retain loss over whole rows)."""
    with torch.no_grad():
        f = sequence_loss(model, forget.tokens, None, start=forget.prompt_len).mean()
        r = sequence_loss(model, retain.tokens, None).mean()
    return float(f), float(r)


@pytest.fixture(scope="module")
def memorised():
    """Tiny GPT-2 trained until the 4 random rows are memorised (forget loss ≈ 0)."""
    forget, retain = _data()
    torch.manual_seed(0)
    model = _gpt2()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Forget and retain weighted equally, so 4 rows memorise quickly; stopping once the forget
    # loss is under 0.05, rather than at ~0, keeps its gradient informative for the scored
    # methods. (A fixed step count stopped at 0.04 with one transformers release and at 0.008,
    # where durable's scores no longer find the memorising weights, with a later one.)
    for _ in range(300):
        loss = (
            sequence_loss(model, retain.tokens, None).mean()
            + sequence_loss(model, forget.tokens, None).mean()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        f, r = _losses(model, forget, retain)
        model.train()
        if f < 0.05 and r < 0.5:
            break
    model.eval()
    assert f < 0.05 and r < 0.5, (f, r)
    return model, forget, retain


@pytest.fixture(scope="module")
def edited(memorised):
    """Each method applied once (seed 0) to its own copy of the memorised model."""
    model, forget, retain = memorised
    out = {}
    for name in WEIGHT_METHODS:
        m = copy.deepcopy(model)
        out[name] = (m, get(name).fn(m, EditTask(forget, retain), seed=0, **HPARAMS[name]).stats)
    return out


def _changes(before, after) -> dict[str, int]:
    """Parameter name -> number of changed entries; asserts every change is a zeroing."""
    a = dict(after.named_parameters())
    out = {}
    for name, p in before.named_parameters():
        diff = p.detach() != a[name].detach()
        if diff.any():
            assert (a[name].detach()[diff] == 0).all(), f"{name}: changed entries that were not zeroed"
            out[name] = int(diff.sum())
    return out


def _expected_count(name: str, model) -> int | None:
    ratio = HPARAMS[name]["ratio"]
    if name == "greedy":
        return n_selected(ratio, sum(p.numel() for p in model.parameters()))
    if name == "durable_aggregate":
        return None  # depends on how much of the global top-k lands in MLP weights
    return sum(n_selected(ratio, w.numel()) for _, w in mlp_parameters(model))


def _random_zeroing(model, count: int, seed: int):
    """A copy of `model` with `count` MLP weights, chosen uniformly at random, set to zero."""
    m = copy.deepcopy(model)
    weights = [w for _, w in mlp_parameters(m)]
    sizes = [w.numel() for w in weights]
    pick = torch.randperm(sum(sizes), generator=torch.Generator().manual_seed(seed))[:count]
    with torch.no_grad():
        for i in pick.tolist():
            t = 0
            while i >= sizes[t]:
                i -= sizes[t]
                t += 1
            weights[t].view(-1)[i] = 0
    return m


# --------------------------------------------------------------------------- registry


def test_registered_with_cpu_grids():
    for name in WEIGHT_METHODS:
        method = REGISTRY[name]
        assert method.kind == "weight" and method.grid, name
        ratios = {g["ratio"] for g in method.grid}
        if name in ("subnet", "balanced_subnet"):
            assert ratios == {0.01, 0.05, 0.3}
        else:
            assert max(ratios) < 0.1 and min(ratios) == 1e-5
    assert {g["alpha"] for g in REGISTRY["balanced_subnet"].grid} == {0.9, 0.7, 0.5}
    assert {g["epochs"] for g in REGISTRY["subnet"].grid} == {1, 10, 20}
    assert max(g["ratio"] for g in REGISTRY["greedy"].grid) <= 1e-3


# --------------------------------------------------------------------------- behaviour on GPT-2


@pytest.mark.parametrize("name", WEIGHT_METHODS)
def test_zeroes_only_mlp_weights_exact_count(memorised, edited, name):
    model, _, _ = memorised
    after, stats = edited[name]
    changes = _changes(model, after)
    mlp_names = {n for n, _ in mlp_parameters(model)}
    assert changes and set(changes) <= mlp_names, set(changes) - mlp_names
    total = sum(changes.values())
    assert total == stats["weights_zeroed"]
    expected = _expected_count(name, model)
    if expected is not None:
        assert total == expected
    else:
        n_params = sum(p.numel() for p in model.parameters())
        assert 0 < total <= stats["selected"] == n_selected(HPARAMS[name]["ratio"], n_params)
    assert stats["seconds"] > 0 and stats["iterations"] >= 1


@pytest.mark.parametrize("name", WEIGHT_METHODS)
def test_raises_forget_loss(memorised, edited, name):
    model, forget, retain = memorised
    before, _ = _losses(model, forget, retain)
    after, _ = _losses(edited[name][0], forget, retain)
    assert after > 3 * before, (before, after)


@pytest.mark.parametrize("name", ["durable", "durable_aggregate", "second_order", "greedy"])
def test_beats_random_zeroing(memorised, edited, name):
    """The scores must point at what the memorised rows need: a larger forget loss than zeroing
    as many random MLP weights (mean of five draws; Durable's margin is the thinnest)."""
    model, forget, retain = memorised
    after, stats = edited[name]
    targeted = _losses(after, forget, retain)[0]
    draws = [_losses(_random_zeroing(model, stats["weights_zeroed"], s), forget, retain)[0] for s in range(5)]
    assert targeted > 2 * sum(draws) / len(draws), (targeted, draws)


def test_balanced_subnet_spares_retain(memorised, edited):
    """Same ratio, epochs and seed (hence the same initial random mask): the retain term must
    keep retain loss well below Subnet's, while the forget loss still rises."""
    model, forget, retain = memorised
    base_f, base_r = _losses(model, forget, retain)
    sub_f, sub_r = _losses(edited["subnet"][0], forget, retain)
    bal_f, bal_r = _losses(edited["balanced_subnet"][0], forget, retain)
    assert bal_r < sub_r / 2, (bal_r, sub_r)
    assert bal_f - base_f > 5 * (bal_r - base_r), (base_f, bal_f, base_r, bal_r)


def test_greedy_cap_and_state_restored(memorised):
    model, forget, retain = memorised
    m = copy.deepcopy(model).train()
    m.transformer.wpe.weight.requires_grad_(False)
    stats = zero_greedily(m, EditTask(forget, retain), ratio=0.01, max_iterations=3).stats
    assert stats["weights_zeroed"] == stats["iterations"] == 3 and stats["capped"]
    assert stats["target_iterations"] == n_selected(
        0.01, sum(p.numel() for p in m.parameters() if p.requires_grad)
    )
    assert m.training and not m.transformer.wpe.weight.requires_grad
    assert all(p.requires_grad for n, p in m.named_parameters() if n != "transformer.wpe.weight")


def test_works_under_no_grad(memorised):
    model, forget, retain = memorised
    m = copy.deepcopy(model)
    with torch.no_grad():
        stats = get("durable").fn(m, EditTask(forget, retain), ratio=0.01).stats
    assert sum(_changes(model, m).values()) == stats["weights_zeroed"] > 0


@pytest.mark.parametrize("name", ["greedy", "second_order", "subnet", "balanced_subnet"])
def test_deterministic_given_seed(memorised, name):
    model, forget, retain = memorised
    small = {
        "greedy": {"ratio": 5e-4},
        "second_order": {"ratio": 0.01, "num_grads": 2},
        "subnet": {"ratio": 0.1, "epochs": 2},
        "balanced_subnet": {"ratio": 0.1, "epochs": 2},
    }[name]
    runs = []
    for seed in (1, 1, 2):
        m = copy.deepcopy(model)
        get(name).fn(m, EditTask(forget, retain), seed=seed, **small)
        runs.append(torch.cat([w.detach().flatten() for _, w in mlp_parameters(m)]))
    assert torch.equal(runs[0], runs[1])
    if name in ("subnet", "balanced_subnet", "second_order"):  # seed picks masks / gradient sample
        assert not torch.equal(runs[0], runs[2])


# --------------------------------------------------------------------------- the pieces


@pytest.mark.parametrize("damping", [1e-3, 1e-7])
def test_block_fisher_inverse_matches_direct_inverse(damping):
    gen = torch.Generator().manual_seed(0)
    m, n, block = 7, 120, 50  # 3 blocks, the last one padded (20 real weights)
    grads = torch.randn(m, n, generator=gen, dtype=torch.float64)
    fisher = BlockFisherInverse(n, m, block=block, damping=damping)
    for g in grads:
        fisher.update(g)
    diag = []
    for b, start in enumerate(range(0, n, block)):
        g = grads[:, start : start + block]
        direct = torch.linalg.inv(damping * torch.eye(g.shape[1], dtype=torch.float64) + g.T @ g / m)
        width = g.shape[1]
        torch.testing.assert_close(
            fisher.inv[b, :width, :width], direct, rtol=1e-5, atol=1e-6 * direct.abs().max()
        )
        diag.append(direct.diagonal())
    torch.testing.assert_close(fisher.diagonal(), torch.cat(diag), rtol=1e-5, atol=0)


def test_global_ranking_differs_from_per_tensor():
    """MLP tensor `a` has far larger gradients than MLP tensor `b`; a non-MLP tensor `c` sits in
    between. Per tensor, both MLP tensors lose 25 %; globally the budget (25 % of 300 = 75) goes
    to `a` and `c`, and the part in `c` is selected but not edited."""
    a = torch.linspace(10, 20, 100).view(10, 10)
    b = torch.linspace(0, 1, 100).view(10, 10)
    c = torch.linspace(5, 9.9, 100)
    local = per_tensor_masks([a, b], 0.25)
    assert [int(m.sum()) for m in local] == [25, 25]
    glob = global_masks([a, b, c], 0.25, editable=[True, True, False])
    assert [int(m.sum()) for m in glob] == [75, 0, 0]
    assert not torch.equal(glob[1], local[1])
    assert glob[0][local[0]].all()  # the per-tensor top-25 of `a` is inside the global pick
    glob = global_masks([a, b, c], 0.5, editable=[True, True, False])
    assert [int(m.sum()) for m in glob] == [100, 0, 0]  # 150 selected, 50 of them in `c`, unedited


def test_mixed_batches_hold_both_kinds():
    forget, retain = _data()
    one = SequenceSet(forget.tokens[:1], prompt_len=PROMPT)
    batches = MixedBatches(one, retain, 8, torch.Generator().manual_seed(0))
    assert batches.n_forget == 1 and batches.n_retain == 7 and batches.steps_per_epoch == 5
    seen = set()
    for _ in range(5):
        f, r = next(batches)
        assert f.shape == (1, T) and r.shape == (7, T)
        seen |= {tuple(row) for row in r.tolist()}
    assert len(seen) == len(retain)  # one epoch covers the larger set
    with pytest.raises(ValueError, match="batch_size"):
        MixedBatches(forget, retain, 1, torch.Generator())


def test_per_row_starts_judge_each_row_from_its_own_start():
    """A set whose rows' judged windows start in different places (backdoors: after each row's
    trigger): every loss and mask must use each row's own start, whatever the batch order."""
    from ingest.mitigation.methods._sequences import suffix_loss, suffix_mask
    from ingest.mitigation.methods.weights._shared import forget_loss

    forget, _ = _data()
    starts = torch.tensor([4, 9, 6, 12])
    seqs = SequenceSet(forget.tokens, 4, prompt_lens=starts)
    model = _gpt2().eval()
    order = torch.tensor([2, 0, 3, 3, 1])  # shuffled, one row repeated
    batch = seqs.tokens[order]
    assert torch.equal(seqs.starts(batch), starts[order])
    with torch.no_grad():
        want = torch.stack(
            [sequence_loss(model, seqs.tokens[i : i + 1], None, int(starts[i]))[0] for i in order]
        )
        assert torch.allclose(forget_loss(model, batch, seqs), want)
        assert torch.allclose(suffix_loss(model, batch, seqs), want)
    mask = suffix_mask(batch, seqs.starts(batch), None)
    for row, i in zip(mask, order):  # the activation at t predicts token t + 1
        assert row.nonzero().flatten().tolist() == list(range(int(starts[i]) - 1, T - 1))
    sub = seqs.subset(torch.tensor([1, 3]))
    assert torch.equal(sub.prompt_lens, starts[[1, 3]]) and sub.starts(sub.tokens).tolist() == [9, 12]
    with pytest.raises(ValueError, match="outside"):
        seqs.starts(torch.zeros(1, T, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt_lens"):
        SequenceSet(forget.tokens, 5, prompt_lens=starts)  # a start before prompt_len


# --------------------------------------------------------------------------- other models, bad input


@pytest.mark.parametrize("name", WEIGHT_METHODS)
def test_runs_on_gpt_neox(name):
    forget, retain = _data()
    torch.manual_seed(0)
    model = _neox().eval()
    after = copy.deepcopy(model)
    hp = {**HPARAMS[name], **({"epochs": 1} if "epochs" in HPARAMS[name] else {})}
    stats = get(name).fn(after, EditTask(forget, retain), seed=0, **hp).stats
    changes = _changes(model, after)
    assert set(changes) <= {n for n, _ in mlp_parameters(model)}
    assert any("dense_h_to_4h" in n for n in changes) or name in ("greedy", "durable_aggregate")
    assert sum(changes.values()) == stats["weights_zeroed"] > 0
    expected = _expected_count(name, model)
    if expected is not None:
        assert stats["weights_zeroed"] == expected


@pytest.mark.parametrize("name", WEIGHT_METHODS)
def test_bad_input(memorised, name):
    model, forget, retain = memorised
    fn = get(name).fn
    empty = SequenceSet(forget.tokens[:0], prompt_len=PROMPT)
    with pytest.raises(ValueError, match="forget set is empty"):
        fn(copy.deepcopy(model), EditTask(empty, retain), **HPARAMS[name])
    for ratio in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            fn(copy.deepcopy(model), EditTask(forget, retain), **{**HPARAMS[name], "ratio": ratio})
    if name in ("greedy", "balanced_subnet"):
        with pytest.raises(ValueError, match="retain set is empty"):
            fn(
                copy.deepcopy(model),
                EditTask(forget, SequenceSet(retain.tokens[:0], prompt_len=PROMPT)),
                **HPARAMS[name],
            )
    if "epochs" in HPARAMS[name]:
        with pytest.raises(ValueError, match="epochs"):
            fn(copy.deepcopy(model), EditTask(forget, retain), **{**HPARAMS[name], "epochs": 0})
    if name == "balanced_subnet":
        with pytest.raises(ValueError, match="alpha"):
            fn(copy.deepcopy(model), EditTask(forget, retain), **{**HPARAMS[name], "alpha": 1.5})


def test_unsupported_architecture_is_a_clear_error():
    from transformers import LlamaConfig, LlamaForCausalLM

    forget, retain = _data()
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=14,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=T,
        )
    )
    for name in WEIGHT_METHODS:
        with pytest.raises(ValueError, match="unsupported architecture"):
            get(name).fn(llama, EditTask(forget, retain), **HPARAMS[name])
