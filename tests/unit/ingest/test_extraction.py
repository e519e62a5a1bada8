import pytest
import torch
from transformers import DynamicCache

from ingest import extraction
from ingest.extraction import first_argmax, generate_greedy, greedy_extract, match_fraction
from ingest.lm import decoding
from ingest.lm.decoding import NeoXDecoder
from ingest.lm.hf_compat import with_cache
from tests.helpers import VOCAB, make_model, prompts


@pytest.mark.parametrize("parallel_residual", [True, False])
@pytest.mark.parametrize("fast_path", [True, False])
def test_identical_to_generate(monkeypatch, parallel_residual, fast_path):
    model = make_model(parallel_residual)
    monkeypatch.setattr(decoding, "fast_path", lambda m: fast_path)
    ids = prompts()
    assert torch.equal(greedy_extract(model, ids, 16), generate_greedy(model, ids, 16))


def test_fast_path_is_taken_for_gpt_neox():
    assert decoding.fast_path(make_model())


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("parallel_residual", [True, False])
def test_decode_step_reproduces_the_model_forward_bitwise(attention, parallel_residual):
    model, ids = make_model(parallel_residual), prompts(batch=4, length=6)
    model.set_attn_implementation(attention)
    base = model.base_model
    assert base.config._attn_implementation == attention
    with torch.inference_mode():
        cache = DynamicCache()
        base(input_ids=ids, use_cache=True, **with_cache(base, cache))
        step = NeoXDecoder(base, cache, max_len=12)
        for position, token in enumerate(prompts(batch=4, length=3, seed=2).T, start=6):
            ours = step(token, position)
            theirs = base(
                input_ids=token[:, None], use_cache=True, **with_cache(base, cache)
            ).last_hidden_state
            assert torch.equal(ours, theirs)


def test_eos_does_not_stop_generation():
    model = make_model()
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # all logits tie: greedy picks id 0, the EOS
    out = greedy_extract(model, prompts(), 5)
    assert out.shape == (12, 5) and (out == 0).all()


def test_gen_len_one_and_shapes():
    model, ids = make_model(), prompts()
    out = greedy_extract(model, ids, 1)
    assert out.shape == (12, 1) and out.dtype == torch.long
    assert torch.equal(out, generate_greedy(model, ids, 1))
    with pytest.raises(ValueError, match="gen_len"):
        greedy_extract(model, ids, 0)
    with pytest.raises(ValueError, match="prompts"):
        greedy_extract(model, ids[0], 3)


def test_first_argmax_matches_argmax_including_ties():
    torch.manual_seed(0)
    logits = torch.randn(6, 512)
    logits[0, [3, 70, 400]] = 9.0  # ties across blocks: the first wins
    logits[1, [130, 131]] = 9.0  # ties inside a block
    logits[2] = 0.0  # everything tied
    logits[3, 511] = 9.0  # last entry
    assert torch.equal(first_argmax(logits), logits.argmax(-1))
    assert first_argmax(logits)[:4].tolist() == [3, 130, 0, 511]
    odd = torch.randn(3, 200)  # not a multiple of the block: plain argmax
    assert torch.equal(first_argmax(odd), odd.argmax(-1))


def test_match_fraction():
    target = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8]])
    generated = torch.tensor([[1, 2, 3, 4], [1, 9, 3, 9], [0, 0, 0, 0]])
    frac = match_fraction(generated, target)
    assert frac.dtype == torch.float32
    assert frac.tolist() == [1.0, 0.5, 0.0]
    assert (frac == 1.0).tolist() == [True, False, False]  # memorised <=> exact match
    with pytest.raises(ValueError, match="shapes differ"):
        match_fraction(generated[:, :3], target)


def test_memorised_row_is_extracted():
    """A model trained on one row regurgitates its continuation: match fraction 1.0."""
    model = make_model()
    torch.manual_seed(3)
    row = torch.randint(2, VOCAB, (1, 16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(12):  # memorised from ~6 steps on
        loss = model(input_ids=row, labels=row).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = greedy_extract(model, row[:, :8], 8)
    assert model.training  # the caller's mode is restored
    assert match_fraction(out, row[:, 8:]).item() == 1.0


# --------------------------------------------------------------------------- with targets (verified rows)


def decoded_rows(monkeypatch) -> list[int]:
    """Record how many rows each call decodes step by step (the rest were verified)."""
    calls: list[int] = []
    decode = extraction.decode

    def spy(model, cache, token, *args):
        calls.append(token.size(0))
        return decode(model, cache, token, *args)

    monkeypatch.setattr(extraction, "decode", spy)
    return calls


def own_continuations(model, batch: int = 6, prompt_len: int = 10, gen_len: int = 12):
    """Prompts the model reproduces itself (greedy runs from a short seed) and their greedy continuation."""
    seed = prompts(batch, 3, seed=5)
    seq = torch.cat([seed, generate_greedy(model, seed, prompt_len + gen_len - 3)], 1)
    return seq[:, :prompt_len], seq[:, prompt_len : prompt_len + gen_len]


@pytest.fixture(scope="module")
def suite_panel(tiny_suite, tiny_cfg):
    """suite-s of the tiny suite, trained on a further pass over every 16th panel row until it has
    memorised most of them; the panel's rows and their `generate` continuations."""
    from ingest.checkpoints import load_model, local_steps, resolve
    from ingest.panel import load_panel

    step = local_steps(tiny_suite.suite / "suite-s")[-1]
    model = load_model(resolve("suite-s", f"step{step}", tiny_suite))
    _, tokens = load_panel(tiny_suite, tiny_cfg["ingest"]["panel"], tiny_cfg["seed"])
    rows = torch.from_numpy(tokens[:, :64])
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(40):  # the tiny suite itself memorises no 32-token continuation
        loss = model(input_ids=rows[::16], labels=rows[::16]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.inference_mode():
        reference = generate_greedy(model, rows[:, :32], 32)
    return model, rows, reference


@pytest.mark.parametrize(("fast_path", "share"), [(True, 0.0), (False, 0.0), (True, extraction.VERIFY_SHARE)])
def test_targets_give_generates_tokens_on_a_trained_suite_model(monkeypatch, suite_panel, fast_path, share):
    model, rows, reference = suite_panel
    memorised = (reference == rows[:, 32:]).all(1)
    assert 0 < memorised.sum() < len(rows) // 2  # a mix, as in a real panel
    monkeypatch.setattr(decoding, "fast_path", lambda m: fast_path)
    monkeypatch.setattr(extraction, "VERIFY_SHARE", share)  # 0: verify when any row looks memorised
    calls = decoded_rows(monkeypatch)
    out = torch.cat([greedy_extract(model, b[:, :32], 32, b[:, 32:]) for b in rows.split(64)])
    assert torch.equal(out, reference)
    if share:  # too few memorised rows per batch: decoded as without targets
        assert sum(calls) == len(rows)
    else:  # memorised rows were verified, not decoded
        assert (~memorised).sum() <= sum(calls) <= len(rows) - memorised.sum() // 2


def test_mostly_memorised_batch_is_verified(monkeypatch, suite_panel):
    model, rows, reference = suite_panel
    memorised = (reference == rows[:, 32:]).all(1)
    batch = torch.cat([rows[memorised], rows[~memorised][:2]])
    calls = decoded_rows(monkeypatch)
    out = greedy_extract(model, batch[:, :32], 32, batch[:, 32:])
    assert torch.equal(out, torch.cat([reference[memorised], reference[~memorised][:2]]))
    assert 2 <= sum(calls) < len(batch) // 2


def test_garbage_targets_are_decoded(monkeypatch, suite_panel):
    model, rows, reference = suite_panel
    monkeypatch.setattr(extraction, "VERIFY_SHARE", 0.0)
    torch.manual_seed(4)
    garbage = torch.randint(0, model.config.vocab_size, reference.shape)
    assert torch.equal(greedy_extract(model, rows[:, :32], 32, garbage), reference)
    # right first token, wrong after it: memorised rows look memorised, then fail verification
    wrong_later = torch.cat([reference[:, :1], garbage[:, 1:]], 1)
    calls = decoded_rows(monkeypatch)
    assert torch.equal(greedy_extract(model, rows[:, :32], 32, wrong_later), reference)
    assert calls == [len(rows)]
    # every row a candidate (the verifying forward shares the prompt cache), half of them verified
    half = (torch.arange(len(rows)) % 2 == 0)[:, None]
    calls.clear()
    mixed = torch.where(half, reference, wrong_later)
    assert torch.equal(greedy_extract(model, rows[:, :32], 32, mixed), reference)
    assert calls == [len(rows) // 2]


def test_own_continuations_are_verified_in_one_forward(monkeypatch):
    model = make_model()
    ids, target = own_continuations(model)
    calls = decoded_rows(monkeypatch)
    assert torch.equal(greedy_extract(model, ids, 12, target), target)
    assert calls == []  # every row finished with the verification, none was decoded


def test_targets_edge_cases(monkeypatch, suite_panel):
    model, rows, reference = suite_panel
    memorised = (reference == rows[:, 32:]).all(1)
    calls = decoded_rows(monkeypatch)
    for i in (int(memorised.nonzero()[0]), int((~memorised).nonzero()[0])):  # batches of one
        assert torch.equal(
            greedy_extract(model, rows[i : i + 1, :32], 32, rows[i : i + 1, 32:]), reference[i : i + 1]
        )
    assert calls == [1]  # the memorised row was verified
    assert torch.equal(greedy_extract(model, rows[:, :32], 1, rows[:, 32:33]), reference[:, :1])  # gen_len 1
    # a one-token prompt has no prompt tokens to check; the target alone decides
    one, calls[:] = rows[:, :1], []
    assert torch.equal(
        greedy_extract(model, one, 8, generate_greedy(model, one, 8)), generate_greedy(model, one, 8)
    )
    assert calls == []
    monkeypatch.setattr(extraction, "SYNC_PROMPT", 0)  # every row whose first token matches
    monkeypatch.setattr(extraction, "VERIFY_SHARE", 0.0)
    assert torch.equal(greedy_extract(model, rows[:, :32], 32, rows[:, 32:]), reference)
    with pytest.raises(ValueError, match="targets"):
        greedy_extract(model, rows[:, :32], 32, rows[:, 32:63])


def test_graphed_decode_buffers_are_reused_across_batches():
    """`GraphedDecode` (replayed eagerly here: CUDA graphs need a GPU) reloads its static buffers
    for each batch, so a second, different batch decodes like a fresh decoder would."""
    model = make_model()
    runner = None
    for seed in (1, 2, 3):
        ids = prompts(batch=5, length=7, seed=seed)
        with torch.inference_mode():
            cache = DynamicCache()
            hidden = model.base_model(
                input_ids=ids, use_cache=True, **with_cache(model.base_model, cache)
            ).last_hidden_state
            first = first_argmax(model.get_output_embeddings()(hidden[:, -1]))
            if runner is None:
                runner = decoding.GraphedDecode(model, cache, first, 7, 9, capture=False)
            rest = runner(cache, first)
        assert torch.equal(torch.cat([first[:, None], rest], 1), generate_greedy(model, ids, 10))


def test_near_ties_are_decoded_not_verified(monkeypatch):
    """A target token that wins by less than rounding noise does not count as verified."""
    model = make_model()
    ids = prompts(batch=4, length=8)
    own = generate_greedy(model, ids, 6)
    with torch.inference_mode():
        cache = DynamicCache()
        model.base_model(input_ids=ids, use_cache=True, **with_cache(model.base_model, cache))
        rows = torch.arange(4)
        assert extraction._verified(model, cache, rows, own).all()
        monkeypatch.setattr(extraction, "TIE_EPS", 1e9)  # every margin is "within rounding"
        assert not extraction._verified(model, cache, rows, own).any()


def test_decode_buffers_are_reused_across_batches_and_shapes():
    """`DecodeBuffers` keep the CPU decoder's key/value block between batches: a batch decoded in
    a block another batch wrote (and one of a new shape) gives generate's tokens."""
    model = make_model()
    buffers = decoding.DecodeBuffers()
    blocks = []
    for seed, batch in ((1, 6), (2, 6), (3, 4), (4, 6)):
        ids = prompts(batch=batch, length=7, seed=seed)
        assert torch.equal(greedy_extract(model, ids, 9, buffers=buffers), generate_greedy(model, ids, 9))
        blocks.append({k: v.data_ptr() for k, v in buffers.blocks.items()})
    assert blocks[0] == blocks[1]  # same shape: the same block, not a new one
    assert len(blocks[2]) == 2 and set(blocks[0].items()) <= set(blocks[3].items())
    assert not any(k.startswith("_memlake") for k in vars(model.base_model))  # nothing hides on the model
    with pytest.raises(ValueError, match="one model"):
        greedy_extract(make_model(), prompts(batch=2, length=7), 3, buffers=buffers)
