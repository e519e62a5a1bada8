-- Prompt / continuation / whole-sequence perplexity per (model, step, instance), the taxonomy
-- features. Surprisal element k (1-based) scores token k (0-based), so a prompt of P tokens
-- owns the first P - 1 scored positions and the continuation owns the rest. Each window is
-- normalised by its own count; the `_shared` columns reproduce the taxonomy paper's variant,
-- where every window is divided by the number of scored positions of the whole row.
{% set prompt_len = var('perplexity_prompt_len', 32) %}

with token_stats as (
    select * from {{ ref('stg_lake__token_stats') }}
),

windows as (
    select
        model,
        step,
        instance_id,
        len(token_surprisal) as n_scored,
        least({{ prompt_len }} - 1, len(token_surprisal)) as n_prompt,
        coalesce(list_sum(list_slice(token_surprisal, 1, {{ prompt_len }} - 1)), 0) as prompt_surprisal,
        coalesce(list_sum(list_slice(token_surprisal, {{ prompt_len }}, len(token_surprisal))), 0)
            as continuation_surprisal
    from token_stats
),

perplexities as (
    select
        -- ids
        model,
        step,
        instance_id,
        cast({{ prompt_len }} as integer) as prompt_len,
        -- per-window normalisation
        exp(prompt_surprisal / nullif(n_prompt, 0)) as prompt_perplexity,
        exp(continuation_surprisal / nullif(n_scored - n_prompt, 0)) as continuation_perplexity,
        exp((prompt_surprisal + continuation_surprisal) / nullif(n_scored, 0)) as sequence_perplexity,
        -- the taxonomy paper's shared denominator (prompt * continuation = sequence)
        exp(prompt_surprisal / nullif(n_scored, 0)) as prompt_perplexity_shared,
        exp(continuation_surprisal / nullif(n_scored, 0)) as continuation_perplexity_shared
    from windows
)

select * from perplexities
