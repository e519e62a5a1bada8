with source as (
    select * from {{ lake_source('token_stats') }}
),

renamed as (
    select
        -- ids
        model,
        step,
        shard,
        instance_id,
        -- per scored position (lists of equal length, no nulls: the lake contract)
        surprisal as token_surprisal,
        rank as token_rank,
        entropy as token_entropy,
        -- the same, but null where the writer had no logits (Hub imports) or predates it
        second_moment as token_second_moment
    from source
)

select * from renamed
