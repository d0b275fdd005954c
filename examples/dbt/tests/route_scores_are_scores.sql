-- Every routed row has one score per LLM of the bundle, each in [-1, 1], and its best LLM scores highest.
select r.id
from {{ ref('routed_prompts') }} as r
where cardinality(r.route_scores) <> (select count(*) from {{ source('routerdb', 'router_models') }})
   or list_min(map_values(r.route_scores)) < -1
   or list_max(map_values(r.route_scores)) > 1
   or r.route_scores[r.route_best] < list_max(map_values(r.route_scores))
