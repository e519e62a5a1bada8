{#-
  Sequence-level aggregates of per-token list columns. Engine-specific SQL lives here, behind
  adapter.dispatch, so the models stay portable: a Trino/Spark target adds its own `<adapter>__`
  versions (e.g. reduce()/aggregate() over arrays) and the models do not change.
-#}

{% macro list_length(column) -%}
    {{ return(adapter.dispatch('list_length', 'memlake')(column)) }}
{%- endmacro %}

{% macro list_total(column) -%}
    {{ return(adapter.dispatch('list_total', 'memlake')(column)) }}
{%- endmacro %}

{% macro list_mean(column) -%}
    {{ return(adapter.dispatch('list_mean', 'memlake')(column)) }}
{%- endmacro %}

{% macro list_count_equal(column, value) -%}
    {{ return(adapter.dispatch('list_count_equal', 'memlake')(column, value)) }}
{%- endmacro %}


{% macro duckdb__list_length(column) -%}
    len({{ column }})
{%- endmacro %}

{% macro duckdb__list_total(column) -%}
    list_sum({{ column }})
{%- endmacro %}

{% macro duckdb__list_mean(column) -%}
    list_avg({{ column }})
{%- endmacro %}

{#- count_if over a boolean list: no list of doubles is materialised (faster than list_avg of a cast) -#}
{% macro duckdb__list_count_equal(column, value) -%}
    list_aggregate([x = {{ value }} for x in {{ column }}], 'count_if')
{%- endmacro %}


{% macro default__list_length(column) -%}{{ list_unsupported('list_length') }}{%- endmacro %}
{% macro default__list_total(column) -%}{{ list_unsupported('list_total') }}{%- endmacro %}
{% macro default__list_mean(column) -%}{{ list_unsupported('list_mean') }}{%- endmacro %}
{% macro default__list_count_equal(column, value) -%}{{ list_unsupported('list_count_equal') }}{%- endmacro %}

{% macro list_unsupported(name) -%}
    {{ exceptions.raise_compiler_error(
        "macro " ~ name ~ " has no implementation for adapter '" ~ adapter.type()
        ~ "': add " ~ adapter.type() ~ "__" ~ name ~ " in macros/list_aggregates.sql") }}
{%- endmacro %}
