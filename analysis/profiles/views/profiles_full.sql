-- The full memorisation profile: every post-treatment cell (step >= cohort) of every fit.
-- memorisation is signed so that it is positive for every metric; significant = zero lies
-- outside the uniform (sup-t) band.
select
    model,
    metric,
    units,
    control_group,
    base_period,
    first_epoch,
    design,
    cohort,
    step,
    event_time,
    memorisation,
    att,
    se,
    ci_lower,
    ci_upper,
    coalesce(zero_not_in_cband, false) as significant
from profiles_attgt
where post
