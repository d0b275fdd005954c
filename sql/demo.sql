-- demo.sql: score a few prompts against every LLM of the bundle and mark the best one.
-- Run: routerdb sql build/demo/bundle --recipe demo
CREATE OR REPLACE TEMP TABLE prompts AS
SELECT * FROM (VALUES
    ('Write a Python function that returns the n-th Fibonacci number.'),
    ('Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell altogether?'),
    ('Who wrote the novel "One Hundred Years of Solitude"?'),
    ('Which gas do plants absorb from the atmosphere? A) oxygen B) nitrogen C) carbon dioxide D) helium')
) AS t(prompt);

SELECT left(prompt, 48) AS prompt,
       model,
       round(route_score(prompt, model), 4) AS score,
       CASE WHEN model = route_best(prompt) THEN '<- best' ELSE '' END AS best
FROM prompts CROSS JOIN router_models
ORDER BY prompt, score DESC;
