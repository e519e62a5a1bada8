with source as (
    select * from {{ lake_source('mitigation_runs') }}
),

renamed as (
    select
        -- ids
        study,
        run_id,
        -- run
        method,
        hparams,
        seed,
        model,
        checkpoint,
        -- before / after
        memorised_before,
        memorised_after,
        accuracy_before,
        accuracy_after,
        perplexity_before,
        perplexity_after,
        seconds
    from source
)

select * from renamed
