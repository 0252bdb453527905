// The coordinator behind real gRPC on loopback: auth, status codes, health,
// the Prometheus listener, watch streams and the rendezvous service.
#include "runtime/coordinator/server.h"

#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "kp/v1/coordinator.grpc.pb.h"
#include "runtime/coordinator/rpc.h"

namespace kp::coordinator {
namespace {

constexpr char kToken[] = "s3cret-token";

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = NewMemoryStateStore();
    coordinator_ = *Coordinator::Create(store_.get(), &clock_, {});
    ServerOptions options;
    options.token = kToken;
    options.metrics_port = 0;
    auto s = CoordinatorServer::Start(coordinator_.get(), options);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    channel_ = *rpc::MakeChannel({server_->address(), ""});
    jobs_ = v1::Coordinator::NewStub(channel_);
    agents_ = v1::AgentService::NewStub(channel_);
    kv_ = v1::Rendezvous::NewStub(channel_);
  }
  void TearDown() override { server_->Shutdown(); }

  std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token = kToken) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) rpc::AddBearer(ctx.get(), token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  }

  v1::JobSpec Spec() {
    v1::JobSpec s;
    s.set_name("srv");
    s.set_config_yaml("a: 1\n");
    s.set_dp(1);
    s.set_cp(1);
    s.set_steps(3);
    return s;
  }

  RealClock clock_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<CoordinatorServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> jobs_;
  std::unique_ptr<v1::AgentService::Stub> agents_;
  std::unique_ptr<v1::Rendezvous::Stub> kv_;
};

TEST_F(ServerTest, EveryServiceRejectsMissingOrWrongTokens) {
  for (const std::string token : {"", "wrong", "s3cret-token-but-longer", "s3cret-tokeN"}) {
    v1::ListJobsResponse lj;
    EXPECT_EQ(jobs_->ListJobs(Ctx(token).get(), {}, &lj).error_code(), grpc::StatusCode::UNAUTHENTICATED) << token;
    v1::SubmitJobRequest sj;
    *sj.mutable_spec() = Spec();
    v1::SubmitJobResponse sr;
    EXPECT_EQ(jobs_->SubmitJob(Ctx(token).get(), sj, &sr).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::RegisterAgentResponse ra;
    EXPECT_EQ(agents_->RegisterAgent(Ctx(token).get(), {}, &ra).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::HeartbeatResponse hb;
    EXPECT_EQ(agents_->Heartbeat(Ctx(token).get(), {}, &hb).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    v1::KvSetResponse ks;
    EXPECT_EQ(kv_->Set(Ctx(token).get(), {}, &ks).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    auto ctx = Ctx(token);
    v1::WatchJobRequest wr;
    auto reader = jobs_->WatchJob(ctx.get(), wr);
    v1::JobEvent e;
    EXPECT_FALSE(reader->Read(&e));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_TRUE(coordinator_->ListJobs({}).empty());
}

TEST_F(ServerTest, MalformedCallsGetPreciseCodes) {
  v1::SubmitJobRequest req;
  *req.mutable_spec() = Spec();
  req.mutable_spec()->set_cp(0);
  v1::SubmitJobResponse resp;
  grpc::Status st = jobs_->SubmitJob(Ctx().get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(st.error_message().rfind("spec.cp:", 0), 0u) << st.error_message();

  req.mutable_spec()->set_cp(1);
  req.mutable_spec()->set_data_path("../../etc");
  st = jobs_->SubmitJob(Ctx().get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);  // no --data_root configured
  EXPECT_NE(st.error_message().find("data_path"), std::string::npos);

  v1::GetJobRequest g;
  g.set_job_id("nope");
  v1::GetJobResponse gr;
  EXPECT_EQ(jobs_->GetJob(Ctx().get(), g, &gr).error_code(), grpc::StatusCode::NOT_FOUND);

  v1::HeartbeatRequest hb;
  hb.set_agent_id("unregistered");
  v1::HeartbeatResponse hr;
  EXPECT_EQ(agents_->Heartbeat(Ctx().get(), hb, &hr).error_code(), grpc::StatusCode::NOT_FOUND);

  // Bigger than the bounded message size.
  req.mutable_spec()->clear_data_path();
  req.mutable_spec()->set_config_yaml(std::string(rpc::kMaxMessageBytes + 16, 'x'));
  EXPECT_EQ(jobs_->SubmitJob(Ctx().get(), req, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(ServerTest, HealthServiceIsServing) {
  grpc::ClientContext ctx;
  grpc::ByteBuffer request, response;  // HealthCheckRequest{} serializes to nothing
  grpc::Slice empty;
  request = grpc::ByteBuffer(&empty, 1);
  grpc::Status st = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel_.get(), grpc::internal::RpcMethod("/grpc.health.v1.Health/Check", grpc::internal::RpcMethod::NORMAL_RPC),
      &ctx, request, &response);
  ASSERT_TRUE(st.ok()) << st.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
}

std::string HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n";
  (void)!::write(fd, req.data(), req.size());
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

// Each non-comment line is `name{labels} value` with a numeric value, and
// every metric has a TYPE line before it: the text format's grammar, reduced.
void ExpectPrometheusText(const std::string& body) {
  std::set<std::string> typed;
  size_t start = 0;
  int samples = 0;
  while (start < body.size()) {
    size_t end = body.find('\n', start);
    ASSERT_NE(end, std::string::npos) << "last line not terminated";
    std::string line = body.substr(start, end - start);
    start = end + 1;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      typed.insert(rest.substr(0, rest.find(' ')));
      EXPECT_TRUE(rest.substr(rest.find(' ') + 1) == "gauge" || rest.substr(rest.find(' ') + 1) == "counter") << line;
      continue;
    }
    if (line.rfind("# HELP ", 0) == 0) continue;
    size_t name_end = line.find_first_of("{ ");
    ASSERT_NE(name_end, std::string::npos) << line;
    std::string name = line.substr(0, name_end);
    EXPECT_TRUE(typed.count(name)) << "no TYPE before " << line;
    size_t value_at = line.rfind(' ');
    char* parse_end = nullptr;
    std::string value = line.substr(value_at + 1);
    std::strtod(value.c_str(), &parse_end);
    EXPECT_EQ(*parse_end, '\0') << "bad value in " << line;
    if (line[name_end] == '{') {
      EXPECT_EQ(line[value_at - 1], '}') << line;
    }
    ++samples;
  }
  EXPECT_GT(samples, 5);
}

TEST_F(ServerTest, PrometheusEndpointServesParseableText) {
  v1::SubmitJobRequest req;
  *req.mutable_spec() = Spec();
  v1::SubmitJobResponse resp;
  ASSERT_TRUE(jobs_->SubmitJob(Ctx().get(), req, &resp).ok());
  std::string reply = HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_EQ(reply.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << reply;
  std::string body = reply.substr(reply.find("\r\n\r\n") + 4);
  ExpectPrometheusText(body);
  EXPECT_NE(body.find("kp_jobs{state=\"queued\"} 1"), std::string::npos) << body;
  EXPECT_EQ(HttpGet(server_->metrics_port(), "/secrets").rfind("HTTP/1.0 404", 0), 0u);
}

TEST_F(ServerTest, WatchStreamsToCompletionAndKvRelaysIds) {
  v1::RegisterAgentRequest reg;
  reg.mutable_info()->set_agent_id("n1");
  auto* d = reg.mutable_info()->add_devices();
  d->set_index(0);
  d->set_kind(v1::DEVICE_KIND_CPU);
  v1::RegisterAgentResponse rr;
  ASSERT_TRUE(agents_->RegisterAgent(Ctx().get(), reg, &rr).ok());

  v1::SubmitJobRequest req;
  *req.mutable_spec() = Spec();
  v1::SubmitJobResponse resp;
  ASSERT_TRUE(jobs_->SubmitJob(Ctx().get(), req, &resp).ok());
  const std::string id = resp.job().job_id();

  std::vector<v1::JobEvent> seen;
  std::thread watcher([&] {
    auto ctx = Ctx();
    v1::WatchJobRequest w;
    w.set_job_id(id);
    auto reader = jobs_->WatchJob(ctx.get(), w);
    v1::JobEvent e;
    while (reader->Read(&e)) seen.push_back(e);
    EXPECT_TRUE(reader->Finish().ok());
  });

  v1::HeartbeatRequest hb;
  hb.set_agent_id("n1");
  v1::HeartbeatResponse hr;
  ASSERT_TRUE(agents_->Heartbeat(Ctx().get(), hb, &hr).ok());
  ASSERT_EQ(hr.assignments_size(), 1);
  const auto& a = hr.assignments(0);
  EXPECT_EQ(a.device_kind(), v1::DEVICE_KIND_CPU);
  EXPECT_EQ(a.coordinator_address(), server_->address());

  // Rank 0 publishes an id; a waiter gets it.
  v1::KvSetRequest set;
  set.set_key(a.rendezvous_prefix() + "nccl_id");
  set.set_value(std::string(128, '\x07'));
  v1::KvSetResponse sr;
  ASSERT_TRUE(kv_->Set(Ctx().get(), set, &sr).ok());
  v1::KvWaitRequest wait;
  wait.add_keys(set.key());
  wait.set_timeout_ms(1000);
  v1::KvWaitResponse wresp;
  ASSERT_TRUE(kv_->Wait(Ctx().get(), wait, &wresp).ok());
  EXPECT_EQ(wresp.values(0), set.value());

  auto* r = hb.add_workers();
  r->set_job_id(id);
  r->set_generation(a.generation());
  r->set_state(v1::WORKER_STATE_RUNNING);
  r->set_step(2);
  r->set_loss(1.5);
  ASSERT_TRUE(agents_->Heartbeat(Ctx().get(), hb, &hr).ok());
  r->set_state(v1::WORKER_STATE_EXITED);
  r->set_step(3);
  ASSERT_TRUE(agents_->Heartbeat(Ctx().get(), hb, &hr).ok());
  watcher.join();
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().state(), v1::JOB_STATE_COMPLETED);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GT(seen[i].sequence(), seen[i - 1].sequence());
  // The generation's rendezvous keys are gone with it.
  v1::KvGetRequest get;
  get.set_key(set.key());
  v1::KvGetResponse gr;
  ASSERT_TRUE(kv_->Get(Ctx().get(), get, &gr).ok());
  EXPECT_FALSE(gr.found());
}

}  // namespace
}  // namespace kp::coordinator

namespace kp::coordinator {
namespace {

TEST(ServerTls, ServesTlsWhenGivenACertificate) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/tls-" + std::to_string(::getpid());
  const std::string cmd = "mkdir -p " + dir + " && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost"
                          " -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " + dir + "/key.pem -out " + dir +
                          "/cert.pem >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) GTEST_SKIP() << "openssl cannot make a test certificate";
  RealClock clock;
  auto store = NewMemoryStateStore();
  auto coordinator = *Coordinator::Create(store.get(), &clock, {});
  ServerOptions options;
  options.token = kToken;
  options.tls_cert_file = dir + "/cert.pem";
  options.tls_key_file = dir + "/key.pem";
  auto server = CoordinatorServer::Start(coordinator.get(), options);
  ASSERT_TRUE(server.ok()) << server.status();

  auto call = [&](const std::string& ca) {
    auto channel = *rpc::MakeChannel({(*server)->address(), ca});
    auto stub = v1::Coordinator::NewStub(channel);
    grpc::ClientContext ctx;
    rpc::AddBearer(&ctx, kToken);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ListJobsResponse resp;
    return stub->ListJobs(&ctx, {}, &resp);
  };
  EXPECT_TRUE(call(dir + "/cert.pem").ok()) << call(dir + "/cert.pem").error_message();
  EXPECT_EQ(call("").error_code(), grpc::StatusCode::UNAVAILABLE);  // plaintext client
  (*server)->Shutdown();

  options.tls_key_file.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(CoordinatorServer::Start(coordinator.get(), options).status()));
}

}  // namespace
}  // namespace kp::coordinator
