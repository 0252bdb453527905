#include "runtime/snapshot/worker_snapshots.h"

#include <ATen/ATen.h>

#include <chrono>
#include <future>

#include "absl/strings/str_cat.h"
#include "runtime/comm/reduce_values.h"
#include "runtime/engine/log.h"

namespace kp::snapshot {

SnapshotSender::SnapshotSender(const WorkerSnapshotOptions& options, int rank, int world_size, Capture capture)
    : options_(options), rank_(rank), world_size_(world_size), capture_(std::move(capture)) {
  ClientOptions co;
  co.token = options_.token;
  co.timeout_ms = options_.timeout_ms;
  for (const auto& t : options_.targets) clients_.push_back(std::make_unique<SnapshotClient>(t, co));
  thread_ = std::thread([this] { Loop(); });
}

SnapshotSender::~SnapshotSender() {
  if (options_.wait_when_busy) Drain();  // tests keep the last snapshot too
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    pending_.reset();
  }
  cv_.notify_all();
  thread_.join();
}

void SnapshotSender::Offer(int64_t next_step) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    ++stats_.offered;
    if (options_.wait_when_busy) cv_.wait(lock, [&] { return stop_ || (!busy_ && !pending_.has_value()); });
    if (busy_ || pending_) {
      // Rare when transfers keep up with the cadence; say so the first times.
      if (++stats_.dropped <= 3) {
        engine::LogInfo("snapshot of step " + std::to_string(next_step) + " dropped: the previous one is still being sent");
      }
      return;
    }
  }
  absl::Status st = capture_(next_step);
  if (!st.ok()) engine::LogWarning("snapshot of step " + std::to_string(next_step) + " not taken: " + st.ToString());
}

void SnapshotSender::Give(const ckpt::CheckpointState& state, Parts parts) {
  Pending p;
  p.key = Key{options_.job_id, rank_, state.step, options_.generation, world_size_};
  p.state = state;
  p.parts = std::move(parts);
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ = std::move(p);
  }
  cv_.notify_all();
}

void SnapshotSender::Loop() {
  for (;;) {
    Pending p;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || pending_.has_value(); });
      if (stop_) return;
      p = std::move(*pending_);
      pending_.reset();
      busy_ = true;
    }
    int ok = 0, failed = 0;
    absl::StatusOr<std::string> image = EncodeSnapshot(p.key, p.state, p.parts);
    if (!image.ok()) {
      engine::LogWarning("snapshot of step " + std::to_string(p.key.step) + " not encoded: " + image.status().ToString());
      failed = static_cast<int>(clients_.size());
    } else {
      // To every target at once: the transfer takes the slowest target's time,
      // not the sum (a hung peer still holds the sender up to timeout_ms,
      // during which later snapshots are dropped).
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<std::future<absl::Status>> puts;
      for (auto& c : clients_) {
        puts.push_back(std::async(std::launch::async, [&c, &p, &image] { return c->Put(p.key, *image); }));
      }
      for (auto& f : puts) {
        absl::Status st = f.get();
        if (st.ok()) {
          ++ok;
        } else {
          ++failed;
          engine::LogWarning("snapshot of step " + std::to_string(p.key.step) + " not kept: " + st.ToString());
        }
      }
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (ok > 0 && stats().sent == 0) {
        engine::LogInfo("first in-memory snapshot (step " + std::to_string(p.key.step) + ", " +
                        std::to_string(image->size()) + " bytes) sent to " + std::to_string(ok) + " agents in " +
                        std::to_string(static_cast<int>(ms)) + " ms");
      }
      std::lock_guard<std::mutex> lock(mu_);
      stats_.last_put_ms = ms;
      stats_.bytes = static_cast<int64_t>(image->size());
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.sent += ok;
      stats_.failed += failed;
      if (failed == 0 && ok > 0) stats_.last_step = p.key.step;
      busy_ = false;
    }
    cv_.notify_all();
  }
}

void SnapshotSender::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return stop_ || (!busy_ && !pending_.has_value()); });
}

SenderStats SnapshotSender::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

absl::StatusOr<at::Tensor> SnapshotEveryK::Batch(int64_t step, int micro_step) {
  if (micro_step == 0 && every_ > 0 && step > start_step_ && step % every_ == 0) sender_->Offer(step);
  return inner_->Batch(step, micro_step);
}

absl::StatusOr<ckpt::LoadedCheckpoint> FetchSnapshot(const WorkerSnapshotOptions& options, int rank,
                                                     int world_size, const std::string& model_hash) {
  if (options.resume_address.empty() || options.resume_step < 0) {
    return absl::InvalidArgumentError("no snapshot to resume from was named");
  }
  ClientOptions co;
  co.token = options.token;
  co.timeout_ms = options.timeout_ms;
  SnapshotClient client(options.resume_address, co);
  // The transport checks size, checksum and key.
  KP_ASSIGN_OR_RETURN(Fetched f, client.Get(options.job_id, rank, options.resume_step));
  const std::string name = absl::StrCat("snapshot@", options.resume_address);
  KP_ASSIGN_OR_RETURN(DecodedSnapshot d, DecodeSnapshot(f.bytes, name));
  auto bad = [&](const std::string& why) { return absl::DataLossError(name + ": " + why); };
  if (d.key.job_id != options.job_id || d.key.rank != rank || d.key.step != options.resume_step) {
    return bad("holds " + d.key.ToString() + ", not job " + options.job_id + " rank " + std::to_string(rank) +
               " step " + std::to_string(options.resume_step));
  }
  if (d.key.world_size != world_size) {
    return bad(absl::StrCat("taken with ", d.key.world_size, " ranks, this run has ", world_size));
  }
  if (!model_hash.empty() && !d.checkpoint.state.config_hash.empty() && d.checkpoint.state.config_hash != model_hash) {
    return bad("saved for model " + d.checkpoint.state.config_hash + ", config has " + model_hash);
  }
  return std::move(d.checkpoint);
}

absl::StatusOr<bool> AllRanksAgree(comm::Communicator* comm, bool mine, c10::Device device) {
  return comm::AllRanks(comm, mine, device);
}

}  // namespace kp::snapshot
