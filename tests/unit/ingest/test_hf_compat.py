import warnings

import torch
from transformers import DynamicCache

from ingest.lm.hf_compat import output_cache, with_cache
from ingest.suite.model import build_model


def test_cache_is_passed_and_read_under_the_installed_release_name():
    torch.manual_seed(0)
    model = build_model({"hidden_size": 32, "layers": 2, "heads": 2}, 64, 16).eval()
    ids = torch.randint(0, 64, (2, 5))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")  # the deprecated name
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True)
            cache = output_cache(out)
            assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 5
            step = model(input_ids=ids[:, :1], use_cache=True, **with_cache(model, cache))
    assert output_cache(step).get_seq_length() == 6  # the forward appended to the cache it was given


def test_an_older_signature_gets_the_older_name():
    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return past_key_values

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None):
            return cache

    assert with_cache(Old(), "kv") == {"past_key_values": "kv"}
    assert with_cache(New(), "kv") == {"cache": "kv"}
