-- Which taxonomy categories each mitigation run removes: a suite study's forget rows (the rows
-- the base model reproduces) with their category at the study's checkpoint, and whether greedy
-- decoding still reproduces each after the run; the study's retrain oracle is one more run
-- (run_id 'oracle'). TinyMem runs have no lake rows and no category.
with runs as (
    select
        study,
        run_id,
        method,
        kind,
        hparams,
        model,
        step,
        forget_ids,
        forget_extracted
    from {{ ref('stg_lake__mitigation_runs') }}
    where forget_ids is not null

    union all

    -- the retrain oracle, as a run of its own: what a model that never trained on the forget
    -- rows reproduces anyway
    select
        study,
        'oracle' as run_id,
        'retrain oracle' as method,
        'oracle' as kind,
        '{}' as hparams,
        model,
        step,
        forget_ids,
        forget_extracted
    from {{ ref('stg_lake__mitigation_oracles') }}
    where forget_ids is not null
),

forget_rows as (
    -- the two lists are aligned: unnest them in lockstep
    select
        study,
        run_id,
        method,
        kind,
        hparams,
        model,
        step,
        unnest(forget_ids) as instance_id,
        unnest(forget_extracted) as still_extracted
    from runs
),

categorised as (
    select
        forget_rows.*,
        coalesce(taxonomy.category, 'uncategorised') as category
    from forget_rows
    left join {{ ref('taxonomy') }} as taxonomy
        on forget_rows.model = taxonomy.model
        and forget_rows.step = taxonomy.step
        and forget_rows.instance_id = taxonomy.instance_id
)

select
    study,
    run_id,
    method,
    kind,
    hparams,
    category,
    count(*) as n_forget,
    count(*) filter (where still_extracted) as n_still_extracted,
    1 - count(*) filter (where still_extracted) / count(*) as removed_share
from categorised
group by study, run_id, method, kind, hparams, category
