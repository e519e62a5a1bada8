{% test lake_files_have_contract_columns(model) %}
-- Schema drift: an extra column is absorbed (sources read with union_by_name), but a file that
-- lacks a column of the contract (the source's documented columns, partition keys and the
-- optional columns of `meta.optional` aside: files written before those were added) fails.
{%- set node = lake_source_node(model.identifier) if execute else none %}
{%- set required = [] %}
{%- if execute %}
    {%- set exempt = node.meta.get('partition_by', []) + node.meta.get('optional', []) %}
    {%- for column in node.columns.values() if column.name not in exempt %}
        {%- do required.append(lake_quote(column.name)) %}
    {%- endfor %}
{%- endif %}
{%- set has_files = execute and (lake_files(node.name) | length) > 0 %}
{%- set failing %}
{%- if has_files %}
with file_columns as (
    select file_name, name as column_name
    from parquet_schema({{ lake_quote(node.meta.lake_glob) }})
),

files as (
    select distinct file_name from file_columns
),

contract as (
    select unnest([{{ required | join(', ') }}]) as column_name
)

select
    files.file_name,
    contract.column_name,
    files.file_name || ': missing column ''' || contract.column_name
    || ''' of the lake contract for {{ node.name }}' as problem
from files
cross join contract
anti join file_columns
    on file_columns.file_name = files.file_name
    and file_columns.column_name = contract.column_name
{%- else %}
select null as file_name, null as column_name, null as problem
where false
{%- endif %}
{%- endset %}
{{ log_problems(failing) }}
{{ failing }}
{% endtest %}
