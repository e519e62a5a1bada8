with source as (
    select * from {{ lake_source('mitigation_oracles') }}
),

renamed as (
    select
        study,
        model,
        step,
        n_forget,
        n_nonmembers,
        mem,
        acc,
        ppl,
        exact_memorization,
        extraction_strength,
        mia_auc,
        base_exact_memorization,
        base_extraction_strength,
        base_mia_auc,
        base_privleak,
        base_ks_distance,
        base_forget_quality,
        seconds,
        forget_ids,
        forget_extracted
    from source
)

select * from renamed
