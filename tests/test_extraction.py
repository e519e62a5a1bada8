import pytest
import torch
from transformers import DynamicCache

from ingest import extraction
from ingest.extraction import _NeoXDecoder, first_argmax, greedy_extract, match_fraction
from ingest.suite.model import build_model

VOCAB = 256


def make_model(parallel_residual: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model({"hidden_size": 32, "layers": 2, "heads": 2}, VOCAB, 48)
    for layer in model.gpt_neox.layers:
        layer.use_parallel_residual = parallel_residual
    return model.eval()


def prompts(batch: int = 12, length: int = 10, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length))


def hf_greedy(model, ids: torch.Tensor, gen_len: int) -> torch.Tensor:
    """The reference: `generate` without sampling, with EOS stopping disabled."""
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=gen_len,
        eos_token_id=None,
        pad_token_id=1,
    )
    return out[:, ids.size(1) :]


@pytest.mark.parametrize("parallel_residual", [True, False])
@pytest.mark.parametrize("fast_path", [True, False])
def test_identical_to_generate(monkeypatch, parallel_residual, fast_path):
    model = make_model(parallel_residual)
    monkeypatch.setattr(extraction, "_fast_path", lambda m: fast_path)
    ids = prompts()
    assert torch.equal(greedy_extract(model, ids, 16), hf_greedy(model, ids, 16))


def test_fast_path_is_taken_for_gpt_neox():
    assert extraction._fast_path(make_model())


def test_decode_step_reproduces_the_model_forward_bitwise():
    model, ids = make_model(), prompts(batch=4, length=6)
    base = model.base_model
    with torch.inference_mode():
        cache = DynamicCache()
        base(input_ids=ids, past_key_values=cache, use_cache=True)
        step = _NeoXDecoder(base, cache, max_len=12)
        for position, token in enumerate(prompts(batch=4, length=3, seed=2).T, start=6):
            ours = step(token, position)
            theirs = base(input_ids=token[:, None], past_key_values=cache, use_cache=True).last_hidden_state
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
    assert torch.equal(out, hf_greedy(model, ids, 1))
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
