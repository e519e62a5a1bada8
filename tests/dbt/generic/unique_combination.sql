{% test unique_combination(model, columns) %}
-- Grain check without a package dependency: no two rows share the key columns.
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
