-- Residual memorisation: what is left of each cohort's effect at the fit's last checkpoint.
select *
from profiles_full
qualify step = max(step) over (
    partition by model, metric, units, control_group, base_period, first_epoch, design
)
