{#-
  Reading the lake. Every lake table is a source in models/staging/__sources.yml whose
  `meta.lake_glob` names its Parquet files; staging models select from `lake_source('<table>')`
  rather than `source('lake', '<table>')`, which keeps the lineage and adds the lake's rules:

  - every partition complete (it has its _manifest.json): the source itself (external_location);
  - some partitions without a manifest: only the complete ones, by explicit file list, and a
    warning. `dbt build` fails before that, on the source test `lake_partitions_have_manifests`;
  - no partitions yet: an empty relation with the contract's columns (the source columns'
    `data_type`s), so downstream models build empty with the right schema; a source with
    `meta.required: true` stops the run instead, naming the job that writes it;
  - the optional columns (`meta.optional`: additive contract changes) are there, null, even when
    no file has them yet (partitions written before the change); `union_by_name` fills them
    only where some file has them.
-#}

{% macro lake_source(table) %}
    {%- set relation = source('lake', table) -%}
    {%- if not execute -%}
        {{- return(relation) -}}
    {%- endif -%}
    {%- set node = lake_source_node(table) -%}
    {%- set files = lake_files(table) -%}
    {%- set complete = files | selectattr('complete') | map(attribute='file') | list -%}
    {%- set incomplete = files | rejectattr('complete') | map(attribute='file') | list -%}
    {%- if not complete -%}
        {%- if node.meta.get('required') -%}
            {{ exceptions.raise_compiler_error(
                "lake table '" ~ table ~ "' has no complete partitions (" ~ node.meta.lake_glob
                ~ "): " ~ node.meta.get('missing_hint', 'run the job that writes it')) }}
        {%- endif -%}
        {{- return(lake_empty_relation(node)) -}}
    {%- endif -%}
    {%- if not incomplete -%}
        {{- return(lake_with_optional(relation, node)) -}}
    {%- endif -%}
    {%- do exceptions.warn(
        "lake table '" ~ table ~ "': reading " ~ (complete | length) ~ " complete file(s) and leaving out "
        ~ (incomplete | length) ~ " without a _manifest.json, e.g. " ~ incomplete[0]) -%}
    {%- set quoted = [] -%}
    {%- for file in complete -%}
        {%- do quoted.append(lake_quote(file)) -%}
    {%- endfor -%}
    {%- set rendered = relation | string -%}
    {%- if lake_quote(node.meta.lake_glob) not in rendered -%}
        {{ exceptions.raise_compiler_error(
            "source lake." ~ table ~ ": external_location must read '%(lake_glob)s', got " ~ rendered) }}
    {%- endif -%}
    {%- set complete_only = rendered.replace(lake_quote(node.meta.lake_glob), "[" ~ (quoted | join(", ")) ~ "]") -%}
    {{- return(lake_with_optional(complete_only, node)) -}}
{% endmacro %}


{#- `relation` with every optional column of the source, null where no file has it: a union by
    name with no rows of those columns (DuckDB prunes it; projections and filters still reach the
    Parquet scan). -#}
{% macro lake_with_optional(relation, node) %}
    {%- set optional = node.meta.get('optional', []) -%}
    {%- if not optional -%}
        {{- return(relation) -}}
    {%- endif -%}
    {{- return("(select * from " ~ relation ~ " union all by name select "
               ~ lake_null_columns(node, optional) ~ " where false)") -}}
{% endmacro %}


{% macro lake_source_node(table) %}
    {%- for node in graph.sources.values() -%}
        {%- if node.source_name == 'lake' and node.name == table -%}
            {{- return(node) -}}
        {%- endif -%}
    {%- endfor -%}
    {{ exceptions.raise_compiler_error("no source lake." ~ table ~ " in models/staging/__sources.yml") }}
{% endmacro %}


{% macro lake_quote(value) -%}
    '{{ value | replace("'", "''") }}'
{%- endmacro %}


{% macro lake_manifest_glob(data_glob) -%}
    {{ data_glob.rsplit('/', 1)[0] }}/_manifest.json
{%- endmacro %}


{#- Data files of a lake table, each with whether its partition has a manifest. -#}
{% macro lake_files(table) %}
    {%- set data_glob = lake_source_node(table).meta.lake_glob -%}
    {%- set query -%}
        select
            data_file.file,
            manifest.file is not null as complete
        from glob({{ lake_quote(data_glob) }}) as data_file
        left join glob({{ lake_quote(lake_manifest_glob(data_glob)) }}) as manifest
            on parse_dirpath(data_file.file) = parse_dirpath(manifest.file)
        order by data_file.file
    {%- endset -%}
    {%- set rows = [] -%}
    {%- for row in run_query(query) -%}
        {%- do rows.append({'file': row[0], 'complete': row[1]}) -%}
    {%- endfor -%}
    {{- return(rows) -}}
{% endmacro %}


{% macro lake_empty_relation(node) %}
    {{- return("(select " ~ lake_null_columns(node) ~ " limit 0)") -}}
{% endmacro %}


{#- `cast(null as <data_type>) as <name>` for the source's columns (those in `names` if given). -#}
{% macro lake_null_columns(node, names=none) %}
    {%- set columns = [] -%}
    {%- for column in node.columns.values() if names is none or column.name in names -%}
        {%- if not column.data_type -%}
            {{ exceptions.raise_compiler_error(
                "source lake." ~ node.name ~ ": column '" ~ column.name ~ "' needs a data_type") }}
        {%- endif -%}
        {%- do columns.append("cast(null as " ~ column.data_type ~ ") as " ~ adapter.quote(column.name)) -%}
    {%- endfor -%}
    {{- return(columns | join(", ")) -}}
{% endmacro %}


{#-
  For custom tests: print up to `limit` of the failing rows' `problem` column (their SQL must
  have one), so a failing test says what is wrong without a second query.
-#}
{% macro log_problems(failing_rows_sql, limit=5) %}
    {#- only when the test runs (build/test), not when it is compiled (compile, docs generate) -#}
    {%- if execute and flags.WHICH in ['build', 'test', 'retry'] -%}
        {%- set rows = run_query("select problem from (" ~ failing_rows_sql ~ ") order by problem limit " ~ (limit + 1)) -%}
        {%- for row in rows[:limit] -%}
            {%- do log("  problem: " ~ row[0], info=True) -%}
        {%- endfor -%}
        {%- if rows | length > limit -%}
            {%- do log("  problem: ... and more", info=True) -%}
        {%- endif -%}
    {%- endif -%}
{% endmacro %}
