#include "runtime/agent/agent.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "runtime/coordinator/rpc.h"

namespace kp::agent {

Agent::Agent(AgentOptions options, Supervisor* supervisor)
    : options_(std::move(options)), supervisor_(supervisor) {}

std::unique_ptr<grpc::ClientContext> Agent::Context() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  rpc::AddBearer(ctx.get(), options_.token);
  // Through a coordinator restart, wait for the channel to reconnect rather
  // than fail at once and sit out gRPC's reconnect backoff.
  ctx->set_wait_for_ready(true);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options_.rpc_timeout_ms));
  return ctx;
}

absl::Status Agent::Register() {
  v1::RegisterAgentRequest req;
  auto* info = req.mutable_info();
  info->set_agent_id(options_.agent_id);
  info->set_hostname(options_.hostname);
  info->set_version("kp-agent/1");
  info->set_snapshot_address(options_.snapshot_address);
  for (const auto& d : options_.devices) *info->add_devices() = d;
  v1::RegisterAgentResponse resp;
  KP_RETURN_IF_ERROR(rpc::FromGrpc(stub_->RegisterAgent(Context().get(), req, &resp)));
  if (resp.heartbeat_interval_ms() > 0) heartbeat_interval_ms_ = resp.heartbeat_interval_ms();
  spdlog::info("registered as {} with {} devices at {}; heartbeat every {} ms", options_.agent_id,
               options_.devices.size(), options_.coordinator_address, heartbeat_interval_ms_);
  return absl::OkStatus();
}

absl::Status Agent::Heartbeat() {
  v1::HeartbeatRequest req;
  req.set_agent_id(options_.agent_id);
  for (auto& r : supervisor_->Reports()) *req.add_workers() = std::move(r);
  if (options_.snapshots != nullptr) {
    for (auto& h : options_.snapshots->Holdings()) *req.add_snapshots() = std::move(h);
  }
  v1::HeartbeatResponse resp;
  KP_RETURN_IF_ERROR(rpc::FromGrpc(stub_->Heartbeat(Context().get(), req, &resp)));
  supervisor_->Reconcile({resp.assignments().begin(), resp.assignments().end()});
  // Snapshots of ended jobs go; those of a job between generations stay
  // (that is when they are needed).
  if (options_.snapshots != nullptr && resp.snapshot_jobs_listed()) {
    options_.snapshots->RetainJobs({resp.snapshot_jobs().begin(), resp.snapshot_jobs().end()});
  }
  return absl::OkStatus();
}

absl::Status Agent::Run(const std::atomic<bool>* stop) {
  if (options_.agent_id.empty()) return absl::InvalidArgumentError("--agent_id is empty");
  if (options_.devices.empty()) return absl::InvalidArgumentError("no devices to offer");
  KP_ASSIGN_OR_RETURN(auto channel, rpc::MakeChannel({options_.coordinator_address, options_.tls_ca_file}));
  stub_ = v1::AgentService::NewStub(channel);

  bool registered = false;
  auto last_beat = std::chrono::steady_clock::now() - std::chrono::hours(1);
  std::string last_error;
  while (!stop->load()) {
    const bool exited = supervisor_->Poll();
    const auto now = std::chrono::steady_clock::now();
    if (!registered) {
      absl::Status st = Register();
      registered = st.ok();
      if (!st.ok()) {
        if (st.code() == absl::StatusCode::kUnauthenticated || st.code() == absl::StatusCode::kInvalidArgument) {
          return st;  // retrying cannot fix these
        }
        if (st.ToString() != last_error) spdlog::warn("register: {} (retrying)", st.ToString());
        last_error = st.ToString();
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        continue;
      }
    }
    if (exited || now - last_beat >= std::chrono::milliseconds(heartbeat_interval_ms_)) {
      absl::Status st = Heartbeat();
      last_beat = now;
      if (absl::IsNotFound(st)) {
        registered = false;  // the coordinator forgot us: register again
      } else if (absl::IsUnauthenticated(st)) {
        supervisor_->StopAll();
        return st;
      } else if (!st.ok()) {
        // Workers keep running through a coordinator outage.
        if (st.ToString() != last_error) spdlog::warn("heartbeat: {} (retrying)", st.ToString());
        last_error = st.ToString();
      } else {
        last_error.clear();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.poll_interval_ms));
  }
  spdlog::info("agent stopping: {} live workers", supervisor_->live_workers());
  supervisor_->StopAll();
  // One last heartbeat so the coordinator hears the exits now, not at the timeout.
  if (registered) Heartbeat().IgnoreError();
  return absl::OkStatus();
}

}  // namespace kp::agent
