-- Token statistics aggregated to sequence level, as the memorisation-profiles export:
-- means over the scored positions, plus the sum-form log-likelihood. One pass over each list.
with token_stats as (
    select * from {{ ref('stg_lake__token_stats') }}
),

summed as (
    select
        model,
        step,
        instance_id,
        {{ list_length('token_surprisal') }} as n_scored,
        {{ list_total('token_surprisal') }} as total_surprisal,
        {{ list_count_equal('token_rank', 0) }} as n_top1,
        {{ list_mean('token_rank') }} as avg_rank,
        {{ list_mean('token_entropy') }} as entr_seq
    from token_stats
),

aggregated as (
    select
        -- ids
        model,
        step,
        instance_id,
        -- sequence metrics
        n_scored,
        cast(total_surprisal / nullif(n_scored, 0) as double) as sup_seq,
        cast(n_top1 / nullif(n_scored, 0) as double) as acc_seq,
        cast(avg_rank as double) as avg_rank,
        cast(entr_seq as double) as entr_seq,
        cast(-total_surprisal as double) as loglik
    from summed
)

select * from aggregated
