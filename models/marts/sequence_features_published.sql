-- `sequence_features` under the taxonomy paper's published column names (usvsnsp/semantic-filters,
-- Prashanth et al. 2024), for parity with the released tables: `sequence_id` is the instance, the
-- perplexities are the shared-denominator variant the paper computed, `0_8_snowclones` the
-- semantic and `0_8_templates` the textual match counts (the names the paper's figures use).
{% set sample_len = var('extraction_prompt_len', 32) + var('extraction_gen_len', 32) %}

with features as (
    select * from {{ ref('sequence_features') }}
),

instances as (
    select * from {{ ref('stg_lake__instances') }}
),

published as (
    select
        -- ids
        features.model,
        features.step,
        features.instance_id as sequence_id,
        -- sample
        list_slice(instances.tokens, 1, {{ sample_len }}) as tokens,
        features.text,
        -- features, in the released order
        features.is_incrementing,
        features.is_repeating,
        features.sequence_duplicates,
        features.max_frequency,
        features.avg_frequency,
        features.min_frequency,
        features.median_frequency,
        features.p25_frequency,
        features.p75_frequency,
        features.frequencies,
        features.nl_score as nl_scores,
        features.semantic_matches_0_8 as "0_8_snowclones",
        features.semantic_matches_0_9 as "0_9_snowclones",
        features.textual_matches_0_8 as "0_8_templates",
        features.textual_matches_0_9 as "0_9_templates",
        features.huffman_coding_length,
        cast(features.match_fraction as double) as memorization_score,
        features.prompt_perplexity_shared as prompt_perplexity,
        features.continuation_perplexity_shared as generation_perplexity,
        features.sequence_perplexity
    from features
    inner join instances
        on features.instance_id = instances.instance_id
)

select * from published
