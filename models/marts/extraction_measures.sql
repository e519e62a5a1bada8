-- Extraction measures of every extraction result: how long a prefix of the greedy continuation
-- is right, and, from the same checkpoint's token statistics over the same window, Exact
-- Memorization, Extraction Strength and probabilistic extraction.
--
-- Continuation token j (0-based, j = prompt_len .. prompt_len + gen_len - 1) is scored at list
-- index j - 1 of the token-stats lists (position j - 1 predicts token j), so its window is the
-- 1-based slice [prompt_len, prompt_len + gen_len - 1].
with extraction as (
    select * from {{ ref('stg_lake__extraction') }}
),

instances as (
    select instance_id, tokens from {{ ref('stg_lake__instances') }}
),

token_stats as (
    select * from {{ ref('stg_lake__token_stats') }}
),

windows as (
    select
        extraction.model,
        extraction.step,
        extraction.instance_id,
        extraction.prompt_len,
        extraction.gen_len,
        -- generated token i against true token prompt_len + i
        list_transform(
            extraction.generated,
            lambda token, i: token = instances.tokens[extraction.prompt_len + i]
        ) as generated_right,
        -- teacher-forced window (null without token statistics at this checkpoint, or when the
        -- lists do not reach the window's end)
        case when len(token_stats.token_rank) >= extraction.prompt_len + extraction.gen_len - 1
            then list_slice(
                token_stats.token_rank, extraction.prompt_len, extraction.prompt_len + extraction.gen_len - 1
            )
        end as window_rank,
        case when len(token_stats.token_surprisal) >= extraction.prompt_len + extraction.gen_len - 1
            then 0 - list_sum(list_slice(  -- 0 - x: no -0.0
                token_stats.token_surprisal,
                extraction.prompt_len,
                extraction.prompt_len + extraction.gen_len - 1
            ))
        end as continuation_log_prob
    from extraction
    inner join instances
        on extraction.instance_id = instances.instance_id
    left join token_stats
        on extraction.model = token_stats.model
        and extraction.step = token_stats.step
        and extraction.instance_id = token_stats.instance_id
),

final as (
    select
        -- ids
        model,
        step,
        instance_id,
        prompt_len,
        gen_len,
        -- from the greedy continuation
        cast(coalesce(list_position(generated_right, false) - 1, gen_len) as integer) as prefix_match_len,
        -- teacher-forced, from token statistics; rank 0 = no vocabulary entry with a strictly
        -- greater logit, so a tie counts as right
        cast(list_aggregate([r = 0 for r in window_rank], 'count_if') / gen_len as double)
            as exact_memorization,
        -- 1 - k*/gen_len, k* = the continuation tokens to give before greedy decoding is right to
        -- the end: up to and including the last one it gets wrong (0 when none)
        cast(case when window_rank is not null then
            coalesce(list_position(list_reverse([r > 0 for r in window_rank]), true) - 1, gen_len) / gen_len
        end as double) as extraction_strength,
        cast(continuation_log_prob as double) as continuation_log_prob,
        cast(exp(continuation_log_prob) as double) as p_extract_1,
        cast({{ extraction_probability('continuation_log_prob', 10) }} as double) as p_extract_10,
        cast({{ extraction_probability('continuation_log_prob', 100) }} as double) as p_extract_100,
        cast({{ extraction_probability('continuation_log_prob', 1000) }} as double) as p_extract_1000
    from windows
)

select * from final
