with source as (
    select * from {{ lake_source('instance_features') }}
),

renamed as (
    select
        -- ids
        instance_id,
        -- text
        text,
        prompt_text,
        -- recitation: duplication in the training stream
        sequence_duplicates,
        whole_sequence_duplicates,
        -- corpus token frequencies of the sample's tokens
        max_frequency,
        avg_frequency,
        min_frequency,
        median_frequency,
        p25_frequency,
        p75_frequency,
        frequencies,
        -- reconstruction: templates
        is_incrementing,
        is_repeating,
        is_templating,
        -- text statistics
        huffman_coding_length,
        nl_score,
        -- matches against the representative sample
        semantic_matches_0_8,
        semantic_matches_0_9,
        textual_matches_0_8,
        textual_matches_0_9,
        in_representative_sample
    from source
)

select * from renamed
