with source as (
    select * from {{ lake_source('representative_scores') }}
),

renamed as (
    select
        -- ids
        model,
        step,
        shard,
        instance_id,
        -- memorisation (k = 32 extractable iff every continuation token is right)
        memorization_score,
        memorization_score = 1.0 as memorised
    from source
)

select * from renamed
