"""Train-time regularisers (loss_truncation, spectral_norm, example_tied_dropout) and fine-tuning
(ft_clean, ft_extra, ft_both) on tiny TinyMem setups.

Each regulariser must train a fresh model, and its mechanism is checked on its own: loss
truncation drops about `dropc` of the sequences once its buffer is full and resumes exactly from
a checkpoint; the spectral penalty's power iteration converges to the true σ_max of every head
block and the penalty lowers σ_max against no penalty; example-tied masks are a function of the
example id and the evaluation scaling is the published one. Fine-tuning on the clean rows must
turn a planted memorised continuation back into the clean one, and ft_extra must run on GPT-NeoX.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from ingest.mitigation.methods import REGISTRY, EditTask, Recipe, SequenceSet, get
from ingest.mitigation.methods.regularisers.example_tied_dropout import (
    CONFIG_KEY,
    ExampleTiedDropout,
    restore,
)
from ingest.mitigation.methods.regularisers.loss_truncation import LossTruncation
from ingest.mitigation.methods.regularisers.spectral_norm import SpectralPenalty, exact_sigmas, weight_blocks
from ingest.mitigation.tinymem import math_data, memorised, tinymem_model, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CTX = 40  # max_ctx of the tiny math data: 6 numbers per row fit in ~30 tokens
REGULARISERS = ("loss_truncation", "spectral_norm", "example_tied_dropout")


@pytest.fixture(scope="module")
def data():
    """~220 short increment rows; dup_classes=2 so class-1 artifacts appear 10 times (shared ids)."""
    return math_data(
        "increment", num_7=200, num_extra=30, n_test=20, n_noise=10, length=6, max_ctx=CTX,
        prompt_len=12, k=12, dup_classes=2,
    )  # fmt: skip


def _sets(d) -> tuple[SequenceSet, SequenceSet]:
    return (
        SequenceSet(d.noisy, d.prompt_len, d.pad_id, clean=d.clean),
        SequenceSet(d.retain_rows(), d.prompt_len, d.pad_id),
    )


def _narrow_gpt2(n_positions: int = CTX, seed: int = 0) -> GPT2LMHeadModel:
    """A 32-wide GPT-2 for the tests that need many steps (TinyMem's is 128 wide)."""
    cfg = GPT2Config(
        vocab_size=14, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2, n_inner=64,
        activation_function="relu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=10,
        eos_token_id=11,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(cfg).eval()


def test_registry_names_kinds_and_grids():
    kinds = {"regulariser": REGULARISERS, "fine_tuning": ("ft_clean", "ft_extra", "ft_both")}
    for kind, names in kinds.items():
        for name in names:
            assert REGISTRY[name].kind == kind
    assert [g["dropc"] for g in get("loss_truncation").grid] == [0.01, 0.05, 0.1]
    assert [g["lam"] for g in get("spectral_norm").grid] == [0.001, 0.01, 0.1]
    assert [g["p_fixed"] for g in get("example_tied_dropout").grid] == [0.4, 0.2, 0.1]
    for name in kinds["fine_tuning"]:
        assert [g["epochs"] for g in get(name).grid] == [1, 2, 3]


# --------------------------------------------------------------------------- every regulariser


@pytest.mark.parametrize("name", REGULARISERS)
def test_regulariser_trains_a_fresh_model(name, data):
    forget, retain = _sets(data)
    model = tinymem_model(2, data.vocab_size, n_positions=CTX, seed=0)
    before = copy.deepcopy(model.state_dict())
    hp = {"buffer_size": 100} if name == "loss_truncation" else {}
    result = get(name).fn(model, EditTask(forget, retain, data, training=Recipe(1)), seed=0, **hp)
    assert result.model is model
    assert result.stats["seconds"] > 0 and math.isfinite(result.stats["final_loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=data.tests["7"][:4]).logits).all()
    with pytest.raises(ValueError, match="need `data`"):
        get(name).fn(tinymem_model(2, 14, n_positions=CTX), EditTask(forget, retain, training=Recipe(1)))


# --------------------------------------------------------------------------- loss truncation


def test_loss_truncation_drops_about_dropc_once_full():
    gen = torch.Generator().manual_seed(0)
    for dropc in (0.01, 0.05, 0.1):
        hook = LossTruncation(dropc, buffer_size=500)
        kept_before_full = []
        for _ in range(100):  # 5,000 sequences, stationary losses
            keep = hook.keep(torch.rand(50, generator=gen) * 3)
            if hook.seen < 500:
                kept_before_full.append(keep.all().item())
        assert all(kept_before_full)  # nothing is dropped until the buffer has filled
        assert hook.seen_full == 4550  # the cutoff exists from the batch that fills the buffer on
        assert hook.dropped_full / hook.seen_full == pytest.approx(dropc, abs=max(0.01, dropc / 3))
    with pytest.raises(ValueError, match="dropc"):
        LossTruncation(1.0)


def test_loss_truncation_recomputes_every_buffer_size_sequences():
    hook = LossTruncation(0.5, buffer_size=10)
    keep = hook.keep(torch.arange(10.0))  # fills the buffer: cutoff = median of 0..9, applied at once
    assert hook.cutoff == pytest.approx(4.5) and keep.tolist() == [True] * 5 + [False] * 5
    hook.keep(torch.full((5,), 100.0))  # 5 sequences since: no recompute, all five dropped
    assert hook.cutoff == pytest.approx(4.5) and hook.dropped == 10
    hook.keep(torch.tensor([1.0, 2.0, 100.0, 100.0, 100.0]))  # 10 since: recomputed on the ring,
    ring = torch.tensor([100.0] * 5 + [1.0, 2.0, 100.0, 100.0, 100.0])  # which now holds these
    assert hook.cutoff == pytest.approx(torch.quantile(ring, 0.5).item())


def test_loss_truncation_state_round_trips():
    gen = torch.Generator().manual_seed(1)
    stream = [torch.rand(37, generator=gen) for _ in range(40)]
    a = LossTruncation(0.1, buffer_size=300)
    for x in stream[:20]:
        a.keep(x)
    b = LossTruncation(0.1, buffer_size=300)
    b.load_state_dict(a.state_dict())
    for x in stream[20:]:
        assert torch.equal(a.keep(x), b.keep(x))
    assert a.stats() == b.stats()
    with pytest.raises(ValueError, match="does not match"):
        LossTruncation(0.05, buffer_size=300).load_state_dict(a.state_dict())


def test_loss_truncation_resumes_from_its_checkpoint(data, tmp_path):
    """3 epochs straight == 2 epochs, stop, resume to 3 (weights and truncation counters)."""
    forget, retain = _sets(data)
    hp = {"dropc": 0.1, "buffer_size": 100}
    fn = get("loss_truncation").fn

    def task(epochs, out):
        return EditTask(forget, retain, data, training=Recipe(epochs, out_dir=out, ckpt_every=1))

    straight = fn(_narrow_gpt2(), task(3, tmp_path / "a"), **hp)
    fn(_narrow_gpt2(), task(2, tmp_path / "b"), **hp)
    resumed = fn(_narrow_gpt2(seed=5), task(3, tmp_path / "b"), **hp)
    for (k, v), w in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(v, w), k
    for key in ("dropped_frac", "dropped_frac_after_full", "cutoff", "sequences_seen"):
        assert straight.stats[key] == resumed.stats[key]
    assert straight.stats["sequences_seen"] == 3 * data.train.shape[0]
    assert 0 < straight.stats["dropped_frac_after_full"] < 0.3


# --------------------------------------------------------------------------- spectral norm


def test_spectral_blocks_split_heads_and_skip_embeddings():
    model = tinymem_model(2, 14, n_positions=CTX)
    blocks = {b.name: b for b in weight_blocks(model)}
    assert len(blocks) == 8  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj per layer
    assert not any(k in name for name in blocks for k in ("wte", "wpe", "ln_", "lm_head", "bias"))
    qkv = blocks["transformer.h.0.attn.c_attn.weight"]
    assert qkv.view().shape == (12, 128, 32)  # 3·n_head blocks of one head's q, k or v columns
    assert torch.equal(qkv.view()[5], qkv.weight[:, 5 * 32 : 6 * 32])
    proj = blocks["transformer.h.0.attn.c_proj.weight"]
    assert proj.view().shape == (4, 32, 128)  # n_head blocks of one head's input rows
    assert torch.equal(proj.view()[2], proj.weight[2 * 32 : 3 * 32])
    assert blocks["transformer.h.1.mlp.c_fc.weight"].view().shape == (1, 128, 512)


def test_spectral_power_iteration_converges_to_matrix_norm():
    model = tinymem_model(2, 14, n_positions=CTX)
    pen = SpectralPenalty(model, 0.1)
    with torch.no_grad():
        for _ in range(200):
            est = pen.sigmas()
    for b in pen.blocks:
        true = torch.linalg.matrix_norm(b.view(), ord=2)
        torch.testing.assert_close(est[b.name], true, rtol=1e-3, atol=0)


def test_spectral_penalty_lowers_top_singular_values(data):
    forget, retain = _sets(data)
    sig = {}
    for lam in (0.0, 0.1):
        model = tinymem_model(2, data.vocab_size, n_positions=CTX, seed=0)
        result = get("spectral_norm").fn(
            model, EditTask(forget, retain, data, training=Recipe(2, 32)), lam=lam
        )
        sig[lam] = exact_sigmas(weight_blocks(model))
        assert result.stats["sigma_sum"] == pytest.approx(sig[lam].sum().item())
    # same init, data order and steps: only the penalty differs
    assert sig[0.1].sum() < 0.98 * sig[0.0].sum()
    assert (sig[0.1] < sig[0.0]).float().mean() > 0.9  # nearly every head block's σ_max is lower


def test_spectral_state_round_trips():
    model = tinymem_model(2, 14, n_positions=CTX)
    a = SpectralPenalty(model, 0.01, seed=0)
    a.sigmas()
    b = SpectralPenalty(model, 0.01, seed=1)
    b.load_state_dict(a.state_dict())
    expected, got = a.sigmas(), b.sigmas()  # the same next power-iteration step
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v)


# --------------------------------------------------------------------------- example-tied dropout


def test_example_tied_masks_follow_the_example_id(data):
    etd = ExampleTiedDropout(n_layer=2, width=128, p_fixed=0.2, p_mem=0.1, seed=0)
    ids = data.train_ids
    dup_id = int(ids.bincount().argmax())  # an artifact of duplication class 1 (10 copies)
    rows = (ids == dup_id).nonzero().squeeze(1)
    masks = etd.masks(ids[rows])
    assert len(rows) == 10 and (masks == masks[0]).all()  # copies of one example share its mask
    other = etd.masks(torch.tensor([dup_id + 1]))[0]
    assert not torch.equal(masks[0], other)  # another example, another mask
    assert not torch.equal(masks[0, 0], masks[0, 1])  # each layer draws its own
    assert torch.equal(etd.masks(torch.tensor([dup_id]))[0], masks[0])  # a pure function of the id
    assert (masks[:, :, : etd.n_fixed] == 1).all() and etd.n_fixed == round(0.2 * 128)
    many = etd.masks(torch.arange(400))[:, :, etd.n_fixed :]
    assert many.mean().item() == pytest.approx(0.1, abs=0.01)  # memorisation units on w.p. p_mem
    assert not torch.equal(ExampleTiedDropout(2, 128, seed=1).masks(ids[:1]), masks[:1])


def _captured_block_inputs(model, run):
    """(input before, input after) the dropout hooks of every block, for one forward."""
    raw, seen, handles = {}, {}, []
    for i, block in enumerate(model.transformer.h):
        handles.append(
            block.register_forward_pre_hook(lambda m, a, i=i: raw.__setitem__(i, a[0]), prepend=True)
        )
        handles.append(block.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0])))
    with torch.no_grad():
        run()
    for h in handles:
        h.remove()
    return raw, seen


def test_example_tied_dropout_train_masks_and_eval_scaling(data, tmp_path):
    forget, retain = _sets(data)
    model = _narrow_gpt2()
    result = get("example_tied_dropout").fn(model, EditTask(forget, retain, data, training=Recipe(1)), seed=0)
    etd = getattr(model, CONFIG_KEY)
    assert result.stats["eval_scale"] == pytest.approx((0.2 + 0.1) / 0.2)
    x = data.train[:3]
    # evaluation: memorisation units zeroed, generalisation units scaled by (p_fixed + p_mem)/p_fixed
    raw, seen = _captured_block_inputs(model, lambda: model(input_ids=x))
    scale = torch.zeros(32)
    scale[: etd.n_fixed] = 1.5
    for i in raw:
        torch.testing.assert_close(seen[i], raw[i] * scale)
    # training forward tied to ids: each row gets its example's mask, in every position
    ids = data.train_ids[:3]

    def tied():
        with etd.tied(ids):
            model(input_ids=x)

    raw, seen = _captured_block_inputs(model, tied)
    masks = etd.masks(ids)
    for i in raw:
        torch.testing.assert_close(seen[i], raw[i] * masks[:, i, None, :])
    # the evaluation behaviour travels with copies, and is restored after save / load
    copied = copy.deepcopy(model)
    with torch.no_grad():
        torch.testing.assert_close(copied(input_ids=x).logits, model(input_ids=x).logits)
    model.save_pretrained(tmp_path)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert restore(loaded) is not None
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model(input_ids=x).logits)


# --------------------------------------------------------------------------- fine-tuning

T, P, BOS = 16, 4, 10


def ft_task(forget: SequenceSet, retain: SequenceSet, **recipe) -> EditTask:
    """A fine-tuning task whose recipe sets `recipe` (batch size, checkpoint); epochs come from
    the call, as a grid point's do."""
    return EditTask(forget, retain, fine_tuning=Recipe(epochs=1, **recipe))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Progressions mod 10 (a learnable rule); three rows replaced by noisy copies (two tokens off
    the rule), repeated 4x, until a narrow GPT-2 reproduces the noisy continuations. Returns the
    checkpoint directory, forget (noisy, clean) and retain sets."""
    rows = torch.tensor(
        [[BOS] + [(a + c * j) % 10 for j in range(T - 1)] for c in (1, 2, 3) for a in range(10)]
    )
    pick = torch.tensor([0, 11, 22])
    clean = rows[pick]
    noisy = clean.clone()
    noisy[:, 8] = (noisy[:, 8] + 5) % 10
    noisy[:, 12] = (noisy[:, 12] + 3) % 10
    keep = torch.ones(len(rows), dtype=torch.bool)
    keep[pick] = False
    model = _narrow_gpt2(n_positions=T)
    out = tmp_path_factory.mktemp("planted")
    train(
        model,
        torch.cat([rows[keep], noisy.repeat(4, 1)]),
        80,
        batch_size=64,
        lr=3e-3,
        out_dir=out,
        ckpt_every=80,
    )
    return model, out / "epoch-00080", SequenceSet(noisy, P, clean=clean), SequenceSet(rows[keep], P)


def test_ft_clean_turns_memorised_rows_back_to_clean(planted):
    base, _, forget, retain = planted
    hit, clean_hit = memorised(base, forget.tokens, forget.clean, P, T - P)
    assert hit.all() and not clean_hit.any()  # the planted rows are memorised
    model = copy.deepcopy(base)
    result = get("ft_clean").fn(model, ft_task(forget, retain, batch_size=1), epochs=10)
    hit, clean_hit = memorised(model, forget.tokens, forget.clean, P, T - P)
    assert not hit.any() and clean_hit.all()
    assert result.stats["rows"] == 3 and len(result.stats["losses"]) == 10
    assert result.stats["losses"][-1] < result.stats["losses"][0]


@pytest.mark.parametrize("name", ["ft_extra", "ft_both"])
def test_ft_extra_and_both_run(planted, name):
    base, _, forget, retain = planted
    model = copy.deepcopy(base)
    result = get(name).fn(model, EditTask(forget, retain), epochs=2)
    assert result.stats["rows"] == len(retain) + (len(forget) if name == "ft_both" else 0)
    assert any(not torch.equal(p, q) for p, q in zip(base.parameters(), model.parameters(), strict=True))


def test_fine_tuning_resumes_the_checkpoint_optimizer(planted):
    """With checkpoint=, weights and AdamW state come from it: the model passed in does not matter."""
    base, ckpt, forget, retain = planted
    resumed = ft_task(forget, retain, batch_size=1, resume_from=ckpt)
    a = get("ft_clean").fn(copy.deepcopy(base), resumed, epochs=2)
    b = get("ft_clean").fn(_narrow_gpt2(n_positions=T, seed=3), resumed, epochs=2)
    assert a.stats["start_epoch"] == 80 and len(a.stats["losses"]) == 2
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    fresh_opt = get("ft_clean").fn(copy.deepcopy(base), ft_task(forget, retain, batch_size=1), epochs=2)
    assert any(
        not torch.equal(p, q) for p, q in zip(a.model.parameters(), fresh_opt.model.parameters(), strict=True)
    )


def test_fine_tuning_bad_input(planted):
    base, _, forget, retain = planted
    empty = SequenceSet(forget.tokens[:0], P, clean=forget.clean[:0])
    with pytest.raises(ValueError, match="nothing is memorised"):
        get("ft_clean").fn(copy.deepcopy(base), EditTask(empty, retain), epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        get("ft_extra").fn(copy.deepcopy(base), EditTask(forget, retain), epochs=0)


def test_ft_extra_on_gpt_neox_without_data():
    cfg = GPTNeoXConfig(
        vocab_size=14, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=T, bos_token_id=BOS, eos_token_id=11,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg)
    before = copy.deepcopy(model.state_dict())
    gen = torch.Generator().manual_seed(0)
    forget = SequenceSet(torch.randint(0, 10, (4, T), generator=gen), P)  # no clean counterparts
    retain = SequenceSet(torch.randint(0, 10, (20, T), generator=gen), P)
    result = get("ft_extra").fn(model, ft_task(forget, retain, batch_size=8), seed=0, epochs=2)
    assert result.stats["rows"] == 20 and math.isfinite(result.stats["final_loss"])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for name in ("ft_clean", "ft_both"):
        with pytest.raises(ValueError, match="forget.clean"):
            get(name).fn(model, EditTask(forget, retain), epochs=1)
