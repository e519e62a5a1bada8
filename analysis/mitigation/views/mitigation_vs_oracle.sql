-- Every run of a study that has a retrain oracle, against it: how close the edited model came to
-- the model trained without the forget set (ingest/mitigation/oracle.py), beside how much
-- memorisation it removed. Grain: one row per (study, run_id).
-- oracle_rank orders runs by that closeness: the KS distance of the forget losses first, then
-- |privleak|; removal_rank by memorisation left, then accuracy kept. Destroyed models rank last
-- in both (a wrecked model's losses say nothing about forgetting).
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
    o.mem as oracle_mem,
    r.mem_after - o.mem as mem_gap,
    r.mem_removed_rel,
    r.acc_before,
    r.acc_after,
    o.acc as oracle_acc,
    r.acc_after - o.acc as acc_gap,
    r.acc_kept,
    r.ppl_after,
    o.ppl as oracle_ppl,
    r.exact_memorization,
    o.exact_memorization as oracle_exact_memorization,
    r.extraction_strength,
    o.extraction_strength as oracle_extraction_strength,
    r.mia_auc,
    o.mia_auc as oracle_mia_auc,
    r.privleak,
    r.ks_distance,
    r.forget_quality,
    o.base_privleak,
    o.base_ks_distance,
    o.base_forget_quality,
    rank() over (
        partition by r.study order by r.destroyed, r.ks_distance, abs(r.privleak)
    ) as oracle_rank,
    rank() over (
        partition by r.study order by r.destroyed, r.mem_after, r.acc_after desc
    ) as removal_rank
from mitigation_scored as r
inner join mitigation_oracles as o on r.study = o.study
where r.ks_distance is not null
