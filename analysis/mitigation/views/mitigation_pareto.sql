-- Memorisation removed vs accuracy kept: a run is on the Pareto front of its study when no
-- other run removes at least as much memorisation and keeps at least as much accuracy, and is
-- strictly better on one of the two. Destroyed models are never on the front (their
-- memorisation numbers are meaningless) and dominate nothing.
select
    a.*,
    not a.destroyed and not exists (
        select 1
        from mitigation_scored as b
        where b.study = a.study
            and not b.destroyed
            and b.mem_removed >= a.mem_removed
            and b.acc_kept >= a.acc_kept
            and (b.mem_removed > a.mem_removed or b.acc_kept > a.acc_kept)
    ) as on_front
from mitigation_scored as a
where a.mem_removed is not null and a.acc_kept is not null
