#include "runtime/coordinator/service.h"

#include <algorithm>

#include "runtime/coordinator/rpc.h"

namespace kp::coordinator {

#define KP_AUTH(ctx)                                          \
  do {                                                        \
    grpc::Status kp_auth_ = rpc::CheckBearer(*(ctx), token_); \
    if (!kp_auth_.ok()) return kp_auth_;                      \
  } while (0)

grpc::Status CoordinatorServiceImpl::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                               v1::SubmitJobResponse* resp) {
  KP_AUTH(ctx);
  auto job = c_->SubmitJob(req->spec());
  if (!job.ok()) return rpc::ToGrpc(job.status());
  *resp->mutable_job() = *job;
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req,
                                            v1::GetJobResponse* resp) {
  KP_AUTH(ctx);
  auto job = c_->GetJob(req->job_id());
  if (!job.ok()) return rpc::ToGrpc(job.status());
  *resp->mutable_job() = *job;
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                              v1::ListJobsResponse* resp) {
  KP_AUTH(ctx);
  std::vector<v1::JobState> states;
  for (int s : req->states()) states.push_back(static_cast<v1::JobState>(s));
  for (auto& j : c_->ListJobs(states)) *resp->add_jobs() = std::move(j);
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                                               v1::CancelJobResponse* resp) {
  KP_AUTH(ctx);
  auto job = c_->CancelJob(req->job_id(), req->reason().substr(0, 256));
  if (!job.ok()) return rpc::ToGrpc(job.status());
  *resp->mutable_job() = *job;
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                              grpc::ServerWriter<v1::JobEvent>* writer) {
  KP_AUTH(ctx);
  int64_t after = req->after_sequence();
  while (!ctx->IsCancelled()) {
    auto batch = c_->WaitForEvents(req->job_id(), after, std::chrono::milliseconds(500));
    if (!batch.ok()) return rpc::ToGrpc(batch.status());
    for (const auto& e : batch->events) {
      if (!writer->Write(e)) return grpc::Status(grpc::StatusCode::CANCELLED, "watcher went away");
      after = std::max(after, e.sequence());
    }
    if (batch->finished) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "watcher cancelled");
}

grpc::Status CoordinatorServiceImpl::ListAgents(grpc::ServerContext* ctx, const v1::ListAgentsRequest* req,
                                                v1::ListAgentsResponse* resp) {
  KP_AUTH(ctx);
  for (auto& a : c_->ListAgents()) *resp->add_agents() = std::move(a);
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::RegisterAgent(grpc::ServerContext* ctx, const v1::RegisterAgentRequest* req,
                                             v1::RegisterAgentResponse* resp) {
  KP_AUTH(ctx);
  auto r = c_->RegisterAgent(req->info());
  if (!r.ok()) return rpc::ToGrpc(r.status());
  *resp = *r;
  return grpc::Status::OK;
}

grpc::Status AgentServiceImpl::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                         v1::HeartbeatResponse* resp) {
  KP_AUTH(ctx);
  auto r = c_->Heartbeat(*req);
  if (!r.ok()) return rpc::ToGrpc(r.status());
  *resp = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::Set(grpc::ServerContext* ctx, const v1::KvSetRequest* req,
                                        v1::KvSetResponse* resp) {
  KP_AUTH(ctx);
  return rpc::ToGrpc(c_->kv().Set(req->key(), req->value()));
}

grpc::Status RendezvousServiceImpl::Get(grpc::ServerContext* ctx, const v1::KvGetRequest* req,
                                        v1::KvGetResponse* resp) {
  KP_AUTH(ctx);
  auto v = c_->kv().Get(req->key());
  if (absl::IsNotFound(v.status())) {
    resp->set_found(false);
    return grpc::Status::OK;
  }
  if (!v.ok()) return rpc::ToGrpc(v.status());
  resp->set_found(true);
  resp->set_value(*v);
  return grpc::Status::OK;
}

grpc::Status RendezvousServiceImpl::Wait(grpc::ServerContext* ctx, const v1::KvWaitRequest* req,
                                         v1::KvWaitResponse* resp) {
  KP_AUTH(ctx);
  if (req->keys_size() == 0 || req->keys_size() > 4096) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "keys: 1 to 4096 keys");
  }
  const int64_t timeout_ms = req->timeout_ms() > 0 ? std::min<int64_t>(req->timeout_ms(), 600'000) : 30'000;
  std::vector<std::string> keys(req->keys().begin(), req->keys().end());
  auto values = c_->kv().Wait(keys, std::chrono::milliseconds(timeout_ms));
  if (!values.ok()) return rpc::ToGrpc(values.status());
  for (auto& v : *values) resp->add_values(std::move(v));
  return grpc::Status::OK;
}

}  // namespace kp::coordinator
