"""A small typed API over the generated kp.v1 stubs."""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Iterator, List, Mapping, Optional, Sequence

import grpc

from kp.v1 import agent_pb2, coordinator_pb2, coordinator_pb2_grpc, job_pb2

_MAX_MESSAGE_BYTES = 4 << 20  # the coordinator's bound (runtime/coordinator/rpc.h)
_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


class KpError(Exception):
    """An RPC failed; `code` is the grpc.StatusCode (e.g. INVALID_ARGUMENT)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class Job:
    job_id: str
    name: str
    state: str  # SUBMITTED, QUEUED, PLACED, RUNNING, COMPLETED, FAILED, CANCELLED
    generation: int
    step: int
    total_steps: int
    loss: float
    tokens_per_s: float
    message: str
    exit_code: int
    dp: int
    cp: int

    @property
    def done(self) -> bool:
        return self.state in _TERMINAL

    @staticmethod
    def from_proto(s: job_pb2.JobStatus) -> "Job":
        return Job(
            job_id=s.job_id, name=s.spec.name, state=_state_name(s.state), generation=s.generation,
            step=s.progress.step, total_steps=s.progress.total_steps, loss=s.progress.loss,
            tokens_per_s=s.progress.tokens_per_s, message=s.message, exit_code=s.exit_code,
            dp=s.spec.dp, cp=s.spec.cp)


def _state_name(state: int) -> str:
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


def _enum(enum, prefix: str, value) -> int:
    if isinstance(value, int):
        return value
    try:
        return enum.Value(prefix + str(value).upper())
    except ValueError:
        raise ValueError(f"unknown {prefix.lower().rstrip('_')}: {value!r}") from None


def job_spec(name: str, *, config_yaml: Optional[str] = None, config_path: Optional[str] = None,
             steps: int, dp: int = 1, cp: int = 1, cp_mode: str | int = "unspecified",
             precision: str | int = "unspecified", data_path: str = "", checkpoint_dir: str = "",
             checkpoint_every_steps: int = 0, keep_last: int = 0, resume: bool = False, priority: int = 0,
             elastic: bool = False, max_restarts: int = 0, cpu_fallback: bool = False,
             labels: Optional[Mapping[str, str]] = None, min_dp: int = 0) -> job_pb2.JobSpec:
    """Builds a JobSpec; the coordinator validates it (errors name the field).

    min_dp: for an elastic job, the smallest dp a restart may shrink to
    (0 = unset: never shrink)."""
    if (config_yaml is None) == (config_path is None):
        raise ValueError("exactly one of config_yaml or config_path is required")
    spec = job_pb2.JobSpec(
        name=name, data_path=data_path, dp=dp, cp=cp, steps=steps, priority=priority, elastic=elastic,
        max_restarts=max_restarts, min_dp=min_dp, cpu_fallback=cpu_fallback,
        cp_mode=_enum(job_pb2.CpMode, "CP_MODE_", cp_mode),
        precision=_enum(job_pb2.Precision, "PRECISION_", precision),
        checkpoint=job_pb2.CheckpointPolicy(dir=checkpoint_dir, every_steps=checkpoint_every_steps,
                                            keep_last=keep_last, resume=resume),
        labels=dict(labels or {}))
    if config_yaml is not None:
        spec.config_yaml = config_yaml
    else:
        spec.config_path = config_path
    return spec


def load_job_file(path: str) -> job_pb2.JobSpec:
    """Reads a kprun job file (see launcher/job_file.h); needs pyyaml."""
    import yaml  # optional dependency: pip install kp-client[yaml]

    with open(path) as f:
        d = yaml.safe_load(f)
    base = os.path.dirname(os.path.abspath(path))
    config_yaml = None
    if "config" in d:
        cfg = d["config"] if os.path.exists(d["config"]) else os.path.join(base, d["config"])
        with open(cfg) as f:
            config_yaml = f.read()
    elif "model" in d:
        config_yaml = yaml.safe_dump(d["model"])
    ckpt = d.get("checkpoint", {}) or {}
    return job_spec(
        d["name"], config_yaml=config_yaml, config_path=d.get("config_path"), steps=int(d["steps"]),
        dp=int(d.get("dp", 1)), cp=int(d.get("cp", 1)), cp_mode=d.get("cp_mode", "unspecified"),
        precision=d.get("precision", "unspecified"), data_path=d.get("data", ""),
        checkpoint_dir=ckpt.get("dir", ""), checkpoint_every_steps=int(ckpt.get("every_steps", 0)),
        keep_last=int(ckpt.get("keep_last", 0)), resume=bool(ckpt.get("resume", False)),
        priority=int(d.get("priority", 0)), elastic=bool(d.get("elastic", False)),
        max_restarts=int(d.get("max_restarts", 0)), cpu_fallback=bool(d.get("cpu_fallback", False)),
        labels=d.get("labels"), min_dp=int(d.get("min_dp", 0)))


class Client:
    """A connection to kp-coordinator. Every call sends the bearer token."""

    def __init__(self, address: str, *, token: Optional[str] = None, token_file: Optional[str] = None,
                 tls_ca: Optional[str] = None, timeout: float = 10.0):
        if token is None:
            if token_file is None:
                raise ValueError("token or token_file is required")
            with open(token_file) as f:
                token = f.read().strip()
        if not token:
            raise ValueError("empty token")
        options = [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]
        if tls_ca:
            with open(tls_ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as e:
            raise KpError(e.code(), e.details()) from None

    def submit(self, spec: job_pb2.JobSpec) -> Job:
        return Job.from_proto(self._call(self._stub.SubmitJob, coordinator_pb2.SubmitJobRequest(spec=spec)).job)

    def get(self, job_id: str) -> Job:
        return Job.from_proto(self._call(self._stub.GetJob, coordinator_pb2.GetJobRequest(job_id=job_id)).job)

    def list(self, states: Sequence[str] = ()) -> List[Job]:
        req = coordinator_pb2.ListJobsRequest(states=[job_pb2.JobState.Value("JOB_STATE_" + s) for s in states])
        return [Job.from_proto(j) for j in self._call(self._stub.ListJobs, req).jobs]

    def cancel(self, job_id: str, reason: str = "") -> Job:
        req = coordinator_pb2.CancelJobRequest(job_id=job_id, reason=reason)
        return Job.from_proto(self._call(self._stub.CancelJob, req).job)

    def agents(self) -> List[agent_pb2.AgentStatus]:
        return list(self._call(self._stub.ListAgents, coordinator_pb2.ListAgentsRequest()).agents)

    def events(self, job_id: str, after_sequence: int = 0) -> Iterator[job_pb2.JobEvent]:
        """The job's events until it ends (the stream then closes)."""
        req = coordinator_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
        try:
            yield from self._stub.WatchJob(req, metadata=self._metadata)
        except grpc.RpcError as e:
            raise KpError(e.code(), e.details()) from None

    def watch(self, job_id: str, progress: bool = True, file=None) -> Job:
        """Follows the job to its end with a tqdm bar (step, loss, tokens/s); returns the final Job."""
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=None, unit="step", desc=job_id, file=file or sys.stderr, dynamic_ncols=True)
        try:
            for e in self.events(job_id):
                if bar is None:
                    continue
                if e.progress.total_steps and bar.total != e.progress.total_steps:
                    bar.total = e.progress.total_steps
                if e.progress.step > bar.n:
                    bar.update(e.progress.step - bar.n)
                bar.set_postfix(state=_state_name(e.state), loss=f"{e.progress.loss:.4f}",
                                tok_s=f"{e.progress.tokens_per_s:.0f}", refresh=False)
                bar.refresh()
        finally:
            if bar is not None:
                bar.close()
        return self.get(job_id)
