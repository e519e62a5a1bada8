-- Every mitigation run with relative changes and the original study's selection scores.
-- delta_rel(x) = (after - before) / before. TinyMem: delta_rel(mem) - delta_rel(acc) (memorisation
-- removed, accuracy kept); Hugging Face models: delta_rel(mem) + delta_rel(ppl), +100 when the run
-- removed nothing. Lower is better for both.
with runs as (
    select
        *,
        (mem_after - mem_before) / nullif(mem_before, 0) as mem_delta_rel,
        (acc_after - acc_before) / nullif(acc_before, 0) as acc_delta_rel,
        (ppl_after - ppl_before) / nullif(ppl_before, 0) as ppl_delta_rel
    from mitigation_runs
)

select
    *,
    mem_before - mem_after as mem_removed,
    100 * acc_after / nullif(acc_before, 0) as acc_kept,
    mem_delta_rel - acc_delta_rel as score_tinymem,
    mem_delta_rel + ppl_delta_rel + case when mem_after = mem_before then 100 else 0 end as score_lm,
    case when study like 'tinymem%' then mem_delta_rel - acc_delta_rel
        else mem_delta_rel + ppl_delta_rel + case when mem_after = mem_before then 100 else 0 end
    end as score
from runs
