with source as (
    select * from {{ lake_source('extraction') }}
),

renamed as (
    select
        -- ids
        model,
        step,
        shard,
        instance_id,
        prompt_len,
        gen_len,
        -- result
        generated,
        match_fraction,
        memorised
    from source
)

select * from renamed
