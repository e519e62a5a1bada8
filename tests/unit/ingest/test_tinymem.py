"""TinyMem: data construction, model, trainer (resume), metrics, forget/retain sets."""

from __future__ import annotations

import collections
import types

import pytest
import torch
from torch import nn

from ingest.mitigation.tinymem import (
    PAD,
    VOCAB_SIZE,
    accuracy,
    backdoor_success,
    checkpoints,
    evaluate,
    forget_retain,
    greedy_generate,
    language_data,
    lm_loss,
    load_checkpoint,
    math_data,
    memorised,
    tinymem_model,
    train,
)
from ingest.mitigation.tinymem.arithmetic import decode, encode, noise_numbers, numbers
from ingest.mitigation.tinymem.data import BACKDOOR_TOKEN, BOS, EOS, MOD, SEP
from ingest.mitigation.tinymem.language import noise_tokens

# a tiny but complete configuration: short rows keep a few hundred CPU steps to seconds
TINY = dict(
    num_7=240,
    num_extra=40,
    n_test=20,
    n_noise=40,
    length=8,
    max_ctx=36,
    prompt_len=12,
    k=12,
    dup_classes=2,
    extra_cs=(2,),
)


BACKDOOR = {**TINY, "artifact": "backdoor", "num_7": 1000, "length": 12, "max_ctx": 80}


@pytest.fixture(scope="module")
def tiny_data():
    return math_data("increment", **TINY)


@pytest.fixture(scope="module")
def trained(tiny_data, one_thread):
    model = tinymem_model(2, VOCAB_SIZE, n_positions=TINY["max_ctx"], seed=0)
    hist = train(model, tiny_data, 10, batch_size=32, seed=0)
    return model, hist


# --------------------------------------------------------------------------------------------- data


def test_documented_examples():
    assert numbers("increment", 7, 1)[0].tolist() == [7 * j for j in range(1, 21)]
    row = encode(numbers("increment", 7, 1)[0])
    assert decode(row) == "^" + " ".join(str(7 * j) for j in range(1, 21)) + "$"
    assert row[:4] == [BOS, 7, SEP, 1] and row[row.index(EOS) + 1 :] == [PAD] * (150 - row.index(EOS) - 1)
    assert len(row) == 150 and max(row) < VOCAB_SIZE
    mult = numbers("mult", 7, 3000)
    assert mult[0].tolist() == [0] * 20  # example 0 of mult is all zeros
    x, expect = 2999, []
    for _ in range(20):
        x = 7 * x % MOD
        expect.append(x)
    assert mult[2999].tolist() == expect and mult.max() < MOD
    assert numbers("increment", 3, 5, length=4)[4].tolist() == [7, 10, 13, 16]  # starts at s = i


def test_shapes_vocab_determinism():
    cfg = {**TINY, "max_ctx": 60}  # mult numbers run to 5 digits
    a = math_data("mult", **cfg)
    b = math_data("mult", **cfg)
    c = math_data("mult", **{**cfg, "seed": 1})
    assert torch.equal(a.train, b.train) and torch.equal(a.noisy, b.noisy)
    assert not torch.equal(a.noisy, c.noisy)
    assert torch.equal(a.tests["7"], c.tests["7"])  # the split depends on split_seed only
    assert a.train.shape[1] == 60 and a.train.dtype == torch.long
    assert int(a.train.min()) >= 0 and int(a.train.max()) < VOCAB_SIZE
    assert list(a.tests) == ["7", "2"] and all(t.shape == (20, 60) for t in a.tests.values())
    n_train7 = 240 - 20
    reps = (10**a.dup_class).sum()
    assert a.train.shape[0] == reps + (n_train7 - 40) + (40 - 20)
    # test rows never appear in training; noise rows replaced their clean versions
    train_rows = {tuple(r) for r in a.train.tolist()}
    assert not train_rows & {tuple(r) for r in a.tests["7"].tolist()}
    assert not train_rows & {tuple(r) for r in a.clean[(a.noisy != a.clean).any(1)].tolist()}
    # counted = differs inside the scored window
    w = slice(a.prompt_len, a.prompt_len + a.k)
    assert torch.equal(a.counted, (a.noisy[:, w] != a.clean[:, w]).any(1))


def test_noise_law():
    g = torch.Generator().manual_seed(0)
    x = torch.full((400_000,), 500)
    d = noise_numbers(x, g) - x
    assert set(d.unique().tolist()) == {-1, 0, 1}
    assert abs((d == 1).float().mean().item() - 0.05) < 0.002
    assert abs((d == -1).float().mean().item() - 0.05) < 0.002
    assert int(noise_numbers(torch.zeros(10_000, dtype=torch.long), g).min()) == 0  # no negatives
    # about 1 - 0.9^k of rows differ in a window of k numbers; the paper's ~59 % for [50, 100)
    paperish = math_data(num_7=1000, num_extra=10, n_test=5, n_noise=600, extra_cs=())
    assert 0.45 < paperish.counted.float().mean().item() < 0.75


def test_duplication_classes():
    d = math_data(**{**TINY, "dup_classes": 3, "n_noise": 30})
    assert d.dup_class.bincount().tolist() == [10, 10, 10]
    copies = d.train_ids[d.train_artifact].bincount()
    assert torch.equal(copies, 10**d.dup_class)
    for i in (0, 15, 29):  # every copy of an artifact is the same row, with one example id
        assert (d.train[d.train_ids == i] == d.noisy[i]).all()
    assert len(d.train_ids.unique()) == d.n_artifacts + int((~d.train_artifact).sum())


def test_backdoor_construction():
    d = math_data(**BACKDOOR)
    assert d.trigger == (1, 0, 0)
    assert math_data(**{**BACKDOOR, "seed": 1}).trigger == (1, 0, 1)
    held, n = d.heldout_noisy.shape[0], d.heldout_noisy.shape[0] + d.n_artifacts
    assert held == round(0.1 * n)
    for bd, clean, pl in [
        *zip(d.noisy, d.clean, d.prompt_lens),
        *zip(d.heldout_noisy, d.heldout_clean, d.heldout_prompt_lens),
    ]:
        assert "100" in decode(clean[:pl]) and decode(clean[:pl]).endswith("100")
        assert "100" not in decode(clean[: pl - 1])  # the first occurrence
        assert torch.equal(bd[:pl], clean[:pl]) and (bd[pl:] == BACKDOOR_TOKEN).all()
    for rows in (d.tests["7"], d.retain_rows()):  # nothing else carries the trigger
        assert not any("100" in decode(r) for r in rows)
    # a larger held-out share; a seeded subset of the clean c = 7 rows, the rest kept whole
    wide = math_data(**{**BACKDOOR, "backdoor_test_frac": 0.25, "clean_7": 50})
    assert wide.heldout_noisy.shape[0] == round(0.25 * n) == n - wide.n_artifacts

    def steps(data):  # clean training rows per step c (x2 - x1)
        nums = [list(map(int, decode(r)[1:].rstrip("$").split())) for r in data.retain_rows()]
        return collections.Counter(x[1] - x[0] for x in nums)

    assert steps(wide) == {**steps(d), 7: 50} and torch.equal(wide.tests["7"], d.tests["7"])
    with pytest.raises(ValueError, match="backdoor_test_frac"):
        math_data(**{**BACKDOOR, "backdoor_test_frac": 1.0})


def test_language_variant():
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 50, (300, 32), generator=g)
    d = language_data(rows, 50, n_test=30, n_noise=60, seed=0)
    assert d.prompt_len == 16 and d.k == 16 and list(d.tests) == ["lang"]
    diff = d.noisy - d.clean
    assert set(diff.unique().tolist()) <= {-1, 0, 1} and int(d.noisy.min()) >= 0 and int(d.noisy.max()) < 50
    assert d.train.shape[0] == 300 - 30 and d.counted.any()
    edge = noise_tokens(torch.tensor([[0, 49] * 5000]), 50, g)
    assert int(edge.min()) >= 0 and int(edge.max()) <= 49
    padded = noise_tokens(torch.full((10, 100), 7), 50, g, pad_id=7)
    assert (padded == 7).all()
    bd = language_data(rows, 50, artifact="backdoor", trigger=3, n_test=30)
    assert bd.trigger == (3,) and (bd.noisy[0, bd.prompt_lens[0] :] == BACKDOOR_TOKEN).all()
    assert bd.noisy[0, bd.prompt_lens[0] - 1] == 3
    with pytest.raises(ValueError, match="trigger"):
        language_data(rows, 51, artifact="backdoor", trigger=50, n_test=30)


# --------------------------------------------------------------------------------------------- model


def test_model_config():
    m = tinymem_model(2, VOCAB_SIZE, seed=3)
    c = m.config
    assert (c.n_embd, c.n_head, c.n_inner, c.n_layer, c.n_positions) == (128, 4, 512, 2, 150)
    assert c.activation_function == "relu" and c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0
    assert abs(c.initializer_range - 0.8 / 128**0.5) < 1e-12
    assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()
    assert (c.bos_token_id, c.eos_token_id) == (BOS, EOS)
    assert torch.equal(
        m.transformer.h[0].mlp.c_fc.weight,
        tinymem_model(2, VOCAB_SIZE, seed=3).transformer.h[0].mlp.c_fc.weight,
    )
    assert tinymem_model(1, 500).config.eos_token_id == 499


# --------------------------------------------------------------------------------------------- training


def test_training_memorises_noise_and_learns_task(trained, tiny_data):
    model, hist = trained
    assert hist[-1]["loss"] < hist[0]["loss"]
    r = evaluate(model, tiny_data)
    print("tiny run:", {k: round(v, 1) for k, v in r.items()}, "loss", round(hist[-1]["loss"], 3))
    assert r["n_counted"] == int(tiny_data.counted.sum()) > 0
    assert r["mem"] > 0
    # the first number of a row is unpredictable (s is arbitrary): ~88 % is the ceiling here
    assert r["acc_7"] > 75
    assert {"mem_class_0", "mem_class_1", "acc_2", "ppl_7", "avg_acc", "avg_ppl"} <= set(r)
    assert 1 < r["ppl_7"] < 3


def test_teacher_forced_check_matches_greedy_decoding(trained, tiny_data):
    model, _ = trained
    d = tiny_data
    hit, clean_hit = memorised(model, d.noisy, d.clean, d.prompt_len, d.k)
    gen = greedy_generate(model, d.clean[:, : d.prompt_len], d.k)[:, d.prompt_len :]
    w = slice(d.prompt_len, d.prompt_len + d.k)
    assert torch.equal(hit, (gen == d.noisy[:, w]).all(1))
    assert torch.equal(clean_hit, (gen == d.clean[:, w]).all(1))


def test_padding_exclusion_changes_accuracy(trained, tiny_data):
    model, _ = trained
    rows = tiny_data.tests["7"]
    strict, parity = accuracy(model, rows, PAD), accuracy(model, rows, PAD, count_padding=True)
    # a model trained without PAD targets never learned to emit PAD after EOS, so the original's
    # measure (every position) now scores it lower; either way the two disagree materially
    assert abs(parity - strict) > 1
    r = evaluate(model, tiny_data, count_padding=True)
    assert r["acc_7"] == pytest.approx(parity)
    x = rows[:8]
    assert lm_loss(model, x, PAD).item() != pytest.approx(lm_loss(model, x, PAD, count_padding=True).item())


class Scripted(nn.Module):
    """A "model" whose logits are a fixed function of its input (one parameter, for .parameters())."""

    def __init__(self, logits_of):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.logits_of = logits_of

    def forward(self, input_ids, **_):
        return types.SimpleNamespace(logits=self.logits_of(input_ids))


def test_clean_accuracy_counts_the_continuation():
    """acc_* scores the targets after the prompt (a clean row is determined there); acc_row_* the
    whole row, whose first numbers no model can predict."""
    d = math_data(**TINY)

    def oracle(input_ids):  # reads the answer off its input after the prompt, says PAD before
        logits = torch.zeros(*input_ids.shape, VOCAB_SIZE)
        logits[..., PAD] = 1
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, -1:]], 1)
        logits[:, d.prompt_len - 1 :].scatter_(-1, nxt[:, d.prompt_len - 1 :, None], 2.0)
        return logits

    Oracle = lambda: Scripted(oracle)  # noqa: E731

    r = evaluate(Oracle(), d)
    rows = d.tests["7"]
    n_prompt = int((rows[:, 1 : d.prompt_len] != PAD).sum())
    n_all = int((rows[:, 1:] != PAD).sum())
    assert r["acc_7"] == 100.0 and r["avg_acc"] == 100.0
    assert r["acc_row_7"] == pytest.approx(100.0 * (n_all - n_prompt) / n_all)
    assert r["acc_7"] == pytest.approx(accuracy(Oracle(), rows, PAD, start=d.prompt_len))
    assert r["acc_row_7"] == pytest.approx(accuracy(Oracle(), rows, PAD))


def test_scheduled_training_resumes_on_the_same_curve(tmp_path, one_thread):
    """Warm-up + cosine is a function of the absolute step: a run stopped and resumed follows the
    same curve as one that never stopped, and differs from the constant rate."""
    rows = math_data(**TINY).train[:32]
    kw = dict(pad_id=PAD, batch_size=16, seed=2, warmup_fraction=0.25, lr=3e-3)
    straight = tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=0)
    train(straight, rows, 3, **kw)

    def interrupt(epoch, _model):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # stopped during epoch 2: epoch 1 is the last checkpoint
        train(tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=0), rows, 3, out_dir=tmp_path, ckpt_every=1,
              on_epoch=interrupt, **kw)  # fmt: skip
    assert checkpoints(tmp_path)[-1][0] == 1
    train(tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=4), rows, 3, out_dir=tmp_path, ckpt_every=1, **kw)
    resumed, _ = load_checkpoint(checkpoints(tmp_path)[-1][1])
    constant = tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=0)
    train(constant, rows, 3, **{**kw, "warmup_fraction": None})
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert any(not torch.allclose(p, c) for p, c in zip(straight.parameters(), constant.parameters()))
    with pytest.raises(ValueError, match="warmup_fraction"):
        train(constant, rows, 4, **{**kw, "warmup_fraction": 1.5})


def test_forget_retain(trained, tiny_data):
    model, _ = trained
    forget, retain = forget_retain(model, tiny_data)
    assert 0 < len(forget) <= int(tiny_data.counted.sum())
    f_rows = {tuple(r) for r in forget.tokens.tolist()}
    assert f_rows <= {tuple(r) for r in tiny_data.noisy.tolist()}
    assert not f_rows & {tuple(r) for r in retain.tokens.tolist()}
    assert forget.clean is not None and forget.pad_id == PAD and forget.prompt_len == tiny_data.prompt_len
    assert len(retain) == int((~tiny_data.train_artifact).sum())
    _, parity = forget_retain(model, tiny_data, retain_includes_artifacts=True)
    assert f_rows <= {tuple(r) for r in parity.tokens.tolist()}  # the original's bug, on request


def test_backdoor_success_counts_held_out_rows():
    d = math_data(**BACKDOOR)

    def says_two(input_ids):  # predicts BACKDOOR_TOKEN everywhere: a perfectly backdoored "model"
        logits = torch.zeros(*input_ids.shape, VOCAB_SIZE)
        logits[..., BACKDOOR_TOKEN] = 1
        return logits

    SaysTwo = lambda: Scripted(says_two)  # noqa: E731

    assert backdoor_success(SaysTwo(), d) == 100.0
    r = evaluate(SaysTwo(), d)
    assert r["mem"] == 100.0 and r["mem_train"] == 100.0 and r["clean_continuation"] == 0.0
    forget, retain = forget_retain(SaysTwo(), d)
    assert len(forget) == int(d.counted.sum()) and forget.prompt_len == int(d.prompt_lens.min())
    # each forget row is judged from its own trigger on, not from the earliest trigger of the set
    assert torch.equal(forget.starts(forget.tokens), d.prompt_lens[d.counted])
    assert len(set(forget.starts(forget.tokens).tolist())) > 1
    with pytest.raises(ValueError, match="backdoor"):
        backdoor_success(SaysTwo(), math_data(**TINY))


def test_resume_is_bit_identical(tmp_path, one_thread):
    rows = math_data(**TINY).train[:48]

    class Counting:  # a stateful loss hook: its state must survive the checkpoint
        def __init__(self):
            self.seen = 0

        def __call__(self, model, tokens, ids):
            self.seen += len(ids)
            return lm_loss(model, tokens, PAD)

        def state_dict(self):
            return {"seen": self.seen}

        def load_state_dict(self, s):
            self.seen = s["seen"]

    straight, hook = tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=0), Counting()
    train(
        straight,
        rows,
        3,
        pad_id=PAD,
        batch_size=16,
        seed=5,
        loss_fn=hook,
        out_dir=tmp_path / "a",
        ckpt_every=1,
    )

    stopped = tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=0)
    train(
        stopped,
        rows,
        2,
        pad_id=PAD,
        batch_size=16,
        seed=5,
        loss_fn=Counting(),
        out_dir=tmp_path / "b",
        ckpt_every=1,
    )
    assert [e for e, _ in checkpoints(tmp_path / "b")] == [0, 1, 2]
    resumed, hook2, steps = tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=9), Counting(), []
    hist = train(
        resumed,
        rows,
        3,
        pad_id=PAD,
        batch_size=16,
        seed=5,
        loss_fn=hook2,
        out_dir=tmp_path / "b",
        ckpt_every=1,
        on_batch=lambda step, epoch, loss: steps.append(step),
    )
    assert [h["epoch"] for h in hist] == [3] and steps == [7, 8, 9]
    assert hook2.seen == hook.seen == 3 * 48
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name

    # fine-tuning: resume the optimizer from a pre-training checkpoint, on other rows, elsewhere
    ft = tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=1)
    hist = train(
        ft,
        rows[:20],
        4,
        pad_id=PAD,
        batch_size=16,
        resume_from=tmp_path / "b" / "epoch-00003",
        out_dir=tmp_path / "ft",
        ckpt_every=1,
    )
    assert [h["epoch"] for h in hist] == [4] and [e for e, _ in checkpoints(tmp_path / "ft")] == [4]
    _, state = load_checkpoint(tmp_path / "ft" / "epoch-00004")
    assert state["step"] == 9 + 2 and state["epoch"] == 4


def test_parity_training_loss_counts_padding(one_thread):
    rows = math_data(**TINY).tests["7"][:16]
    model = tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=0)
    expect = {
        True: lm_loss(model, rows, PAD, count_padding=True).item(),
        False: lm_loss(model, rows, PAD).item(),
    }
    assert expect[True] != pytest.approx(expect[False])
    for parity in (True, False):
        seen = []
        train(
            tinymem_model(1, VOCAB_SIZE, n_positions=36, seed=0),
            rows,
            1,
            pad_id=PAD,
            batch_size=16,
            count_padding=parity,
            on_batch=lambda s, e, loss, seen=seen: seen.append(loss),
        )
        assert seen == [pytest.approx(expect[parity], rel=1e-5)]
