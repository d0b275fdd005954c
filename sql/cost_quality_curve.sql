-- cost_quality_curve.sql: the quality-versus-cost curve of cost-aware routing across all LLMs,
-- measured on prompts with known per-LLM quality, beside each LLM alone and the oracle.
--
-- Run:  routerdb sql BUNDLE --recipe cost_quality_curve
--       routerdb sql BUNDLE --recipe cost_quality_curve --database my.duckdb --set scores_table=evals
-- Inputs (variables; each unset one takes the demo default):
--   scores_table   one row per (prompt, model): prompt, model, score (the quality the LLM reached,
--                  e.g. 0/1 correctness), cost (USD for that call; NULL: estimated from the prices)
--                  (default: the shipped sample, data/sample/llmrouter_sample.parquet)
--   prices_table   model, usd_per_1m_input_tokens, usd_per_1m_output_tokens, for NULL costs
--                  (default: made-up prices for the bundle's LLMs, for the demo only)
--   output_tokens  expected completion length for estimated costs (default 300)
--   max_weight, weight_step  the grid of cost weights lambda: 0, step, ..., max (default 2, 0.1)
-- Uses the LLMs that both the table and the bundle know, and the prompts scored for all of them.
-- At each lambda every prompt goes to argmax route_score(prompt, model) - lambda * cost / (largest
-- cost in the table), ties to the first model name: training.evaluation.metrics.cost_quality_curve in SQL.
-- Result: kind 'router' (one row per lambda), 'llm' (always calling one LLM) and 'oracle' (per
-- prompt the best LLM, the cheapest among equals), each with mean cost and mean quality.

-- Parameters are checked first: a bad one stops the recipe with one line naming it.
CREATE OR REPLACE TEMP MACRO recipe_number(name, value, fallback, low, high, allowed) AS
    CASE WHEN value IS NULL THEN fallback
         WHEN TRY_CAST(value AS DOUBLE) BETWEEN low AND high THEN TRY_CAST(value AS DOUBLE)  -- NaN, inf: no
         ELSE error(format('{} = {}: allowed {}; fix: --set {}=NUMBER', name, value::VARCHAR, allowed, name))
    END;
SET VARIABLE output_tokens = recipe_number('output_tokens', getvariable('output_tokens'), 300, 0, 1e9,
                                           'a number of tokens >= 0');
SET VARIABLE max_weight = recipe_number('max_weight', getvariable('max_weight'), 2.0, 0, 1e12, 'a number >= 0');
SET VARIABLE weight_step = recipe_number('weight_step', getvariable('weight_step'), 0.1, 1e-300, 1e12,
                                         'a number > 0');
SET VARIABLE recipe_checked = CASE WHEN getvariable('max_weight') / getvariable('weight_step') > 100000
    THEN error(format('max_weight / weight_step = {}: allowed at most 100,000 points on the grid; fix: '
                      '--set weight_step=LARGER', getvariable('max_weight') / getvariable('weight_step'))) END;
SET VARIABLE prices_table = COALESCE(getvariable('prices_table'), 'demo_prices');
-- The demo default reads the shipped sample only when scores_table is not set (any directory then works).
SET VARIABLE sample_path = COALESCE(getvariable('sample_path'), 'data/sample/llmrouter_sample.parquet');
SET VARIABLE recipe_checked = CASE WHEN getvariable('scores_table') IS NULL
    AND NOT EXISTS (SELECT 1 FROM glob(getvariable('sample_path'))) THEN error(format(
    'scores_table is not set and the demo sample {} is not here; fix: --set scores_table=YOUR_TABLE (prompt, model, score[, cost] rows)',
    getvariable('sample_path'))) END;
SET VARIABLE scores_query = CASE WHEN getvariable('scores_table') IS NULL
    THEN 'SELECT prompt, model, score, cost FROM read_parquet(getvariable(''sample_path''))'
    ELSE 'SELECT * FROM query_table(getvariable(''scores_table''))' END;

-- Made-up prices (USD per million tokens) so the demo runs with any bundle: replace with yours.
CREATE OR REPLACE TEMP VIEW demo_prices AS
SELECT model,
       0.05 * (1 + row_number() OVER (ORDER BY model)) ^ 2 AS usd_per_1m_input_tokens,
       0.20 * (1 + row_number() OVER (ORDER BY model)) ^ 2 AS usd_per_1m_output_tokens
FROM router_models;

-- The complete prompts x LLMs matrix: quality, cost and the router's score for each cell.
CREATE OR REPLACE TEMP TABLE curve_cells AS
WITH rows AS (
    SELECT s.prompt, s.model, s.score::DOUBLE AS quality,
           COALESCE(s.cost, (ceil(length(s.prompt) / 4) * p.usd_per_1m_input_tokens
                             + getvariable('output_tokens') * p.usd_per_1m_output_tokens) / 1e6) AS cost
    FROM query(getvariable('scores_query')) s
    JOIN router_models r ON r.model = s.model
    LEFT JOIN query_table(getvariable('prices_table')) p ON p.model = s.model
    WHERE s.prompt IS NOT NULL AND s.score IS NOT NULL
), complete AS (
    SELECT prompt FROM rows GROUP BY prompt
    HAVING count(DISTINCT model) = (SELECT count(DISTINCT model) FROM rows) AND count(cost) = count(*)
)
SELECT prompt, model, quality, cost, route_score(prompt, model) AS score
FROM rows SEMI JOIN complete USING (prompt);

SET VARIABLE cost_scale = (SELECT COALESCE(NULLIF(max(cost), 0), 1) FROM curve_cells);

WITH weights AS (
    SELECT range * getvariable('weight_step') AS cost_weight
    FROM range(CAST(round(getvariable('max_weight') / getvariable('weight_step')) AS BIGINT) + 1)
), picks AS (
    SELECT w.cost_weight, c.quality, c.cost,
           row_number() OVER (PARTITION BY w.cost_weight, c.prompt
                              ORDER BY c.score - w.cost_weight * c.cost / getvariable('cost_scale') DESC,
                                       c.model) AS pick
    FROM curve_cells c CROSS JOIN weights w
), oracle AS (
    SELECT quality, cost,
           row_number() OVER (PARTITION BY prompt ORDER BY quality DESC, cost, model) AS pick
    FROM curve_cells
)
SELECT 'router' AS kind, NULL AS model, cost_weight, avg(cost) AS mean_cost_usd, avg(quality) AS mean_quality,
       count(*) AS prompts
FROM picks WHERE pick = 1 GROUP BY cost_weight
UNION ALL
SELECT 'llm', model, NULL, avg(cost), avg(quality), count(*) FROM curve_cells GROUP BY model
UNION ALL
SELECT 'oracle', NULL, NULL, avg(cost), avg(quality), count(*) FROM oracle WHERE pick = 1
ORDER BY kind DESC, cost_weight, model;
