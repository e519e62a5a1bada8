-- Persistent memorisation: the event-time aggregation, with its uniform band over event times.
-- event_time e >= 0 counts checkpoint periods since training (R did's recoding of times to period
-- indices), so it is exact on an uneven checkpoint grid too; on an even grid, steps = e x spacing.
select
    model,
    metric,
    units,
    control_group,
    base_period,
    first_epoch,
    design,
    key as event_time,
    memorisation,
    att,
    se,
    ci_lower,
    ci_upper,
    coalesce(zero_not_in_cband, false) as significant
from profiles_aggregates
where kind = 'event' and key >= 0
