// Load client for carebroker, following the method of the team's peer benchmark
// so its RESULT line sits beside RabbitMQ's and NATS's:
//   * one process: a publisher thread (SendStream) with a reader thread for
//     receipts, and a consumer thread (Receive stream), each its own channel;
//   * N messages of S bytes, bytes 0-15 carrying (seq, send time ns);
//   * at most W sent but not yet confirmed (a receipt = durable commit);
//     optionally paced at R msgs/s, latency then measured from the
//     scheduled time (no coordinated omission);
//   * the consumer acks every message individually, at most P unacked;
//   * e2e throughput = N / (first send -> last consumer receive).
// Loopback only; the whole load is bounded by --timeout-s.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "broker/client/client.h"
#include "carebroker/v1/exchange.grpc.pb.h"

namespace {

using carebroker::v1::Delivery;
using carebroker::v1::DeliveryBatch;
using carebroker::v1::ReceiveRequest;
using carebroker::v1::SendRequest;
using carebroker::v1::SendStreamResponse;

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

void SleepUntilNs(uint64_t t) {
  timespec ts{time_t(t / 1000000000ull), long(t % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

double PctMs(std::vector<uint64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = size_t(p / 100.0 * double(v.size() - 1) + 0.5);
  return double(v[std::min(i, v.size() - 1)]) / 1e6;
}

struct Options {
  std::string label = "carebroker", host = "127.0.0.1", pki, sender = "RR8", recipient = "503";
  int port = 0;
  int receive_port = 0;  // 0: --port (another replica's port: receive there)
  uint64_t count = 100000, window = 1000, prefetch = 1000;
  size_t size = 2048;
  double rate = 0;
  int timeout_s = 100;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"carebroker load client (peers method)"};
  app.add_option("--port", o.port)->required();
  app.add_option("--host", o.host)->check([](const std::string& h) {
    return h == "127.0.0.1" || h == "localhost" || h == "::1" ? "" : "only loopback hosts are allowed";
  });
  app.add_option("--pki", o.pki, "dev PKI folder")->required();
  app.add_option("--count", o.count);
  app.add_option("--size", o.size)->check(CLI::Range(16, 1 << 20));
  app.add_option("--window", o.window)->check(CLI::PositiveNumber);
  app.add_option("--rate", o.rate);
  app.add_option("--prefetch", o.prefetch)->check(CLI::Range(1, 100000));
  app.add_option("--timeout-s", o.timeout_s);
  app.add_option("--label", o.label);
  app.add_option("--receive-port", o.receive_port, "receive from this port (another replica); default --port");
  app.add_option("--sender", o.sender, "the dev PKI organisation that sends (default RR8)");
  app.add_option("--recipient", o.recipient, "the one that receives (default 503)");
  CLI11_PARSE(app, argc, argv);

  auto channel = [&](const std::string& who, int port) {
    auto ch =
        carebroker::MakeChannel(carebroker::ClientTls{o.host + ":" + std::to_string(port), o.pki + "/" + who + ".crt",
                                                      o.pki + "/" + who + ".key", o.pki + "/ca.crt"});
    if (!ch.ok()) {
      fprintf(stderr, "%s\n", std::string(ch.status().message()).c_str());
      exit(2);
    }
    return *ch;
  };
  auto pub_stub = carebroker::v1::Exchange::NewStub(channel(o.sender, o.port));
  auto con_stub = carebroker::v1::Exchange::NewStub(channel(o.recipient, o.receive_port != 0 ? o.receive_port : o.port));

  const uint64_t n = o.count;
  std::vector<uint64_t> send_ts(n + 1), pub_ts(n + 1), confirm_lat(n + 1), e2e_lat(n + 1);
  std::vector<uint8_t> seen(n + 1);
  std::atomic<uint64_t> confirmed{0}, received{0}, dups{0}, nacks{0};
  std::atomic<bool> failed{false};
  std::string error;
  std::mutex err_mu;
  auto fail = [&](const std::string& e) {
    std::lock_guard<std::mutex> l(err_mu);
    if (!failed.exchange(true)) error = e;
  };
  uint64_t t_start = 0, t_pub_done = 0, t_end = 0;
  const uint64_t deadline = NowNs() + uint64_t(o.timeout_s) * 1000000000ull;

  // Consumer first, so it is listening when the first message commits.
  grpc::ClientContext con_ctx;
  auto con = con_stub->Receive(&con_ctx);
  ReceiveRequest open;
  open.mutable_open()->set_max_in_flight(uint32_t(o.prefetch));
  if (!con->Write(open)) {
    fprintf(stderr, "cannot open Receive: %s\n", carebroker::DescribeStatus(con->Finish()).c_str());
    return 1;
  }
  std::thread consumer([&] {
    DeliveryBatch batch;
    ReceiveRequest ack;
    while (received.load() < n && con->Read(&batch)) {
      const uint64_t now = NowNs();
      int left = batch.deliveries_size();
      for (const Delivery& d : batch.deliveries()) {
        --left;
        uint64_t seq = 0, ts = 0;
        if (d.payload().size() >= 16) {
          memcpy(&seq, d.payload().data(), 8);
          memcpy(&ts, d.payload().data() + 8, 8);
        }
        if (seq == 0 || seq > n) {
          fail("bad seq in payload");
        } else if (seen[seq]) {
          dups++;
        } else {
          seen[seq] = 1;
          e2e_lat[seq] = now - ts;
          if (received.fetch_add(1) + 1 == n) t_end = now;
        }
        // One ack per message; the socket is flushed after the last ack
        // for this response (the others are corked behind it).
        ack.set_ack(d.message_id());
        if (!con->Write(ack, left > 0 ? grpc::WriteOptions().set_buffer_hint() : grpc::WriteOptions())) break;
      }
    }
  });

  grpc::ClientContext pub_ctx;
  auto pub = pub_stub->SendStream(&pub_ctx);
  std::mutex wmu;
  std::condition_variable wcv;
  uint64_t inflight = 0;
  std::thread receipts([&] {
    SendStreamResponse resp;
    uint64_t seq = 0;
    while (seq < n && pub->Read(&resp)) {
      const uint64_t now = NowNs();
      for (const auto& r : resp.results()) {
        ++seq;
        if (r.has_error()) {
          nacks++;
          fail("send refused: " + r.error().reason());
        } else {
          confirm_lat[seq] = now - pub_ts[seq];
          if (confirmed.fetch_add(1) + 1 == n) t_pub_done = now;
        }
      }
      {
        std::lock_guard<std::mutex> l(wmu);
        inflight -= uint64_t(resp.results_size());
      }
      wcv.notify_one();
    }
  });

  SendRequest req;
  req.set_recipient(o.recipient);
  req.set_workflow("BENCHMARK");
  req.set_purpose("direct-care");
  req.set_content_type("application/octet-stream");
  std::string payload(o.size, '\0');
  t_start = NowNs();
  for (uint64_t seq = 1; seq <= n && !failed; ++seq) {
    if (o.rate > 0) SleepUntilNs(t_start + uint64_t(double(seq - 1) * 1e9 / o.rate));
    bool more_now;  // the next send will follow at once: cork this one
    {
      std::unique_lock<std::mutex> l(wmu);
      while (inflight >= o.window) {
        if (wcv.wait_until(l, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)) ==
                std::cv_status::timeout &&
            NowNs() > deadline) {
          break;
        }
      }
      if (NowNs() > deadline) {
        fail("timeout");
        break;
      }
      ++inflight;
      more_now = o.rate <= 0 && seq < n && inflight < o.window;
    }
    const uint64_t now = NowNs();
    const uint64_t ts = o.rate > 0 ? t_start + uint64_t(double(seq - 1) * 1e9 / o.rate) : now;
    send_ts[seq] = ts;
    pub_ts[seq] = now;
    memcpy(payload.data(), &seq, 8);
    memcpy(payload.data() + 8, &ts, 8);
    for (size_t i = 16; i < o.size; ++i) payload[i] = char('a' + (seq + i) % 26);
    req.set_payload(payload);
    req.set_idempotency_key("bench-" + std::to_string(t_start) + "-" + std::to_string(seq));
    if (!pub->Write(req, more_now ? grpc::WriteOptions().set_buffer_hint() : grpc::WriteOptions())) {
      fail("send stream broken: " + carebroker::DescribeStatus(pub->Finish()));
      break;
    }
  }
  pub->WritesDone();

  // Bounded wait for the consumer, then tear everything down.
  while (received.load() < n && !failed && NowNs() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (received.load() < n && !failed) fail("timeout");
  con_ctx.TryCancel();
  pub_ctx.TryCancel();
  consumer.join();
  receipts.join();

  std::vector<uint64_t> e2e, conf;
  for (uint64_t s = 1; s <= n; ++s) {
    if (seen[s]) e2e.push_back(e2e_lat[s]);
    if (confirm_lat[s]) conf.push_back(confirm_lat[s]);
  }
  const bool ok = !failed && received.load() == n;
  if (!ok) fprintf(stderr, "FAILED: %s (received %" PRIu64 "/%" PRIu64 ")\n", error.c_str(), received.load(), n);
  if (t_end == 0) t_end = NowNs();
  if (t_pub_done == 0) t_pub_done = NowNs();
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  const double cpu =
      double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  const double el = double(t_end - t_start) / 1e9, pel = double(t_pub_done - t_start) / 1e9;
  printf("%s: %" PRIu64 " x %zu B, window %" PRIu64 ", rate %s, prefetch %" PRIu64 "\n", o.label.c_str(), n, o.size,
         o.window, o.rate > 0 ? std::to_string(o.rate).c_str() : "max", o.prefetch);
  printf("  e2e throughput  %.0f msgs/s, elapsed %.2f s\n", double(received) / el, el);
  printf("  publish+confirm %.0f msgs/s\n", double(confirmed) / pel);
  printf("  e2e latency     p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", PctMs(e2e, 50), PctMs(e2e, 99), PctMs(e2e, 100));
  printf("  confirm latency p50 %.2f ms  p99 %.2f ms\n", PctMs(conf, 50), PctMs(conf, 99));
  printf("RESULT peer=%s status=%s n=%" PRIu64 " size=%zu window=%" PRIu64 " rate=%.0f prefetch=%" PRIu64
         " elapsed_s=%.3f e2e_msgs_per_s=%.0f pub_msgs_per_s=%.0f e2e_p50_ms=%.3f e2e_p99_ms=%.3f"
         " e2e_max_ms=%.3f confirm_p50_ms=%.3f confirm_p99_ms=%.3f received=%" PRIu64 " dups=%" PRIu64 " nacks=%" PRIu64
         " client_cpu_s=%.2f\n",
         o.label.c_str(), ok ? "ok" : "fail", n, o.size, o.window, o.rate, o.prefetch, el, double(received) / el,
         double(confirmed) / pel, PctMs(e2e, 50), PctMs(e2e, 99), PctMs(e2e, 100), PctMs(conf, 50), PctMs(conf, 99),
         received.load(), dups.load(), nacks.load(), cpu);
  fflush(stdout);
  // Streams were cancelled above; skip gRPC teardown of half-finished calls.
  _exit(ok ? 0 : 1);
}
