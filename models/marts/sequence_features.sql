-- Every taxonomy feature per (model, step, instance): the extraction result at the default
-- extraction setting, the instance's model-free features (lake table instance_features), its
-- planted-artifact labels and the checkpoint's perplexities. Instances without features (run
-- `memlake taxonomy features`) are left out; perplexities come from the token statistics, else
-- from the taxonomy paper's released ones (`published_perplexities`), else are null.
{% set prompt_len = var('extraction_prompt_len', 32) %}
{% set gen_len = var('extraction_gen_len', 32) %}

with extraction as (
    select * from {{ ref('stg_lake__extraction') }}
    where prompt_len = {{ prompt_len }} and gen_len = {{ gen_len }}
),

features as (
    select * from {{ ref('stg_lake__instance_features') }}
),

instances as (
    select * from {{ ref('stg_lake__instances') }}
),

perplexities as (
    select * from {{ ref('sequence_perplexities') }}
),

published_perplexities as (
    select * from {{ ref('stg_lake__published_perplexities') }}
),

joined as (
    select
        -- ids
        extraction.model,
        extraction.step,
        extraction.instance_id,
        -- the instance
        instances.split,
        instances.source,
        instances.artifact,
        instances.copies,
        -- memorisation
        extraction.prompt_len,
        extraction.gen_len,
        extraction.match_fraction,
        extraction.memorised,
        -- text
        features.text,
        features.prompt_text,
        -- duplication and corpus token frequencies
        features.sequence_duplicates,
        features.whole_sequence_duplicates,
        features.max_frequency,
        features.avg_frequency,
        features.min_frequency,
        features.median_frequency,
        features.p25_frequency,
        features.p75_frequency,
        features.frequencies,
        -- templates
        features.is_incrementing,
        features.is_repeating,
        features.is_templating,
        -- text statistics
        features.huffman_coding_length,
        features.nl_score,
        case
            when features.nl_score >= {{ var('nl_threshold', 0.525) }} then 'nl'
            when features.nl_score <= {{ var('code_threshold', 0.4) }} then 'code'
            else 'uncertain'
        end as code_nl,
        -- matches against the representative sample
        features.semantic_matches_0_8,
        features.semantic_matches_0_9,
        features.textual_matches_0_8,
        features.textual_matches_0_9,
        features.in_representative_sample,
        -- perplexities of this checkpoint (per window, and the paper's shared denominator)
        coalesce(perplexities.prompt_perplexity, published.prompt_perplexity) as prompt_perplexity,
        coalesce(perplexities.continuation_perplexity, published.continuation_perplexity)
            as continuation_perplexity,
        coalesce(perplexities.sequence_perplexity, published.sequence_perplexity) as sequence_perplexity,
        perplexities.row_perplexity,
        coalesce(perplexities.prompt_perplexity_shared, published.prompt_perplexity_shared)
            as prompt_perplexity_shared,
        coalesce(perplexities.continuation_perplexity_shared, published.continuation_perplexity_shared)
            as continuation_perplexity_shared
    from extraction
    inner join features
        on extraction.instance_id = features.instance_id
    inner join instances
        on extraction.instance_id = instances.instance_id
    left join perplexities
        on extraction.model = perplexities.model
        and extraction.step = perplexities.step
        and extraction.instance_id = perplexities.instance_id
    left join published_perplexities as published
        on extraction.model = published.model
        and extraction.step = published.step
        and extraction.instance_id = published.instance_id
)

select * from joined
