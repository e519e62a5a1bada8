"""Fine-tuning: more epochs of the memorising model on data that contradicts or dilutes it."""
