{% test lake_partitions_have_manifests(model) %}
-- A lake partition is complete iff its _manifest.json exists (memlake/lake.py): a directory
-- with data but no manifest is an interrupted or foreign write, never read as if it were whole.
{%- set data_glob = lake_source_node(model.identifier).meta.lake_glob if execute else '' %}
{%- set failing %}
with data_dirs as (
    select distinct parse_dirpath(file) as partition_dir
    from glob({{ lake_quote(data_glob) }})
),

manifest_dirs as (
    select parse_dirpath(file) as partition_dir
    from glob({{ lake_quote(lake_manifest_glob(data_glob)) }})
)

select
    partition_dir,
    partition_dir || ': partition has data but no _manifest.json (an interrupted or foreign '
    || 'write); delete it and re-run the job that writes it' as problem
from data_dirs
where partition_dir not in (select partition_dir from manifest_dirs)
{%- endset %}
{{ log_problems(failing) }}
{{ failing }}
{% endtest %}
