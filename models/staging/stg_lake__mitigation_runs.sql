with source as (
    select * from {{ lake_source('mitigation_runs') }}
),

renamed as (
    select
        study,
        run_id,
        method,
        kind,
        hparams,
        seed,
        model,
        step,
        n_forget,
        mem_before,
        mem_after,
        clean_before,
        clean_after,
        acc_before,
        acc_after,
        ppl_before,
        ppl_after,
        seconds,
        stats,
        mem_before_dup0,
        mem_after_dup0,
        mem_before_dup1,
        mem_after_dup1,
        mem_before_dup2,
        mem_after_dup2,
        mem_before_dup3,
        mem_after_dup3,
        exact_memorization,
        extraction_strength,
        mia_auc,
        privleak,
        ks_distance,
        forget_quality,
        forget_ids,
        forget_extracted
    from source
)

select * from renamed
