{#-
  Probabilistic extraction (Hayes et al. 2024): with p the probability that one sample at
  temperature 1 reproduces the continuation, the chance that n independent samples include it
  is 1 - (1 - p)^n. `log_p` is ln p. Plain 1 - exp(n ln(1 - p)) loses everything once 1 - p
  rounds to 1 (and much before: 1 - p keeps only the digits of p above 1e-16), so p below 1e-6
  uses the binomial series to p^3, whose relative error there is under (n p)^3 / 24.
-#}
{% macro extraction_probability(log_p, n) -%}
    case
        when {{ log_p }} is null then null
        when {{ log_p }} >= 0 then 1
        when exp({{ log_p }}) < 1e-6
            then {{ n }} * exp({{ log_p }})
                - {{ n }} * ({{ n }} - 1) * exp(2 * {{ log_p }}) / 2
                + {{ n }} * ({{ n }} - 1) * ({{ n }} - 2) * exp(3 * {{ log_p }}) / 6
        else 1 - exp({{ n }} * ln(1 - exp({{ log_p }})))
    end
{%- endmacro %}
