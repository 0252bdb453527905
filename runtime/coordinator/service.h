// The gRPC services of kp-coordinator: thin adapters from kp.v1 RPCs to the
// Coordinator. Synchronous API on purpose: every handler is a short call under
// the coordinator's mutex, so the sync server's thread pool is simpler to read
// and debug than callback reactors; only WatchJob holds a thread, for as long
// as a client watches (bounded by the server's max threads).
// Every method checks the bearer token first.
#ifndef KP_RUNTIME_COORDINATOR_SERVICE_H_
#define KP_RUNTIME_COORDINATOR_SERVICE_H_

#include <string>

#include "kp/v1/coordinator.grpc.pb.h"
#include "runtime/coordinator/coordinator.h"

namespace kp::coordinator {

class CoordinatorServiceImpl final : public v1::Coordinator::Service {
 public:
  CoordinatorServiceImpl(Coordinator* c, std::string token) : c_(c), token_(std::move(token)) {}
  grpc::Status SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                         v1::SubmitJobResponse* resp) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::GetJobResponse* resp) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                        v1::ListJobsResponse* resp) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req,
                         v1::CancelJobResponse* resp) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status ListAgents(grpc::ServerContext* ctx, const v1::ListAgentsRequest* req,
                          v1::ListAgentsResponse* resp) override;

 private:
  Coordinator* c_;
  std::string token_;
};

class AgentServiceImpl final : public v1::AgentService::Service {
 public:
  AgentServiceImpl(Coordinator* c, std::string token) : c_(c), token_(std::move(token)) {}
  grpc::Status RegisterAgent(grpc::ServerContext* ctx, const v1::RegisterAgentRequest* req,
                             v1::RegisterAgentResponse* resp) override;
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                         v1::HeartbeatResponse* resp) override;

 private:
  Coordinator* c_;
  std::string token_;
};

class RendezvousServiceImpl final : public v1::Rendezvous::Service {
 public:
  RendezvousServiceImpl(Coordinator* c, std::string token) : c_(c), token_(std::move(token)) {}
  grpc::Status Set(grpc::ServerContext* ctx, const v1::KvSetRequest* req, v1::KvSetResponse* resp) override;
  grpc::Status Get(grpc::ServerContext* ctx, const v1::KvGetRequest* req, v1::KvGetResponse* resp) override;
  grpc::Status Wait(grpc::ServerContext* ctx, const v1::KvWaitRequest* req, v1::KvWaitResponse* resp) override;

 private:
  Coordinator* c_;
  std::string token_;
};

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_SERVICE_H_
