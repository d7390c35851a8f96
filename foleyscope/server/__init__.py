"""`foleyscope serve`: Foley jobs over HTTP. The server only accepts, validates, records and reports jobs;
workers (each owning one loaded pipeline) run them, as processes of the server (`embedded`) or anywhere
that reaches Redis (`redis://`). See docs/server.md.

    config.py          what the server and its workers are told (ServerConfig, EngineSpec)
    app.py, api.py     the FastAPI app factory and its routes; errors.py the {error, detail} answers
    upload.py          the multipart body parsed as it streams in; submit.py checks it into a job
    store.py           job records in SQLite (WAL): a restart loses no job
    hub.py, sse.py     worker events -> records, live progress, server-sent events; metrics.py
    queues.py          the queue interface; embedded.py and redis_queue.py its two back ends
    worker.py          one worker: the model loaded once, jobs through run_job with a CancelToken;
                       stdio_worker.py (embedded) and redis_worker.py (Dramatiq) drive it
    static/            the web page (no build step, no CDN)
"""
