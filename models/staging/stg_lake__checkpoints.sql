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
        coalesce(step <= first_epoch_end, epoch <= 1.0) as first_epoch,
        first_epoch_end,
        train_loss,
        -- a counterfactual twin: the model it is the twin of (null: not a twin)
        twin_of,
        -- location
        coalesce(revision, 'step' || step) as revision,
        path
    from source
)

select * from renamed
