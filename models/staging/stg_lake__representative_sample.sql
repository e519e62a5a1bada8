with source as (
    select * from {{ lake_source('representative_sample') }}
),

renamed as (
    select
        -- ids
        scheme,
        shard,
        instance_id,
        -- content
        len(tokens) as n_tokens,
        tokens
    from source
)

select * from renamed
