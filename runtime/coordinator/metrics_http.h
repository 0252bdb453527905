// A minimal HTTP/1.0 listener that answers GET /metrics with Prometheus text
// (Debian has no prometheus-cpp; the format is a few lines). One thread,
// one request per connection, 1 s read timeout: it serves a scraper, not the
// public. Bind it to 127.0.0.1 unless the network is trusted.
#ifndef KP_RUNTIME_COORDINATOR_METRICS_HTTP_H_
#define KP_RUNTIME_COORDINATOR_METRICS_HTTP_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "runtime/common/status.h"

namespace kp::coordinator {

class MetricsHttpServer {
 public:
  // port 0 picks a free port (see port()).
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host, int port,
                                                                  std::function<std::string()> render);
  ~MetricsHttpServer();
  int port() const { return port_; }
  void Stop();

 private:
  MetricsHttpServer(int listen_fd, int wake_read, int wake_write, int port, std::function<std::string()> render);
  void Serve();
  void HandleConnection(int fd);

  int listen_fd_;
  int wake_read_;
  int wake_write_;
  int port_;
  std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace kp::coordinator

#endif  // KP_RUNTIME_COORDINATOR_METRICS_HTTP_H_
