-- Issue 13. The API's JSON of a job (api/serialize.ts jobJson), built by Postgres as text, as a
-- function of the row: GET /v1/jobs/{id} and a submission's answer then send it as it is (no parse
-- of the spec, no serialisation again), and their statements are a line long. Before, the
-- expression sat in each statement's text, ~1 KB that postgres.js concatenated and hashed on every
-- request to find its prepared statement (~2 µs of the API's event loop per read, BENCHMARKS.md).
-- LANGUAGE sql, STABLE (to_char) and a single expression: the planner inlines it, so a call reads
-- the row's columns as the expression written out did. test/integration/api/jobJson.test.ts holds
-- it equal to jobJson; a change of the job's JSON is a new migration that replaces this function.
-- Timestamps: ISO 8601 UTC to the millisecond, as Date.toISOString() writes them (both truncate).
CREATE FUNCTION job_api_json(j jobs) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT json_build_object(
    'id', j.id, 'type', j.type, 'state', j.state, 'spec', j.spec,
    'dataset', CASE WHEN jsonb_typeof(j.spec->'dataset') = 'string' THEN j.spec->>'dataset' END,
    'datasetVersionId', j.dataset_version_id,
    'labels', coalesce(nullif(j.spec->'labels', 'null'::jsonb), '{}'::jsonb),
    'attempt', j.attempt, 'cancelRequested', j.cancel_requested, 'parentJobId', j.parent_job_id,
    'progress', j.progress, 'runtime', j.runtime, 'result', j.result, 'error', j.error,
    'createdAt', to_char(j.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'updatedAt', to_char(j.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'startedAt', to_char(j.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    'finishedAt', to_char(j.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
  )::text
$$;
