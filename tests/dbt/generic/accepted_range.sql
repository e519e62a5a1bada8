{% test accepted_range(model, column_name, min_value=none, max_value=none) %}
-- Values outside [min_value, max_value] (either bound optional; nulls are not_null's job).
select {{ column_name }}
from {{ model }}
where false
{%- if min_value is not none %}
    or {{ column_name }} < {{ min_value }}
{%- endif %}
{%- if max_value is not none %}
    or {{ column_name }} > {{ max_value }}
{%- endif %}
{% endtest %}
