-- strong_share_threshold.sql: calibrate the threshold that sends a chosen share of traffic
-- (e.g. 20 %) to a strong LLM and the rest to a weak one, on a sample of your prompts.
--
-- Run:  routerdb sql BUNDLE --recipe strong_share_threshold --set strong_share=0.2
--       routerdb sql BUNDLE --recipe strong_share_threshold --database my.duckdb \
--           --set prompts_table=traffic_sample --set strong_model=big-llm --set weak_model=small-llm
-- Inputs (variables; each unset one takes the demo default):
--   prompts_table  calibration prompts, a representative sample of your traffic (`prompt` column;
--                  default: the shipped sample's prompts)
--   strong_model, weak_model  two LLMs of the bundle (default: the ones with the highest and the
--                  lowest mean route_score over the calibration prompts)
--   strong_share   the share of prompts to send to the strong LLM, in [0, 1] (default 0.2)
-- Rule: send a prompt to strong_model when
--   route_score(prompt, strong_model) - route_score(prompt, weak_model) > threshold,
-- with threshold the (1 - strong_share) quantile (linear interpolation) of that difference over
-- the calibration prompts; a share of 1 gives -infinity (everything to the strong LLM).
-- Result: for strong shares 0 %, 10 %, ..., 100 % and the one asked for: the threshold and the share
-- of calibration prompts it actually sends to the strong LLM (ties can make them differ). In
-- production:  CASE WHEN route_score(prompt, '<strong>') - route_score(prompt, '<weak>') > <threshold>
--              THEN '<strong>' ELSE '<weak>' END

-- Parameters are checked first: a bad one stops the recipe with one line naming it.
CREATE OR REPLACE TEMP MACRO recipe_number(name, value, fallback, low, high, allowed) AS
    CASE WHEN value IS NULL THEN fallback
         WHEN TRY_CAST(value AS DOUBLE) BETWEEN low AND high THEN TRY_CAST(value AS DOUBLE)  -- NaN, inf: no
         ELSE error(format('{} = {}: allowed {}; fix: --set {}=NUMBER', name, value::VARCHAR, allowed, name))
    END;
CREATE OR REPLACE TEMP MACRO recipe_llm(name, value) AS
    CASE WHEN value IS NULL OR value IN (SELECT model FROM router_models) THEN value
         ELSE error(format('{} = ''{}'' is not an LLM of the bundle; allowed: {}; fix: --set {}=ONE_OF_THEM',
                           name, value, (SELECT string_agg(model, ', ' ORDER BY model) FROM router_models), name))
    END;
SET VARIABLE strong_share = recipe_number('strong_share', getvariable('strong_share'), 0.2, 0, 1,
                                          'a share from 0 to 1 (0.2: 20 % to the strong LLM)');
SET VARIABLE strong_model = recipe_llm('strong_model', getvariable('strong_model'));
SET VARIABLE weak_model = recipe_llm('weak_model', getvariable('weak_model'));
-- The demo default reads the shipped sample only when prompts_table is not set (any directory then works).
SET VARIABLE sample_path = COALESCE(getvariable('sample_path'), 'data/sample/llmrouter_sample.parquet');
SET VARIABLE recipe_checked = CASE WHEN getvariable('prompts_table') IS NULL
    AND NOT EXISTS (SELECT 1 FROM glob(getvariable('sample_path'))) THEN error(format(
    'prompts_table is not set and the demo sample {} is not here; fix: --set prompts_table=YOUR_TABLE (calibration prompts: a table or view with a prompt column)',
    getvariable('sample_path'))) END;
SET VARIABLE prompts_query = CASE WHEN getvariable('prompts_table') IS NULL
    THEN 'SELECT DISTINCT prompt FROM read_parquet(getvariable(''sample_path''))'
    ELSE 'SELECT DISTINCT prompt FROM query_table(getvariable(''prompts_table''))' END;

-- Every calibration prompt against every LLM: each distinct prompt is encoded once.
CREATE OR REPLACE TEMP TABLE calibration_scores AS
SELECT p.prompt, r.model, route_score(p.prompt, r.model) AS score
FROM (SELECT prompt FROM query(getvariable('prompts_query')) WHERE prompt IS NOT NULL) p
CROSS JOIN router_models r;

SET VARIABLE strong_model = COALESCE(getvariable('strong_model'),
    (SELECT model FROM calibration_scores GROUP BY model ORDER BY avg(score) DESC, model LIMIT 1));
SET VARIABLE weak_model = COALESCE(getvariable('weak_model'),
    (SELECT model FROM calibration_scores GROUP BY model ORDER BY avg(score), model LIMIT 1));

CREATE OR REPLACE TEMP TABLE calibration_diff AS
SELECT prompt,
       max(score) FILTER (WHERE model = getvariable('strong_model'))
     - max(score) FILTER (WHERE model = getvariable('weak_model')) AS diff
FROM calibration_scores
GROUP BY prompt;

-- Thresholds at the shares 0 %, 10 %, ..., 100 % (quantile levels 1, 0.9, ..., 0) and the one asked for.
WITH grid AS (
    SELECT unnest(range(11)) / 10 AS strong_share,
           unnest(quantile_cont(diff, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])) AS threshold,
           false AS requested
    FROM calibration_diff
), asked AS (
    SELECT getvariable('strong_share') AS strong_share,
           quantile_cont(diff, 1 - LEAST(getvariable('strong_share'), 1)) AS threshold,
           true AS requested
    FROM calibration_diff
), thresholds AS (
    SELECT strong_share, requested,
           CASE WHEN strong_share >= 1 THEN '-infinity'::DOUBLE ELSE threshold END AS threshold
    FROM (SELECT * FROM grid UNION ALL SELECT * FROM asked)
)
SELECT getvariable('strong_model') AS strong_model, getvariable('weak_model') AS weak_model,
       t.strong_share, t.threshold,
       (SELECT avg((d.diff > t.threshold)::INTEGER) FROM calibration_diff d) AS achieved_share,
       (SELECT count(*) FROM calibration_diff) AS calibration_prompts, t.requested
FROM thresholds t
ORDER BY t.requested DESC, t.strong_share;
