{#-
  Post-hook of the external (Parquet) marts. For an empty model dbt-duckdb writes one all-null
  row into the file (and hides it in its catalog view); readers of the Parquet file would see
  that row, so rewrite the file with the same schema and no rows.
-#}
{% macro rewrite_empty_external() %}
    {%- if execute and config.get('materialized') == 'external' -%}
        {%- set location = config.get('location', default=external_location(this, config)) -%}
        {%- set rows = run_query("select count(*) from " ~ this)[0][0] -%}
        {%- if rows == 0 -%}
            copy (select * from {{ this }} limit 0) to {{ lake_quote(location) }} (format parquet)
        {%- endif -%}
    {%- endif -%}
{% endmacro %}


{#-
  on-run-start: make sure the external root (<warehouse>/marts) exists, so a plain `dbt build`
  works on a warehouse that ingest jobs wrote (DuckDB's COPY does not create parent
  directories). A per-thread COPY creates its target directory; this one writes no rows and
  leaves only an empty hidden `.dbt_marts_dir_0.csv`, and keeps any file already there.
-#}
{% macro ensure_external_root() %}
    {%- if execute and target.type == 'duckdb' -%}
        copy (select 1 as x where false) to {{ lake_quote(adapter.external_root()) }}
            (format csv, header false, per_thread_output, filename_pattern '.dbt_marts_dir_{i}',
             overwrite_or_ignore)
    {%- endif -%}
{% endmacro %}
