#include "launcher/client.h"

#include <thread>

#include "runtime/coordinator/rpc.h"

namespace kp::launcher {

absl::StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(const ClientOptions& options) {
  KP_ASSIGN_OR_RETURN(auto channel, rpc::MakeChannel({options.address, options.tls_ca_file}));
  return std::unique_ptr<CoordinatorClient>(new CoordinatorClient(options, v1::Coordinator::NewStub(channel)));
}

std::unique_ptr<grpc::ClientContext> CoordinatorClient::Context(bool streaming) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  rpc::AddBearer(ctx.get(), options_.token);
  ctx->set_wait_for_ready(options_.wait_for_ready);
  if (!streaming) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options_.rpc_timeout_ms));
  }
  return ctx;
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::Submit(const v1::JobSpec& spec) {
  v1::SubmitJobRequest req;
  *req.mutable_spec() = spec;
  v1::SubmitJobResponse resp;
  KP_RETURN_IF_ERROR(rpc::FromGrpc(stub_->SubmitJob(Context().get(), req, &resp)));
  return resp.job();
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::Get(const std::string& job_id) {
  v1::GetJobRequest req;
  req.set_job_id(job_id);
  v1::GetJobResponse resp;
  KP_RETURN_IF_ERROR(rpc::FromGrpc(stub_->GetJob(Context().get(), req, &resp)));
  return resp.job();
}

absl::StatusOr<std::vector<v1::JobStatus>> CoordinatorClient::List() {
  v1::ListJobsResponse resp;
  KP_RETURN_IF_ERROR(rpc::FromGrpc(stub_->ListJobs(Context().get(), {}, &resp)));
  return std::vector<v1::JobStatus>(resp.jobs().begin(), resp.jobs().end());
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::Cancel(const std::string& job_id, const std::string& reason) {
  v1::CancelJobRequest req;
  req.set_job_id(job_id);
  req.set_reason(reason);
  v1::CancelJobResponse resp;
  KP_RETURN_IF_ERROR(rpc::FromGrpc(stub_->CancelJob(Context().get(), req, &resp)));
  return resp.job();
}

absl::StatusOr<std::vector<v1::AgentStatus>> CoordinatorClient::ListAgents() {
  v1::ListAgentsResponse resp;
  KP_RETURN_IF_ERROR(rpc::FromGrpc(stub_->ListAgents(Context().get(), {}, &resp)));
  return std::vector<v1::AgentStatus>(resp.agents().begin(), resp.agents().end());
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::Watch(const std::string& job_id,
                                                       const std::function<void(const v1::JobEvent&)>& on_event) {
  int64_t after = 0;
  int failures = 0;
  while (true) {
    auto ctx = Context(/*streaming=*/true);
    v1::WatchJobRequest req;
    req.set_job_id(job_id);
    req.set_after_sequence(after);
    auto reader = stub_->WatchJob(ctx.get(), req);
    v1::JobEvent e;
    while (reader->Read(&e)) {
      after = std::max(after, e.sequence());
      failures = 0;
      on_event(e);
    }
    grpc::Status st = reader->Finish();
    if (st.ok()) return Get(job_id);
    const auto code = st.error_code();
    if (code != grpc::StatusCode::UNAVAILABLE && code != grpc::StatusCode::CANCELLED) return rpc::FromGrpc(st);
    if (++failures > 60) return rpc::FromGrpc(st);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace kp::launcher
