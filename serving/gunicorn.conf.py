# gunicorn settings for the TIML server: gunicorn -c serving/gunicorn.conf.py serving.wsgi:app
# The settings are python -m timl.serve's own (timl.serve.gunicorn_settings, the one place they are written):
# gthread workers (requests in threads, batched model calls; timl.serving.connections.ThreadWorker: a closing
# connection waited for in its request's thread, not in the loop that accepts connections; request bodies read in
# whole pieces), 2 workers, a stuck worker restarted after 120 s, and one model process making every worker's model
# calls (MODEL_PROCESS in timl_server_config.json).
# A -b/--bind beyond loopback needs API_TOKENS_FILE in timl_server_config.json (or TIML_INSECURE=1): refused here at
# start; without -c the app itself answers every request 503 (timl.serving.exposure, the one rule).
from timl.serve import gunicorn_settings
from timl.serving.exposure import check_exposure, insecure_from_environment

globals().update(gunicorn_settings("127.0.0.1:8080"))


model_process = None


def on_starting(server):
    from timl.serving.config import load_config
    from timl.serving.model import warm_start_from_environment
    from timl.serving.model_process import ModelProcess

    global model_process
    config = load_config()
    for address in server.cfg.bind:
        check_exposure(address, config, insecure=insecure_from_environment())
    model_process = ModelProcess.for_server(config, server.cfg.workers, warm_start_from_environment() != "none")


def post_worker_init(worker):
    if model_process is not None:
        worker.wsgi.extensions["timl_model"].use_model_process(model_process.client())


def on_exit(server):
    if model_process is not None:
        model_process.stop()
