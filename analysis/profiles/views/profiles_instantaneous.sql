-- Instantaneous memorisation: the effect at the first checkpoint after training (step = cohort).
select *
from profiles_full
where step = cohort
