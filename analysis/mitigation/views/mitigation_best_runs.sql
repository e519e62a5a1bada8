-- The best run of every method in every study (the original's best-runs table: one row per
-- method, its hyper-parameters and before/after numbers): the lowest selection score among the
-- runs that kept the model, else, flagged `destroyed`, among those that did not.
select *
from mitigation_scored
where score is not null and not isnan(score)
qualify row_number() over (partition by study, method order by destroyed, score, seconds) = 1
