-- Prompt / continuation / sample / whole-row perplexity per (model, step, instance), the taxonomy
-- features. The taxonomy definition scores the row's sample, prompt = tokens [0, P) and
-- continuation = [P, P + k), whatever the row's length (2,049-token Pythia rows included).
-- Surprisal element j (1-based) scores token j (0-based), so the prompt owns elements 1..P-1 and
-- the continuation elements P..P+k-1. Each window is normalised by its own count; the `_shared`
-- columns reproduce the taxonomy paper's variant, where prompt and continuation are divided by
-- the sample's scored positions. `row_perplexity` covers every scored position of the row.
{% set prompt_len = var('perplexity_prompt_len', 32) %}
{% set k = var('perplexity_continuation_len', 32) %}

with token_stats as (
    select * from {{ ref('stg_lake__token_stats') }}
),

windows as (
    select
        model,
        step,
        instance_id,
        len(token_surprisal) as n_row,
        least({{ prompt_len }} - 1, len(token_surprisal)) as n_prompt,
        least({{ prompt_len }} - 1 + {{ k }}, len(token_surprisal)) as n_sample,
        coalesce(list_sum(list_slice(token_surprisal, 1, {{ prompt_len }} - 1)), 0) as prompt_surprisal,
        coalesce(
            list_sum(list_slice(token_surprisal, {{ prompt_len }}, {{ prompt_len }} - 1 + {{ k }})), 0
        ) as continuation_surprisal,
        coalesce(list_sum(token_surprisal), 0) as row_surprisal
    from token_stats
),

perplexities as (
    select
        -- ids
        model,
        step,
        instance_id,
        cast({{ prompt_len }} as integer) as prompt_len,
        cast({{ k }} as integer) as continuation_len,
        -- per-window normalisation
        exp(prompt_surprisal / nullif(n_prompt, 0)) as prompt_perplexity,
        exp(continuation_surprisal / nullif(n_sample - n_prompt, 0)) as continuation_perplexity,
        exp((prompt_surprisal + continuation_surprisal) / nullif(n_sample, 0)) as sequence_perplexity,
        exp(row_surprisal / nullif(n_row, 0)) as row_perplexity,
        -- the taxonomy paper's shared denominator (prompt * continuation = sequence)
        exp(prompt_surprisal / nullif(n_sample, 0)) as prompt_perplexity_shared,
        exp(continuation_surprisal / nullif(n_sample, 0)) as continuation_perplexity_shared
    from windows
)

select * from perplexities
