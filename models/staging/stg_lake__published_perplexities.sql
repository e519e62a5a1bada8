-- The released rows are 64-token samples: 63 scored positions, 31 in the prompt and 32 in the
-- continuation. The paper divided every window's surprisal sum by 63 (the `_shared` variant);
-- raising a shared perplexity to 63 / n gives the window's own-count perplexity, the default
-- variant of the `sequence_perplexities` mart.
with source as (
    select * from {{ lake_source('published_perplexities') }}
),

renamed as (
    select
        -- ids
        model,
        step,
        shard,
        instance_id,
        -- per-window normalisation
        pow(prompt_perplexity, 63.0 / 31.0) as prompt_perplexity,
        pow(generation_perplexity, 63.0 / 32.0) as continuation_perplexity,
        sequence_perplexity,
        -- as released: the shared denominator
        prompt_perplexity as prompt_perplexity_shared,
        generation_perplexity as continuation_perplexity_shared,
        loss as batch_loss
    from source
)

select * from renamed
