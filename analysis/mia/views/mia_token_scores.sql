-- Membership-inference scores that are functions of one checkpoint's token statistics, one row
-- per (model, step, instance), each oriented so that higher means more likely a member
-- (definitions: README, "Membership inference"). k = 20 % of the scored positions, at least one.
--   loss             -mean surprisal
--   min_k            mean log p of the k least likely tokens (Shi et al. 2024)
--   min_k_plus_plus  mean of the k smallest (log p - mu) / sigma, with mu = E_p[log p] = -entropy
--                    and sigma^2 = E_p[(log p)^2] - mu^2 (Zhang et al. 2025); null without the
--                    second moment (Hub imports). A variance that float32 cancellation leaves
--                    at or below 1e-8 nats^2 (a near one-hot prediction) is read as 1e-8.
with scored as (
    select
        model,
        step,
        instance_id,
        surprisal,
        greatest(cast(floor(0.2 * len(surprisal)) as integer), 1) as k,
        case when second_moment is not null then
            list_transform(
                surprisal,
                lambda s, i: (entropy[i] - s)
                    / sqrt(greatest(second_moment[i] - entropy[i] * entropy[i], 1e-8))
            )
        end as z
    from token_stats
)

select
    model,
    step,
    instance_id,
    0 - list_avg(surprisal) as loss,
    0 - list_avg(list_slice(list_sort(surprisal, 'DESC'), 1, k)) as min_k,
    list_avg(list_slice(list_sort(z), 1, k)) as min_k_plus_plus
from scored
