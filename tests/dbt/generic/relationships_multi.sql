{% test relationships_multi(model, to, fields) %}
-- A composite foreign key: every row whose `fields` (child column: parent column) are all
-- non-null has a parent row in `to`.
{%- set child_columns = fields.keys() | list %}
{%- set failing %}
with children as (
    select distinct {{ child_columns | join(', ') }}
    from {{ model }}
    where {% for c in child_columns %}{{ c }} is not null{{ ' and ' if not loop.last }}{% endfor %}
),

parents as (
    select distinct
    {%- for child, parent in fields.items() %}
        {{ parent }} as {{ child }}{{ ',' if not loop.last }}
    {%- endfor %}
    from {{ to }}
)

select
    children.*,
    'no parent in {{ to.identifier if to.identifier is defined else to }} for '
    {%- for c in child_columns %}
    || '{{ c }}=' || children.{{ c }}{{ " || ', '" if not loop.last }}
    {%- endfor %} as problem
from children
anti join parents using ({{ child_columns | join(', ') }})
{%- endset %}
{{ log_problems(failing) }}
{{ failing }}
{% endtest %}
