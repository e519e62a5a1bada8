with source as (
    select * from {{ lake_source('twin_heldout') }}
),

renamed as (
    select
        -- ids
        model,
        instance_id,
        -- the row trained on in the held-out row's place
        filler_tokens
    from source
)

select * from renamed
