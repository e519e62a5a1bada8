-- Persistent memorisation: the event-time aggregation (e >= 0 steps after training), with its
-- uniform band over event times.
select
    model,
    metric,
    units,
    control_group,
    base_period,
    first_epoch,
    key as event_time,
    memorisation,
    att,
    se,
    ci_lower,
    ci_upper,
    coalesce(zero_not_in_cband, false) as significant
from profiles_aggregates
where kind = 'event' and key >= 0
