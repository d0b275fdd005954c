-- routed_prompts: every row of the prompt log with the LLM the router picks and every LLM's score.
-- Incremental: a run scores only the log rows that are not in the table yet; scored_by is the dbt
-- invocation that scored the row.
{{ config(materialized='incremental', unique_key='id') }}

select
    log.id,
    log.asked_at,
    log.prompt,
    route_best(log.prompt) as route_best,
    route_scores(log.prompt) as route_scores,
    '{{ invocation_id }}' as scored_by
from {{ ref('prompt_log') }} as log
{% if is_incremental() %}
where log.id not in (select id from {{ this }})
{% endif %}
