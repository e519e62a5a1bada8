-- The best run of every method in every study by the study's selection score (the original's
-- best-runs table: one row per method, its hyper-parameters and before/after numbers).
select *
from mitigation_scored
where score is not null
qualify row_number() over (partition by study, method order by score, seconds) = 1
