"""Python client for kp's coordinator (the kp.v1 gRPC API).

    from kp_client import Client, job_spec
    with Client("127.0.0.1:50051", token_file="token") as kp:
        job = kp.submit(job_spec("tiny", config_yaml=open("configs/tiny.yaml").read(), steps=100))
        final = kp.watch(job.job_id)          # tqdm progress bar
        print(final.state, final.loss)
"""
from kp_client.client import Client, Job, KpError, job_spec, load_job_file

__all__ = ["Client", "Job", "KpError", "job_spec", "load_job_file"]
