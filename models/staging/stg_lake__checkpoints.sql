with source as (
    select * from {{ lake_source('checkpoints') }}
),

renamed as (
    select
        -- ids
        model,
        step,
        -- training state
        lr,
        tokens_seen,
        epoch,
        epoch <= 1.0 as first_epoch,
        train_loss,
        -- location
        path
    from source
)

select * from renamed
