-- route_functions.sql: every routing function on a few prompts: route_best (the best LLM),
-- route_best_among (the best of a candidate list), route_score (one LLM's score) and route_scores
-- (every LLM's score as a MAP).
--
-- Run:  routerdb sql BUNDLE --recipe route_functions [--set candidates=llm-a,llm-b]
-- Inputs (variables):
--   candidates  comma-separated LLM names for route_best_among (default: the bundle's first two
--               LLMs by name)
-- Result: one row per prompt: the best LLM and its score, the best candidate, and the score map.

SET VARIABLE candidates = COALESCE(string_split(getvariable('candidates'), ','),
                                   (SELECT list(model ORDER BY model)[1:2] FROM router_models));

CREATE OR REPLACE TEMP TABLE example_prompts AS
SELECT * FROM (VALUES
    ('Write a SQL query that returns the ten most frequent words in a table of documents.'),
    ('If a train leaves at 3 pm at 80 km/h, when has it covered 200 km?'),
    ('What is the capital of Australia?')
) AS t(prompt);

SELECT prompt,
       route_best(prompt) AS best,
       route_score(prompt, route_best(prompt)) AS best_score,
       route_best_among(prompt, getvariable('candidates')) AS best_candidate,
       route_scores(prompt) AS scores
FROM example_prompts
ORDER BY prompt;
