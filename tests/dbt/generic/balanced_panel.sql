{% test balanced_panel(model, unit, time, panel) %}
-- Every unit of a panel is observed at every time of that panel: per `panel` (e.g. model),
-- each `unit` (instance) has as many distinct `time`s (steps) as the whole panel.
{%- set failing %}
with unit_times as (
    select
        {{ panel }} as panel,
        {{ unit }} as unit,
        count(distinct {{ time }}) as n_times
    from {{ model }}
    group by all
),

panel_times as (
    select
        {{ panel }} as panel,
        count(distinct {{ time }}) as n_times
    from {{ model }}
    group by all
)

select
    unit_times.panel,
    unit_times.unit,
    unit_times.n_times,
    panel_times.n_times as n_panel_times,
    '{{ panel }} ' || unit_times.panel || ': {{ unit }} ' || unit_times.unit || ' has '
    || unit_times.n_times || ' of the ' || panel_times.n_times
    || ' {{ time }}s (unbalanced panel; re-run the missing partitions)' as problem
from unit_times
inner join panel_times on unit_times.panel = panel_times.panel
where unit_times.n_times < panel_times.n_times
{%- endset %}
{{ log_problems(failing) }}
{{ failing }}
{% endtest %}
