-- Extraction results with their memorisation label, per (model, step, instance, prompt and
-- generation lengths).
with extraction as (
    select * from {{ ref('stg_lake__extraction') }}
),

final as (
    select
        -- ids
        model,
        step,
        instance_id,
        prompt_len,
        gen_len,
        -- result
        match_fraction,
        memorised
    from extraction
)

select * from final
