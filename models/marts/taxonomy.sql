-- The taxonomy of memorisation (Recite, Reconstruct, Recollect), per (model, step, instance):
-- recitation if the continuation is duplicated more than `recitation_threshold` times in the
-- training stream, else reconstruction if the text is a template (incrementing or repeating),
-- else recollection. Rules in that order, applied to every row as the paper's base_taxonomy;
-- `memorised` says which rows are memorised. Ablate the threshold with
-- `dbt build --select taxonomy --vars '{recitation_threshold: 1}'`.
{% set recitation_threshold = var('recitation_threshold', 5) %}

with features as (
    select * from {{ ref('sequence_features') }}
),

categorised as (
    select
        -- ids
        model,
        step,
        instance_id,
        -- label
        memorised,
        case
            when sequence_duplicates > {{ recitation_threshold }} then 'recitation'
            when is_incrementing or is_repeating then 'reconstruction'
            else 'recollection'
        end as category,
        cast({{ recitation_threshold }} as bigint) as recitation_threshold,
        -- the features that decided it
        sequence_duplicates,
        is_incrementing,
        is_repeating,
        is_templating,
        -- planted-artifact labels (what the category should recover on the embedded corpus)
        artifact,
        copies
    from features
)

select * from categorised
