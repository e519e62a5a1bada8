-- Every run of a study that has a retrain oracle, against it: how close the edited model came to
-- the model trained without the forget set (ingest/mitigation/oracle.py), beside how much
-- memorisation it removed. Grain: one row per (study, run_id).
-- oracle_rank orders runs by that closeness: the KS distance of the forget losses first, then
-- |privleak|; removal_rank by memorisation left, then accuracy kept. Destroyed models rank last
-- in both (a wrecked model's losses say nothing about forgetting). on_oracle_front: the Pareto
-- front of closeness against accuracy kept: no other run of the study that kept the model is at
-- least as close to the oracle and keeps at least as much accuracy, and strictly better on one.
with runs as (
    select
        r.*,
        o.mem as oracle_mem,
        o.acc as oracle_acc,
        o.ppl as oracle_ppl,
        o.exact_memorization as oracle_exact_memorization,
        o.extraction_strength as oracle_extraction_strength,
        o.mia_auc as oracle_mia_auc,
        o.base_privleak,
        o.base_ks_distance,
        o.base_forget_quality
    from mitigation_scored as r
    inner join mitigation_oracles as o on r.study = o.study
    where r.ks_distance is not null
)

select
    r.study,
    r.run_id,
    r.method,
    r.kind,
    r.hparams,
    r.seed,
    r.destroyed,
    r.outcome,
    r.mem_before,
    r.mem_after,
    r.oracle_mem,
    r.mem_after - r.oracle_mem as mem_gap,
    r.mem_removed_rel,
    r.acc_before,
    r.acc_after,
    r.oracle_acc,
    r.acc_after - r.oracle_acc as acc_gap,
    r.acc_kept,
    r.ppl_after,
    r.oracle_ppl,
    r.exact_memorization,
    r.oracle_exact_memorization,
    r.extraction_strength,
    r.oracle_extraction_strength,
    r.mia_auc,
    r.oracle_mia_auc,
    r.privleak,
    r.ks_distance,
    r.forget_quality,
    r.base_privleak,
    r.base_ks_distance,
    r.base_forget_quality,
    rank() over (
        partition by r.study order by r.destroyed, r.ks_distance, abs(r.privleak)
    ) as oracle_rank,
    rank() over (
        partition by r.study order by r.destroyed, r.mem_after, r.acc_after desc
    ) as removal_rank,
    not r.destroyed and not exists (
        select 1
        from runs as b
        where b.study = r.study
            and not b.destroyed
            and b.ks_distance <= r.ks_distance
            and b.acc_kept >= r.acc_kept
            and (b.ks_distance < r.ks_distance or b.acc_kept > r.acc_kept)
    ) as on_oracle_front
from runs as r
