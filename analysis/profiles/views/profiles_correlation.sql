-- Cross-size profile correlation: Pearson correlation of memorisation over the post-treatment
-- cells two models share (same data order, so the same cohort x step grid), per fit options.
select
    a.metric,
    a.units,
    a.control_group,
    a.base_period,
    a.first_epoch,
    a.design,
    a.model as model_a,
    b.model as model_b,
    corr(a.memorisation, b.memorisation) as pearson,
    count(*) as cells
from profiles_full as a
inner join profiles_full as b
    on a.metric = b.metric
    and a.units = b.units
    and a.control_group = b.control_group
    and a.base_period = b.base_period
    and a.first_epoch = b.first_epoch
    and a.design = b.design
    and a.cohort = b.cohort
    and a.step = b.step
group by all
