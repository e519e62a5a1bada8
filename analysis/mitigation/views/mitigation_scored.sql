-- Every mitigation run with relative changes, the original study's selection scores and what the
-- run did to the model.
-- delta_rel(x) = (after - before) / before. TinyMem: delta_rel(mem) - delta_rel(acc) (memorisation
-- removed, accuracy kept); Hugging Face models: delta_rel(mem) + delta_rel(ppl), +100 when the run
-- removed nothing. Lower is better for both.
-- destroyed: the edit kept less than half the clean accuracy. Memorisation numbers of such a model
-- say nothing (a model that emits the backdoor token everywhere "succeeds" at every attack, one
-- that emits noise "forgets" everything), so its outcome is 'model destroyed', never 'removed'.
with runs as (
    select
        *,
        (mem_after - mem_before) / nullif(mem_before, 0) as mem_delta_rel,
        (acc_after - acc_before) / nullif(acc_before, 0) as acc_delta_rel,
        (ppl_after - ppl_before) / nullif(ppl_before, 0) as ppl_delta_rel,
        coalesce(acc_after < 0.5 * acc_before, false) as destroyed
    from mitigation_runs
)

select
    *,
    mem_before - mem_after as mem_removed,
    100 * (mem_before - mem_after) / nullif(mem_before, 0) as mem_removed_rel,
    100 * acc_after / nullif(acc_before, 0) as acc_kept,
    acc_before - acc_after as acc_drop,
    case
        when destroyed then 'model destroyed'
        when mem_before is null or isnan(mem_before) or mem_before = 0 then 'nothing memorised'
        when mem_after <= 0.1 * mem_before then 'removed'
        when mem_after < mem_before then 'partly removed'
        else 'kept'
    end as outcome,
    mem_delta_rel - acc_delta_rel as score_tinymem,
    mem_delta_rel + ppl_delta_rel + case when mem_after = mem_before then 100 else 0 end as score_lm,
    case when study like 'tinymem%' then mem_delta_rel - acc_delta_rel
        else mem_delta_rel + ppl_delta_rel + case when mem_after = mem_before then 100 else 0 end
    end as score
from runs
