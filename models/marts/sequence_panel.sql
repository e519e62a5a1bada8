-- The DiD panel: sequence metrics per (model, step, instance) with the instance's treatment
-- (cohort, never-treated) and whether both the checkpoint and the treatment lie in the first
-- epoch (later epochs re-expose the same data).
with sequences as (
    select * from {{ ref('int_token_stats_aggregated_to_sequences') }}
),

instances as (
    select * from {{ ref('stg_lake__instances') }}
),

checkpoints as (
    select * from {{ ref('stg_lake__checkpoints') }}
),

panel as (
    select
        -- ids
        sequences.model,
        sequences.step,
        sequences.instance_id,
        -- treatment
        instances.cohort,
        instances.never_treated,
        checkpoint.first_epoch
        and (instances.never_treated or treatment.first_epoch) as first_epoch,
        -- outcomes
        sequences.sup_seq,
        sequences.acc_seq,
        sequences.avg_rank,
        sequences.entr_seq,
        sequences.loglik,
        sequences.n_scored
    from sequences
    left join instances
        on sequences.instance_id = instances.instance_id
    left join checkpoints as checkpoint
        on sequences.model = checkpoint.model
        and sequences.step = checkpoint.step
    left join checkpoints as treatment
        on sequences.model = treatment.model
        and instances.cohort = treatment.step
)

select * from panel
