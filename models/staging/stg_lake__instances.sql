with source as (
    select * from {{ lake_source('instances') }}
),

renamed as (
    select
        -- ids
        instance_id,
        split,
        -- data order
        batch_idx,
        cohort,
        cohort is null as never_treated,
        -- content
        source,
        artifact,
        copies,
        document,
        len(tokens) as n_tokens,
        coalesce(sample_only, false) as sample_only,
        tokens
    from source
)

select * from renamed
