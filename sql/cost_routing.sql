-- cost_routing.sql: pick an LLM per prompt that trades predicted quality against price, either
-- with a fixed trade-off (cost_weight, lambda) or as the best routing whose average cost fits a budget.
--
-- Run:  routerdb sql BUNDLE --recipe cost_routing [--set cost_weight=0.3 | --set budget_usd=0.0004]
--       routerdb sql BUNDLE --recipe cost_routing --database my.duckdb \
--           --set prompts_table=my_prompts --set prices_table=my_prices
-- Inputs (variables; each unset one takes the demo default):
--   prompts_table  table or view with a `prompt` column (default: 100 prompts of the shipped sample)
--   prices_table   your price sheet: model, usd_per_1m_input_tokens, usd_per_1m_output_tokens
--                  (default: made-up prices for the bundle's LLMs, for the demo only)
--   cost_weight    lambda: the score given up to avoid the most expensive call (default 0.5): 0 takes the best
--                  predicted LLM whatever it costs; the larger, the cheaper
--   budget_usd     if set: the mean cost per prompt to stay within. lambda is then the smallest of
--                  0, 0.05, ..., 2, then 2.5 and up by 25 % a step to about 15,000 (and finally
--                  "cheapest LLM") whose routing fits the budget
--   output_tokens  expected completion length for the cost estimate (default 300)
-- Cost of a call: (ceil(characters / 4) * input price + output_tokens * output price) / 1e6 USD.
-- Choice: argmax over the priced LLMs the bundle knows of
--   route_score(prompt, model) - cost_weight * cost / (largest cost among all candidates),
-- the rule of training.evaluation.metrics.cost_quality_curve; ties go to the first model name.
-- Result: one row per prompt: the LLM chosen, its score and cost, the cost_weight used, the mean cost.

-- Parameters are checked first: a bad one stops the recipe with one line naming it.
CREATE OR REPLACE TEMP MACRO recipe_number(name, value, fallback, low, high, allowed) AS
    CASE WHEN value IS NULL THEN fallback
         WHEN TRY_CAST(value AS DOUBLE) BETWEEN low AND high THEN TRY_CAST(value AS DOUBLE)  -- NaN, inf: no
         ELSE error(format('{} = {}: allowed {}; fix: --set {}=NUMBER', name, value::VARCHAR, allowed, name))
    END;
SET VARIABLE cost_weight = recipe_number('cost_weight', getvariable('cost_weight'), 0.5, 0, 1e12, 'a number >= 0');
SET VARIABLE budget_usd = recipe_number('budget_usd', getvariable('budget_usd'), NULL, 1e-300, 1e12,
                                        'a number > 0 (USD per prompt), or leave it unset');
SET VARIABLE output_tokens = recipe_number('output_tokens', getvariable('output_tokens'), 300, 0, 1e9,
                                           'a number of tokens >= 0');
SET VARIABLE prices_table = COALESCE(getvariable('prices_table'), 'demo_prices');
-- The demo default reads the shipped sample only when prompts_table is not set (any directory then works).
SET VARIABLE sample_path = COALESCE(getvariable('sample_path'), 'data/sample/llmrouter_sample.parquet');
SET VARIABLE recipe_checked = CASE WHEN getvariable('prompts_table') IS NULL
    AND NOT EXISTS (SELECT 1 FROM glob(getvariable('sample_path'))) THEN error(format(
    'prompts_table is not set and the demo sample {} is not here; fix: --set prompts_table=YOUR_TABLE (a table or view with a prompt column)',
    getvariable('sample_path'))) END;
SET VARIABLE prompts_query = CASE WHEN getvariable('prompts_table') IS NULL
    THEN 'SELECT DISTINCT prompt FROM read_parquet(getvariable(''sample_path'')) ORDER BY prompt LIMIT 100'
    ELSE 'SELECT DISTINCT prompt FROM query_table(getvariable(''prompts_table''))' END;

-- Made-up prices (USD per million tokens) so the demo runs with any bundle: replace with yours.
CREATE OR REPLACE TEMP VIEW demo_prices AS
SELECT model,
       0.05 * (1 + row_number() OVER (ORDER BY model)) ^ 2 AS usd_per_1m_input_tokens,
       0.20 * (1 + row_number() OVER (ORDER BY model)) ^ 2 AS usd_per_1m_output_tokens
FROM router_models;

-- Every (prompt, priced LLM) pair with its score and cost; each distinct prompt is encoded once.
CREATE OR REPLACE TEMP TABLE route_candidates AS
WITH prompts AS (
    SELECT prompt FROM query(getvariable('prompts_query')) WHERE prompt IS NOT NULL
), llms AS (
    SELECT p.model, p.usd_per_1m_input_tokens, p.usd_per_1m_output_tokens
    FROM query_table(getvariable('prices_table')) p JOIN router_models r ON r.model = p.model
)
SELECT prompt, model, route_score(prompt, model) AS score,
       (ceil(length(prompt) / 4) * usd_per_1m_input_tokens
        + getvariable('output_tokens') * usd_per_1m_output_tokens) / 1e6 AS cost_usd
FROM prompts CROSS JOIN llms;

SET VARIABLE recipe_checked = CASE WHEN NOT EXISTS (FROM route_candidates) THEN error(format(
    'prices_table {} prices none of the bundle''s LLMs ({}), or the prompts are empty; fix: --set '
    'prices_table=YOUR_PRICES with a model column naming them', getvariable('prices_table'),
    (SELECT string_agg(model, ', ' ORDER BY model) FROM router_models))) END;
SET VARIABLE cost_scale = (SELECT COALESCE(NULLIF(max(cost_usd), 0), 1) FROM route_candidates);

-- With a budget: the mean cost of the routing at each cost_weight of the grid (1e9 = cheapest LLM).
-- Past 2 the grid grows by 25 % a step: when scores differ little and prices a lot, only a large
-- cost_weight trades a little quality for a budget.
CREATE OR REPLACE TEMP TABLE route_lambdas AS
SELECT cost_weight, avg(cost_usd) AS mean_cost_usd, avg(score) AS mean_score
FROM (
    SELECT l.cost_weight, c.cost_usd, c.score,
           row_number() OVER (PARTITION BY l.cost_weight, c.prompt
                              ORDER BY c.score - l.cost_weight * c.cost_usd / getvariable('cost_scale') DESC,
                                       c.model) AS pick
    FROM route_candidates c
    CROSS JOIN (SELECT range * 0.05 AS cost_weight FROM range(41)          -- 0, 0.05, ..., 2
                UNION ALL SELECT 2 * 1.25 ^ range FROM range(1, 41)         -- 2.5 ... ~15,000
                UNION ALL SELECT 1e9) l
    WHERE getvariable('budget_usd') IS NOT NULL
)
WHERE pick = 1
GROUP BY cost_weight;

SET VARIABLE cost_weight_used = CASE
    WHEN getvariable('budget_usd') IS NULL THEN getvariable('cost_weight')
    ELSE (SELECT COALESCE(min(cost_weight) FILTER (WHERE mean_cost_usd <= getvariable('budget_usd')), max(cost_weight))
          FROM route_lambdas)
END;

SELECT prompt, model AS routed_to, score, cost_usd, getvariable('cost_weight_used') AS cost_weight,
       avg(cost_usd) OVER () AS mean_cost_usd,
       getvariable('budget_usd') IS NULL OR avg(cost_usd) OVER () <= getvariable('budget_usd') AS within_budget
FROM (
    SELECT *, row_number() OVER (PARTITION BY prompt
                                 ORDER BY score - getvariable('cost_weight_used') * cost_usd / getvariable('cost_scale') DESC,
                                          model) AS pick
    FROM route_candidates
)
WHERE pick = 1
ORDER BY prompt;
