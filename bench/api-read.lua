-- wrk script: an authenticated read of one job. Env: MOMENTUM_API_KEY.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("MOMENTUM_API_KEY")
