-- routing_curve_apgr.sql: the strong / weak routing curve and its area (APGR) from a table of
-- (prompt, strong_score, weak_score) rows and route_score.
--
-- Run:  routerdb sql BUNDLE --recipe routing_curve_apgr
--       routerdb sql BUNDLE --recipe routing_curve_apgr --database my.duckdb --set pairs_table=evals \
--           --set strong_model=big-llm --set weak_model=small-llm
-- Inputs (variables; each unset one takes the demo default):
--   pairs_table    prompt, strong_score, weak_score: the quality each LLM reached on the prompt
--                  (default: two LLMs of the shipped sample, data/sample/llmrouter_sample.parquet)
--   strong_model, weak_model  the two LLMs' names in the bundle (default: among the LLMs that the
--                  sample and the bundle share, the highest and the lowest mean sample score)
-- The router's preference is diff = route_score(prompt, strong) - route_score(prompt, weak). At
-- each threshold t, the prompts with diff > t go to the strong LLM. The 11 thresholds are the
-- deciles 0 %, 10 %, ..., 100 % of diff (linear interpolation), the 0 % one replaced by -infinity
-- so the curve ends at 100 % strong calls. Quality at t = mean of strong_score where diff > t and
-- weak_score elsewhere. APGR = (area under quality over the strong-call fraction 0..1 - weak mean)
-- / (strong mean - weak mean): random routing scores about 0.5, a perfect one the oracle's area.
-- apgr uses the 11-point curve; apgr_exact every distinct diff as a threshold.
-- Same definitions as training.evaluation.metrics.routing_curve / apgr.
-- Result: the 11 points (strong-call %, quality, threshold) with apgr and apgr_exact on each row.

-- Parameters are checked first: a bad one stops the recipe with one line naming it.
CREATE OR REPLACE TEMP MACRO recipe_llm(name, value) AS
    CASE WHEN value IS NULL OR value IN (SELECT model FROM router_models) THEN value
         ELSE error(format('{} = ''{}'' is not an LLM of the bundle; allowed: {}; fix: --set {}=ONE_OF_THEM',
                           name, value, (SELECT string_agg(model, ', ' ORDER BY model) FROM router_models), name))
    END;
SET VARIABLE strong_model = recipe_llm('strong_model', getvariable('strong_model'));
SET VARIABLE weak_model = recipe_llm('weak_model', getvariable('weak_model'));
-- The demo default reads the shipped sample only when pairs_table is not set (any directory then works).
SET VARIABLE sample_path = COALESCE(getvariable('sample_path'), 'data/sample/llmrouter_sample.parquet');
SET VARIABLE recipe_checked = CASE WHEN getvariable('pairs_table') IS NULL
    AND NOT EXISTS (SELECT 1 FROM glob(getvariable('sample_path'))) THEN error(format(
    'pairs_table is not set and the demo sample {} is not here; fix: --set pairs_table=YOUR_TABLE (prompt, strong_score, weak_score rows, with strong_model and weak_model)',
    getvariable('sample_path'))) END;
SET VARIABLE recipe_checked = CASE WHEN getvariable('pairs_table') IS NOT NULL
    AND (getvariable('strong_model') IS NULL OR getvariable('weak_model') IS NULL) THEN error(
    'pairs_table is set but strong_model or weak_model is not; fix: --set strong_model=LLM --set weak_model=LLM '
    '(the LLMs whose scores pairs_table holds)') END;

-- Demo defaults: among the LLMs that the sample and the bundle share, the highest and lowest mean score.
SET VARIABLE demo_means_query = CASE WHEN getvariable('pairs_table') IS NULL
    THEN 'SELECT model, avg(score) AS mean_score FROM read_parquet(getvariable(''sample_path'')) '
         'JOIN router_models USING (model) GROUP BY model'
    ELSE 'SELECT NULL::VARCHAR AS model, NULL::DOUBLE AS mean_score LIMIT 0' END;
SET VARIABLE strong_model = COALESCE(getvariable('strong_model'),
    (SELECT model FROM query(getvariable('demo_means_query')) ORDER BY mean_score DESC, model LIMIT 1));
SET VARIABLE weak_model = COALESCE(getvariable('weak_model'),
    (SELECT model FROM query(getvariable('demo_means_query')) ORDER BY mean_score, model LIMIT 1));
SET VARIABLE pairs_query = CASE WHEN getvariable('pairs_table') IS NULL
    THEN 'SELECT prompt, max(score) FILTER (WHERE model = getvariable(''strong_model'')) AS strong_score, '
         'max(score) FILTER (WHERE model = getvariable(''weak_model'')) AS weak_score '
         'FROM read_parquet(getvariable(''sample_path'')) GROUP BY prompt'
    ELSE 'SELECT prompt, strong_score, weak_score FROM query_table(getvariable(''pairs_table''))' END;

CREATE OR REPLACE TEMP TABLE routing_rows AS
SELECT strong_score::DOUBLE AS strong, weak_score::DOUBLE AS weak,
       route_score(prompt, getvariable('strong_model')) - route_score(prompt, getvariable('weak_model')) AS diff
FROM query(getvariable('pairs_query'))
WHERE prompt IS NOT NULL AND strong_score IS NOT NULL AND weak_score IS NOT NULL;

CREATE OR REPLACE TEMP TABLE routing_curve AS
WITH deciles AS (
    SELECT unnest(range(11)) AS point,
           unnest(quantile_cont(diff, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])) AS q
    FROM routing_rows
), thresholds AS (
    SELECT point, CASE WHEN point = 0 THEN '-infinity'::DOUBLE ELSE q END AS threshold FROM deciles
)
SELECT t.point, t.threshold,
       100.0 * (SELECT count(*) FILTER (WHERE r.diff > t.threshold) FROM routing_rows r)
             / NULLIF((SELECT count(*) FROM routing_rows), 0) AS strong_call_pct,
       (SELECT avg(CASE WHEN r.diff > t.threshold THEN r.strong ELSE r.weak END) FROM routing_rows r) AS quality
FROM thresholds t;

-- The exact curve: one point per distinct diff (prompts above it go to the strong LLM), plus 100 %.
CREATE OR REPLACE TEMP TABLE routing_curve_exact AS
WITH steps AS (
    SELECT diff, count(*) AS n, sum(strong - weak) AS gain FROM routing_rows GROUP BY diff
), totals AS (
    SELECT count(*) AS n, sum(weak) AS weak_sum FROM routing_rows
), points AS (
    -- threshold = each distinct diff: strong calls are the prompts with a larger diff
    SELECT COALESCE(sum(n) OVER above, 0) AS strong_calls, COALESCE(sum(gain) OVER above, 0) AS gain
    FROM steps
    WINDOW above AS (ORDER BY diff DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    UNION ALL
    SELECT count(*), sum(strong - weak) FROM routing_rows
)
SELECT 100.0 * strong_calls / totals.n AS strong_call_pct, (totals.weak_sum + gain) / totals.n AS quality
FROM points, totals;

CREATE OR REPLACE TEMP MACRO apgr_of(curve_table) AS TABLE
WITH ordered AS (
    SELECT strong_call_pct / 100 AS x, quality AS y,
           lag(strong_call_pct / 100) OVER (ORDER BY strong_call_pct, quality) AS x0,
           lag(quality) OVER (ORDER BY strong_call_pct, quality) AS y0
    FROM query_table(curve_table)
), ends AS (
    SELECT arg_min(quality, strong_call_pct) AS weak_mean, arg_max(quality, strong_call_pct) AS strong_mean
    FROM query_table(curve_table)
)
SELECT (sum((x - x0) * (y + y0) / 2) - any_value(weak_mean)) / NULLIF(any_value(strong_mean) - any_value(weak_mean), 0)
       AS apgr
FROM ordered, ends
WHERE x0 IS NOT NULL;

SELECT getvariable('strong_model') AS strong_model, getvariable('weak_model') AS weak_model,
       point, threshold, strong_call_pct, quality,
       (SELECT apgr FROM apgr_of('routing_curve')) AS apgr,
       (SELECT apgr FROM apgr_of('routing_curve_exact')) AS apgr_exact,
       (SELECT count(*) FROM routing_rows) AS prompts
FROM routing_curve
ORDER BY strong_call_pct, point DESC;
