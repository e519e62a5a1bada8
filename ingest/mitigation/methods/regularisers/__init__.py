"""Train-time regularisers: a fresh model trained on the base model's data and recipe, with a
regulariser meant to keep it from memorising the artifacts."""
