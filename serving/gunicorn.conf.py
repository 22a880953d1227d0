# gunicorn settings for the TIML server: gunicorn -c serving/gunicorn.conf.py "timl.serving:create_app()"
# (python -m timl.serve applies the same defaults.)
bind = "127.0.0.1:8080"      # loopback unless told otherwise
workers = 2                  # each worker loads the model once
worker_class = "sync"
timeout = 120                # a stuck worker (e.g. a huge RISE request) is restarted
graceful_timeout = 30
backlog = 64                 # connections waiting beyond this are refused, not queued forever
max_requests = 100000        # recycle workers now and then (memory is flat: see README)
max_requests_jitter = 1000
limit_request_line = 8190
accesslog = "-"
